"""The Python prompt itself: Twisted's manhole, where leaving ends the session, not the bus."""

from __future__ import annotations

from typing import Any

from twisted.conch import manhole

__all__ = ["ConsoleManhole"]


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
