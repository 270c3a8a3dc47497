"""
An app's idle handlers on their loops, in every process or in one.

With ``idle = "one"`` and a transport shared by many processes (one that offers
``idle_lease``), the loops run only while this process holds the app's lease; without
such a transport there is one process, and they always run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .config import IDLE_MODES  # the config's check and this one agree
from .interfaces import IIdleLease, IIdleLeases

__all__ = ["IdleLoops", "IDLE_MODES"]

log = Logger()


class IdleLoops:
    def __init__(
        self,
        app_name: str,
        intervals: Iterable[timedelta],
        run: Callable[[timedelta], Any],
        clock: IReactorTime,
        mode: str = "one",
    ) -> None:
        if mode not in IDLE_MODES:
            raise ValueError(f"idle must be one of {', '.join(IDLE_MODES)}, not {mode!r}")
        self.app_name = app_name
        self.intervals = list(intervals)
        self.mode = mode
        self._run = run
        self._clock = clock
        self._loops: dict[timedelta, LoopingCall] = {}
        self._lease: IIdleLease | None = None
        self._wanted = False

    @property
    def running(self) -> bool:
        """This process runs the app's idle handlers now."""
        return bool(self._loops)

    def start(self, transport: Any) -> None:
        """Run the loops here, or claim the app's lease from C{transport} and run them while held."""
        if not self.intervals:
            return
        self._wanted = True
        leases = IIdleLeases(transport, None)
        if self.mode == "every" or leases is None:
            self._start_loops()
            return
        self._lease = leases.idle_lease(self.app_name, self._lease_changed)
        if self._lease.held:
            self._start_loops()

    def stop(self) -> None:
        self._wanted = False
        self._stop_loops()

    def pause(self) -> None:
        """Stop, and let another process run them meanwhile (give the lease up)."""
        self.stop()
        if self._lease is not None:
            self._lease.release()

    def may_run(self) -> bool:
        """Checked before each run: a lease that may have been lost does not run a tick."""
        return self._lease is None or self._lease.holds()

    def _lease_changed(self, held: bool) -> None:
        if held and self._wanted:
            self._start_loops()
        elif not held:
            self._stop_loops()

    def _start_loops(self) -> None:
        if self._loops:
            return
        for interval in self.intervals:
            loop = LoopingCall(self._run, interval)
            loop.clock = self._clock
            self._loops[interval] = loop
            loop.start(interval.total_seconds(), now=False).addErrback(
                lambda f: log.failure("{app}: idle loop died", f, app=self.app_name)
            )

    def _stop_loops(self) -> None:
        loops, self._loops = self._loops, {}
        for loop in loops.values():
            if loop.running:
                loop.stop()
