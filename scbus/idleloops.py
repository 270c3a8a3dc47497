"""
An app's idle handlers on their loops, in every process or in one.

With ``idle = "one"`` and a transport shared by many processes (one that provides
``IIdleLeases``), the loops run only while this process holds the app's lease; without
such a transport there is one process, and they always run.

A run is never overlapped by the next one of its interval. A loop stopped while its run is
pending (a pause, a lost lease, a stop) keeps that run: a loop started again meanwhile
(a resume, the lease won back) waits for it to finish and then runs on its interval. An
error in a run is logged and the loop goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

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
        #: The loops running now, one per interval.
        self._loops: dict[timedelta, LoopingCall] = {}
        #: Loops stopped with a run still pending: their interval starts no new loop before it ends.
        self._finishing: dict[timedelta, LoopingCall] = {}
        self._quiet: list[Deferred[None]] = []
        self._lease: IIdleLease | None = None
        self._wanted = False
        self._active = False

    @property
    def running(self) -> bool:
        """This process runs the app's idle handlers now (a loop may wait for a run to end)."""
        return self._active

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

    def stop(self) -> Deferred[None]:
        """Stop the loops; fires once no run is pending (a run under way is left to finish)."""
        self._wanted = False
        self._stop_loops()
        if not self._finishing:
            return succeed(None)
        quiet: Deferred[None] = Deferred()
        self._quiet.append(quiet)
        return quiet

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
        self._active = True
        for interval in self.intervals:
            if interval not in self._loops and interval not in self._finishing:
                self._start_loop(interval)

    def _start_loop(self, interval: timedelta) -> None:
        loop = LoopingCall(self._tick, interval)
        loop.clock = self._clock
        self._loops[interval] = loop
        # Fires when the loop is stopped and its pending run (if any) has ended.
        loop.start(interval.total_seconds(), now=False).addBoth(self._loop_ended, interval, loop)

    def _stop_loops(self) -> None:
        self._active = False
        loops, self._loops = self._loops, {}
        for interval, loop in loops.items():
            if loop.running:
                self._finishing[interval] = loop
                loop.stop()  # ends it now, or once its run has ended (_loop_ended)

    def _tick(self, interval: timedelta) -> Deferred[None] | None:
        """One run; whatever it raises or fails with is logged, so the loop goes on."""
        try:
            result = self._run(interval)
        except Exception:
            log.failure("{app}: idle {interval} failed", app=self.app_name, interval=interval)
            return None
        if isinstance(result, Deferred):
            return result.addCallbacks(lambda _: None, self._run_failed, errbackArgs=(interval,))
        return None

    def _run_failed(self, failure: Failure, interval: timedelta) -> None:
        log.failure("{app}: idle {interval} failed", failure, app=self.app_name, interval=interval)

    def _loop_ended(self, outcome: object, interval: timedelta, loop: LoopingCall) -> None:
        if isinstance(outcome, Failure):  # (_tick catches everything: not expected)
            log.failure("{app}: idle loop {interval} died", outcome, app=self.app_name, interval=interval)
        if self._loops.get(interval) is loop:
            del self._loops[interval]  # died while running: start it again below
        if self._finishing.get(interval) is loop:
            del self._finishing[interval]
        if self._active and interval not in self._loops and interval not in self._finishing:
            self._start_loop(interval)
        if not self._finishing:
            quiet, self._quiet = self._quiet, []
            for d in quiet:
                d.callback(None)
