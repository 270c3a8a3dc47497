"""
scbus: a message bus for Twisted whose applications are plain Python callables.

An app author needs only L{Message} (and, for tests, L{scbus.testing}).
"""

from .appbus import ApplicationMessageBus
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
from .mainbus import MainMessageBus
from .message import (
    AppErrorOccurredMessage,
    HeartbeatMessage,
    HeartbeatResponseMessage,
    Message,
)

__version__ = "0.1.0"

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
