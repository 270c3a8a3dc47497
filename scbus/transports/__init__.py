"""
Transports carry encoded messages between apps: L{LocalTransport} in memory (the
default, no broker needed) and the AMQP transport over RabbitMQ.
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

if TYPE_CHECKING:
    from .local import LocalTransport
    from .setaside import SetAsideMessage


#: Imported when first used: the ``scbus`` command starts without Twisted.
__getattr__ = lazy_attributes(__name__, {"LocalTransport": ".local", "SetAsideMessage": ".setaside"})

__all__ = ["LocalTransport", "SetAsideMessage"]
