"""
Transports carry encoded messages between apps: L{LocalTransport} in memory (the
default, no broker needed) and the AMQP transport over RabbitMQ.
"""

from .local import LocalTransport
from .setaside import SetAsideMessage

__all__ = ["LocalTransport", "SetAsideMessage"]
