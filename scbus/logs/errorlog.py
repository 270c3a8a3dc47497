"""
Handler errors in the log, with their tracebacks, without letting a failing stream flood it.

Each app and error type may log a few full entries per window; the rest are counted,
and the count is logged when the window closes. The error reports themselves are not
limited: every failure still becomes an L{AppErrorOccurredMessage}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["ErrorLogLimiter", "format_traceback"]

log = Logger()

#: Full entries logged per app and error type in one window.
ENTRIES_PER_WINDOW = 5
#: Seconds of one window.
WINDOW = 60.0


def format_traceback(frames: list[dict[str, Any]], error_type: str, error: str) -> str:
    """The frames an error report carries, in Python's traceback layout."""
    lines = ["handler traceback (most recent call last; the bus's own frames left out):"]
    for frame in frames:
        lines.append(f'  File "{frame["file"]}", line {frame["line"]}, in {frame["function"]}')
        if frame.get("source"):
            lines.append(f"    {frame['source']}")
    lines.append(f"{error_type}: {error}")
    return "\n".join(lines)


class _Window:
    __slots__ = ("opened", "logged", "held_back", "summary")

    def __init__(self, opened: float) -> None:
        self.opened = opened
        self.logged = 0
        self.held_back = 0
        self.summary: Any = None


class ErrorLogLimiter:
    """Decides which handler errors get a full log entry; reports what it held back."""

    def __init__(
        self, clock: IReactorTime, *, per_window: int = ENTRIES_PER_WINDOW, window: float = WINDOW
    ) -> None:
        self._clock = clock
        self.per_window = per_window
        self.window = window
        self._windows: dict[tuple[str, str], _Window] = {}

    def admit(self, app: str, error_type: str) -> bool:
        """True when this error may be logged in full; otherwise it is counted."""
        key = (app, error_type)
        now = self._clock.seconds()
        current = self._windows.get(key)
        if current is None or now - current.opened >= self.window:
            if current is not None and current.summary is not None and current.summary.active():
                current.summary.cancel()
                self._report(key, current)
            current = self._windows[key] = _Window(now)
        if current.logged < self.per_window:
            current.logged += 1
            return True
        current.held_back += 1
        if current.summary is None:
            left = current.opened + self.window - now
            current.summary = self._clock.callLater(max(0.0, left), self._close, key, current)
        return False

    def _close(self, key: tuple[str, str], window: _Window) -> None:
        if self._windows.get(key) is window:
            del self._windows[key]
        self._report(key, window)

    def _report(self, key: tuple[str, str], window: _Window) -> None:
        if window.held_back:
            log.warn(
                "{app}: {held_back} more {error_type} error(s) not logged in full in the last "
                "{window:g}s (at most {per_window} per app and error type; each was still "
                "reported as an AppErrorOccurredMessage)",
                app=key[0],
                error_type=key[1],
                held_back=window.held_back,
                window=self.window,
                per_window=self.per_window,
            )
        window.held_back = 0
