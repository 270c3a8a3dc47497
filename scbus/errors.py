"""
The exceptions scbus raises on purpose, in one place so callers can catch by family.
"""

from __future__ import annotations


class ScbusError(Exception):
    """Base of every error scbus raises on purpose."""


class DecodeError(ScbusError, ValueError):
    """
    A body could not be turned into a message.

    ``reason`` is a short stable code (also written to the ``x-scbus-reason`` header of
    dead-lettered messages); ``str(error)`` says what exactly was wrong.
    """

    reason = "undecodable"


class MalformedMessage(DecodeError):
    """The body is not UTF-8 JSON holding a message envelope."""

    reason = "malformed"


class MessageTooLarge(DecodeError):
    """The body is larger than the configured maximum."""

    reason = "too-large"


class UnknownMessageType(DecodeError):
    """The envelope names a type no class is registered for (or not the one expected)."""

    reason = "unknown-type"


class MissingField(DecodeError):
    """A field the message class declares without a default is absent."""

    reason = "missing-field"


class FieldTypeError(DecodeError, TypeError):
    """A field holds a value of the wrong type (also raised when constructing a message)."""

    reason = "wrong-type"


class ContentTypeRefused(DecodeError):
    """A delivery's content type says it is not scbus JSON."""

    reason = "content-type"


class BadProperties(DecodeError):
    """The AMQP client could not decode a delivery's properties (its header table, say)."""

    reason = "bad-properties"


class EncodeError(ScbusError, ValueError):
    """A message cannot be put on the wire (a value JSON cannot carry, for instance)."""


class ConfigError(ScbusError):
    """The configuration file is unusable; ``str(error)`` is one line for the operator."""

    def __init__(self, source: str, key: str | None, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + problem)

    def lines(self) -> list[str]:
        """One line per problem, for the operator."""
        return [str(self)]


class ConfigProblems(ConfigError):
    """Several problems in one file, found in one run; the first stands for them all."""

    def __init__(self, problems: list[ConfigError]) -> None:
        first = problems[0]
        super().__init__(first.source, first.key, first.problem)
        self.problems = problems
        self.args = ("\n".join(str(p) for p in problems),)

    def __str__(self) -> str:
        return self.args[0]

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]


class TransportError(ScbusError):
    """The transport could not do what was asked (not connected, buffer full, ...)."""


class NotRunning(TransportError):
    """The transport or bus has been stopped."""


class ReplayRefused(ScbusError):
    """
    A set-aside message was not replayed because it would only be set aside again (no app
    subscribes to its type yet, or its body is still undecodable); it stays where it is.
    """


class InvalidSubscriptions(ScbusError, TypeError):
    """A builder returned something other than a valid subscriptions dict."""


class HandlerTimeout(ScbusError):
    """A handler ran past its app's time limit."""


class StartupProblem(ScbusError):
    """
    Something the bus needs at start cannot be had (its database file, say): one line
    naming the config key, the thing and what to do. Under twistd it ends start-up with
    exit status 2, as a bad config does.
    """

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")
