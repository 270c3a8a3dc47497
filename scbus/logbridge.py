"""
Route stdlib C{logging} (apps, pika) into C{twisted.logger}, so one log holds everything.
"""

from __future__ import annotations

import logging
import traceback

from twisted.logger import Logger, LogLevel

from .logcapture import FROM_STDLIB

__all__ = ["StdlibToTwisted", "route_stdlib_logging"]

_LEVELS = [
    (logging.CRITICAL, LogLevel.critical),
    (logging.ERROR, LogLevel.error),
    (logging.WARNING, LogLevel.warn),
    (logging.INFO, LogLevel.info),
    (0, LogLevel.debug),
]


def _twisted_level(levelno: int) -> LogLevel:
    for threshold, level in _LEVELS:
        if levelno >= threshold:
            return level
    return LogLevel.debug


class StdlibToTwisted(logging.Handler):
    """A stdlib handler that re-emits each record as a Twisted event in its namespace."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) if self.formatter else record.getMessage()
        except Exception as e:
            text = f"{record.msg!r} (unformattable: {e})"
        kwargs = {FROM_STDLIB: True}
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        Logger(namespace=record.name).emit(
            _twisted_level(record.levelno), "{scbus_text}", scbus_text=text, **kwargs
        )


_bridge: StdlibToTwisted | None = None


def route_stdlib_logging(level: str = "info") -> None:
    """Send stdlib records at C{level} and above to twisted.logger; idempotent."""
    global _bridge
    root = logging.getLogger()
    root.setLevel(level.upper())
    if _bridge is None:
        _bridge = StdlibToTwisted()
        root.addHandler(_bridge)
