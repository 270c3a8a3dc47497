"""
What is counted about one app, in one object.

The app bus counts what happens to calls (handled, errors, retries, heartbeats, idle
runs); the main bus counts what happens to deliveries (acknowledged, redelivered, not
sent, set aside). Both write here, each only its own fields and only through these
methods, and status is read from here alone.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

__all__ = ["AppCounters"]


@dataclasses.dataclass
class AppCounters:
    # Calls, written by the app bus.
    handled: int = 0
    errors: int = 0
    retried: int = 0
    last_handled_at: float | None = None
    last_error: str | None = None
    last_heartbeat_lag: float | None = None
    last_heartbeat_at: float | None = None
    idle_last_run: dict[timedelta, float] = dataclasses.field(default_factory=dict)
    #: Idle handler runs started (not in handled: they handle no message).
    idle_runs: int = 0
    # Deliveries, written by the main bus.
    acked: int = 0
    redelivered: int = 0
    send_failures: int = 0
    rejected: int = 0

    def call_done(self, now: float) -> None:
        """A message's handler ran to its end (with or without an error)."""
        self.handled += 1
        self.last_handled_at = now

    def call_failed(self, description: str | None) -> None:
        """An error to report; C{description} (C{type: message}) becomes the last error."""
        self.errors += 1
        if description is not None:
            self.last_error = description

    def idle_started(self, interval: timedelta, now: float) -> None:
        self.idle_last_run[interval] = now
        self.idle_runs += 1

    def heartbeat(self, now: float, lag: float) -> None:
        self.call_done(now)
        self.last_heartbeat_lag = lag
        self.last_heartbeat_at = now
