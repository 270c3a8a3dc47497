"""
The Python prompt itself: Twisted's manhole, where leaving ends the session, not the
bus; and a plain prompt for clients that are no terminal (C{nc}), which writes lines and
no escape codes.
"""

from __future__ import annotations

from typing import Any

from twisted.conch import manhole, telnet

__all__ = ["ConsoleManhole", "PlainConsole"]


class _Interpreter(manhole.ManholeInterpreter):
    """C{exit()} and C{quit()} end this session (and log nothing), not the bus."""

    def runcode(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().runcode(*args, **kwargs)
        except SystemExit:
            self.handler.terminal.loseConnection()


class ConsoleManhole(manhole.ColoredManhole):
    """The manhole with L{_Interpreter}."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.interpreter = _Interpreter(self, self.namespace)


class PlainConsole(telnet.TelnetProtocol):
    """
    The console's prompt as lines: no line editing, colours or cursor movement, so a
    client that is no terminal (C{nc}, a script) reads plain text. Every telnet option is
    refused (L{telnet.TelnetProtocol}'s defaults) and none is asked for.
    """

    PROMPTS = (b">>> ", b"... ")
    transport: Any  # the telnet transport while connected, None after
    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self._buffer = b""
        self._more = False
        self._line_open = False  # the last thing written does not end its line

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self.terminal = self  # what the interpreter closes on exit()
        self._closing = False
        self.interpreter = _Interpreter(self, self.namespace)
        self._write(b"scbus console (a plain client: no line editing). help() lists what is here.\n")
        self._prompt()

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._line_open = False  # the client ended the line it typed
            self._more = bool(self.interpreter.push(line.rstrip(b"\r\0")))
            if self._closing or self.transport is None:
                return
            self._prompt()

    def loseConnection(self) -> None:
        """exit(): end the session, with no prompt after it."""
        self._closing = True
        if self.transport is not None:
            self.transport.loseConnection()

    def addOutput(self, data: bytes | str, isAsync: bool | None = None) -> None:
        """What the interpreter prints; output that comes later starts a line of its own."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        if isAsync and self._line_open:
            self._write(b"\n")
        self._write(data)
        if isAsync:
            self._prompt()

    def _prompt(self) -> None:
        if self._line_open:
            self._write(b"\n")
        self._write(self.PROMPTS[self._more])

    def _write(self, data: bytes) -> None:
        if not data:
            return
        self.transport.write(data.replace(b"\r\n", b"\n"))  # the telnet transport writes LF as CR LF
        self._line_open = not data.endswith(b"\n")

    def connectionLost(self, reason: Any = None) -> None:
        self.transport = None
