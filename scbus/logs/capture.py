"""
Capture the log records one handler call emits, through stdlib C{logging} or
C{twisted.logger}, for that call only.

One stdlib handler and one Twisted observer are installed once; each looks up the list to
append to in a context variable. Every call runs in its own copy of the context, so
handlers in flight at the same time (coroutines, threads) never see each other's records.
"""

from __future__ import annotations

import contextvars
import logging
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher
from zope.interface import provider

__all__ = ["CapturedLog", "run_capturing", "install", "MAX_RECORDS"]

T = TypeVar("T")

#: Records kept per call; past this the last record says how many were dropped.
MAX_RECORDS = 200

#: Set on Twisted events that were bridged from stdlib logging, so they count once.
FROM_STDLIB = "scbus_from_stdlib"


class CapturedLog:
    """The records of one call, as plain dicts (time, level, logger, message)."""

    __slots__ = ("records", "dropped")

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.dropped = 0

    def add(self, record: dict[str, Any]) -> None:
        if len(self.records) < MAX_RECORDS:
            self.records.append(record)
        else:
            self.dropped += 1

    def as_data(self) -> list[dict[str, Any]]:
        if not self.dropped:
            return list(self.records)
        note = {
            "time": self.records[-1]["time"],
            "level": "warning",
            "logger": "scbus",
            "message": f"{self.dropped} more record(s) dropped (limit {MAX_RECORDS})",
        }
        return [*self.records, note]


_current: contextvars.ContextVar[CapturedLog | None] = contextvars.ContextVar(
    "scbus_captured_log", default=None
)


class _StdlibCapture(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        captured = _current.get()
        if captured is None:
            return
        try:
            text = record.getMessage()
        except Exception as e:  # a bad format string must not break the handler
            text = f"{record.msg!r} (unformattable: {e})"
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        captured.add(
            {
                "time": record.created,
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": text,
            }
        )


@provider(ILogObserver)
def _twisted_observer(event: dict[str, Any]) -> None:
    captured = _current.get()
    if captured is None or event.get(FROM_STDLIB):
        return
    level = event.get("log_level")
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text += "\n" + failure.getTraceback().rstrip()
    captured.add(
        {
            "time": event.get("log_time", 0.0),
            "level": level.name if isinstance(level, type(LogLevel.info)) else "info",
            "logger": event.get("log_namespace", "?"),
            "message": text,
        }
    )


_installed = False


def install() -> None:
    """Hook the capture into both logging systems; idempotent."""
    global _installed
    if _installed:
        return
    logging.getLogger().addHandler(_StdlibCapture())
    globalLogPublisher.addObserver(_twisted_observer)
    _installed = True


def run_capturing(captured: CapturedLog, fn: Callable[..., T], *args: Any) -> T:
    """
    Call C{fn(*args)} in a fresh copy of the current context whose log records go to
    C{captured}. Coroutines started inside (L{Deferred.fromCoroutine}) keep capturing.
    """
    if not _installed:
        install()
    # Two calls into C rather than a Python frame that sets the variable: this runs
    # once per handler call.
    context = contextvars.copy_context()
    context.run(_current.set, captured)
    return context.run(fn, *args)
