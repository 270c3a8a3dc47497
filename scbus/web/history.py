"""
What the status page plots and lists: a bounded ring of per-app samples (throughput,
backlog, lag) taken every few seconds, and the last errors with their tracebacks and
captured log lines, both kept in this process.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..message import AppErrorOccurredMessage, Message

__all__ = ["History"]

log = Logger()

#: Seconds between samples, and samples kept: ten minutes.
EVERY = 2.0
KEEP = 300
#: The throughput is measured over this many sample intervals, so a 1 Hz producer
#: sampled every 2 s reads as 1/s rather than alternating between 0.5 and 1.5.
RATE_SAMPLES = 5
#: Errors kept for the page.
ERRORS_KEPT = 20


class History:
    """Samples the bus's status on a timer; collects error reports through the bus's observers."""

    def __init__(self, bus: Any, *, every: float = EVERY, keep: int = KEEP) -> None:
        self.bus = bus
        self.every = every
        self.samples: dict[str, deque[tuple[float, float | None, float | None, int | None, float | None]]] = {}
        self.keep = keep
        self.errors: deque[dict[str, Any]] = deque(maxlen=ERRORS_KEPT)
        #: Per app, the recent (time, handled, errors) readings rates are measured over.
        self._recent: dict[str, deque[tuple[float, int, int]]] = {}
        self._queued: dict[str, list[float]] = {}  # per app: [sum, count] since the last sample
        self._loop = LoopingCall(self.sample)
        self._loop.clock = bus.clock
        bus.observers.append(self.observe)

    def start(self) -> None:
        self._loop.start(self.every, now=True).addErrback(
            lambda f: log.failure("status page sampling stopped", f)
        )

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def observe(self, app: str, handling: float | None, queued: float | None, results: list[Message]) -> None:
        if queued is not None:
            total = self._queued.setdefault(app, [0.0, 0])
            total[0] += queued
            total[1] += 1
        for message in results:
            if isinstance(message, AppErrorOccurredMessage):
                self.errors.appendleft({
                    "app": message.app_name,
                    "at": message.created_at,
                    "id": message.id,
                    "error_type": message.error_type,
                    "error": message.error,
                    "handler": message.handler,
                    "message": message.message,
                    "traceback": message.traceback,
                    "log": message.log,
                })

    def sample(self) -> Any:
        d = self.bus.status()
        d.addCallback(self._record)
        d.addErrback(lambda f: log.failure("status page: sampling failed", f))
        return d

    def _record(self, statuses: list[Any]) -> None:
        now = self.bus.clock.seconds()
        for s in statuses:
            recent = self._recent.setdefault(s.name, deque(maxlen=RATE_SAMPLES + 1))
            recent.append((now, s.handled, s.errors))
            first_at, first_handled, first_errors = recent[0]
            rate = error_rate = None
            if now > first_at:
                rate = (s.handled - first_handled) / (now - first_at)
                error_rate = (s.errors - first_errors) / (now - first_at)
            total, count = self._queued.pop(s.name, (0.0, 0))
            lag = total / count if count else None
            backlog = None if s.queued is None else s.queued + s.in_flight
            ring = self.samples.get(s.name)
            if ring is None:
                ring = self.samples[s.name] = deque(maxlen=self.keep)
            ring.append((now, rate, lag, backlog, error_rate))

    def series(self) -> dict[str, list[list[Any]]]:
        """Per app: [time, messages per second, mean seconds queued, backlog, errors per second] rows."""
        return {
            app: [[round(t, 3), _round(rate), _round(lag), backlog, _round(errors)] for t, rate, lag, backlog, errors in ring]
            for app, ring in self.samples.items()
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
