"""
The RabbitMQ transport: topology, settings, the client seam and its pika backend.
"""

from typing import TYPE_CHECKING

from ...lazy import lazy_attributes
from .settings import AMQPSettings, parse_amqp_settings

if TYPE_CHECKING:
    from .transport import AMQPDelivery, AMQPTransport


#: Imported when first used: the ``scbus`` command starts without Twisted.
__getattr__ = lazy_attributes(__name__, {"AMQPTransport": ".transport", "AMQPDelivery": ".transport"})

__all__ = ["AMQPTransport", "AMQPDelivery", "AMQPSettings", "parse_amqp_settings"]
