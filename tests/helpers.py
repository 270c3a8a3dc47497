"""Small test helpers shared by the unit tests."""

from __future__ import annotations

import queue
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure


class ThreadedClock(Clock):
    """A Clock that also takes callFromThread, so thread-pool code can be driven by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: queue.Queue = queue.Queue()

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        self.from_threads.put((f, args, kwargs))

    def wait_for(self, d: Deferred, timeout: float = 10.0) -> Any:
        """Run calls coming back from threads until C{d} fires; its result (or raise)."""
        outcome: list[Any] = []
        d.addBoth(outcome.append)
        deadline = time.monotonic() + timeout
        while not outcome:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{d!r} did not fire within {timeout}s")
            try:
                f, args, kwargs = self.from_threads.get(timeout=left)
            except queue.Empty:
                continue
            f(*args, **kwargs)
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return outcome[0]
