"""
scbus: a message bus for Twisted whose applications are plain Python callables.

An app author needs only L{Message} (and, for tests, L{scbus.testing}).

The public modules, whose names are kept (tests/unit/test_public_names.py pins them):
C{scbus} itself, C{scbus.interfaces} (what a transport provides and the bus may ask),
C{scbus.testing} and C{scbus.testing.amqp} (fakes for tests), C{scbus.client} (publishing
from programs that are not a bus). Every other module is the bus's own and may change.
"""

from typing import TYPE_CHECKING

from .errors import (
    ConfigError,
    DecodeError,
    EncodeError,
    FieldTypeError,
    MalformedMessage,
    MessageTooLarge,
    MissingField,
    ScbusError,
    TransportError,
    UnknownMessageType,
)
from .message import (
    AppErrorOccurredMessage,
    HeartbeatMessage,
    HeartbeatResponseMessage,
    Message,
)
from .lazy import lazy_attributes

if TYPE_CHECKING:
    from .appbus import ApplicationMessageBus
    from .mainbus import MainMessageBus

__version__ = "0.1.0"

#: Imported when first used: the ``scbus`` command starts without Twisted.
__getattr__ = lazy_attributes(__name__, {"ApplicationMessageBus": ".appbus", "MainMessageBus": ".mainbus"})

__all__ = [
    "Message",
    "AppErrorOccurredMessage",
    "HeartbeatMessage",
    "HeartbeatResponseMessage",
    "ApplicationMessageBus",
    "MainMessageBus",
    "ScbusError",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "MalformedMessage",
    "MessageTooLarge",
    "UnknownMessageType",
    "MissingField",
    "FieldTypeError",
    "TransportError",
]
