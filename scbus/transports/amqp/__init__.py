"""
The RabbitMQ transport: topology, settings, the client seam and its pika backend.
"""

from .settings import AMQPSettings, parse_amqp_settings
from .transport import AMQPDelivery, AMQPTransport

__all__ = ["AMQPTransport", "AMQPDelivery", "AMQPSettings", "parse_amqp_settings"]
