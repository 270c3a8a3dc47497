"""
An asyncio event loop on a fake clock, so coroutine handlers that await asyncio code
(C{asyncio.sleep}, queues, events, timeouts) run under the harness as deterministically
as the rest: its time is the clock's, and it runs only when stepped, with the clock
(L{ClockEventLoop.flush}, L{ClockEventLoop.advance}), never waiting for real time.

It has no selector: nothing real is read or written (a socket, a subprocess, a real
aiohttp request fails with C{NotImplementedError}: fake those, or test them end to end
under C{twistd --reactor=asyncio}). C{run_in_executor} (and so C{asyncio.to_thread})
runs the function at once, as L{SynchronousThreadPool} does for thread-pool apps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from twisted.internet.task import Clock

__all__ = ["ClockEventLoop", "MAX_ROUNDS"]

T = TypeVar("T")

#: Timers this close to now are due, as asyncio's own iteration counts them (a clock
#: moved to a timer's time by float arithmetic may stop a hair short of it).
_RESOLUTION = 1e-9

#: Rounds of "run what is due now" before flush() decides that it never ends.
MAX_ROUNDS = 100_000


class _NoSelector:
    """What the loop's iteration polls for I/O: there is never any."""

    def select(self, timeout: float | None = None) -> list[Any]:
        return []

    def close(self) -> None:
        pass


class ClockEventLoop(asyncio.BaseEventLoop):
    """
    An asyncio loop whose C{time()} is C{clock.seconds()}. L{flush} and L{advance} step
    the clock and the loop together: Twisted's delayed calls and asyncio's callbacks and
    timers run in the order they fall due.
    """

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._clock = clock
        self._selector = _NoSelector()

    def time(self) -> float:
        return self._clock.seconds()

    def next_due(self) -> float | None:
        """When a callback of this loop is next due: now if one is ready; None if none."""
        state: Any = self  # BaseEventLoop's own queues, which a subclass may read
        if state._ready:
            return self.time()
        timers = [handle.when() for handle in state._scheduled if not handle.cancelled()]
        return min(timers) if timers else None

    def due_now(self) -> bool:
        """Whether L{run_due} has something to run (by the loop's own measure of "now")."""
        due = self.next_due()
        return due is not None and due < self.time() + _RESOLUTION

    def run_due(self) -> None:
        """One iteration: every callback ready now and every timer due now runs."""
        self.stop()
        self.run_forever()

    # --- the clock and the loop together ---------------------------------------------------

    def flush(self) -> None:
        """Run everything due now, on the clock and on the loop, until nothing is."""
        clock = self._clock
        for _ in range(MAX_ROUNDS):
            now = clock.seconds()
            clock_due = any(call.getTime() <= now for call in clock.getDelayedCalls())
            loop_due = self.due_now()
            if not clock_due and not loop_due:
                return
            if clock_due:
                clock.advance(0)
            if loop_due:
                self.run_due()
        raise AssertionError("the apps never went quiet: do two of them answer each other forever?")

    def next_call(self) -> float | None:
        """When the next delayed call of the clock or callback of the loop is due."""
        times = [call.getTime() for call in self._clock.getDelayedCalls()]
        due = self.next_due()
        if due is not None:
            times.append(due)
        return min(times) if times else None

    def advance(self, seconds: float) -> None:
        """Move the clock forward by C{seconds}, stopping at each call due on the way."""
        target = self._clock.seconds() + seconds
        self.flush()
        while self.skip_to_next(target):
            pass
        self._clock.advance(max(0.0, target - self._clock.seconds()))
        self.flush()

    def skip_to_next(self, limit: float = float("inf")) -> bool:
        """Move the clock to the next call due (if by C{limit}) and run what follows."""
        due = self.next_call()
        if due is None or due > limit:
            return False
        self._clock.advance(max(0.0, due - self._clock.seconds()))
        self.flush()
        return True

    # --- asyncio's ---------------------------------------------------------------------------

    def run_in_executor(  # type: ignore[override]  # the same call, typed more loosely
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        future: asyncio.Future[T] = self.create_future()
        try:
            future.set_result(func(*args))
        except Exception as e:
            future.set_exception(e)
        return future

    # What BaseEventLoop leaves to its subclasses; with no selector there is nothing to do.

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def __del__(self) -> None:
        # It holds no file descriptor: an unclosed one is nothing to warn about.
        pass
