"""
Thread-pool apps under a fake clock: the work runs at once, in the calling thread, and its
result comes back through the clock as it would through the reactor, so a test decides
when a handler's answer arrives (C{clock.advance(0)}) and nothing depends on timing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

__all__ = ["SynchronousThreadPool", "ThreadClock"]


class SynchronousThreadPool(ThreadPool):
    """
    A L{ThreadPool} that starts no thread: C{callInThreadWithCallback} runs the work
    before it returns and hands the outcome to C{onResult}, which with
    C{deferToThreadPool} schedules it on the clock through C{callFromThread}.
    """

    def __init__(self, maxthreads: int = 1, name: str | None = None) -> None:
        super().__init__(minthreads=0, maxthreads=maxthreads, name=name)
        #: How many calls ran, for tests that check the pool was used at all.
        self.calls = 0

    def start(self) -> None:
        self.started = True
        self.joined = False

    def stop(self) -> None:
        self.started = False
        self.joined = True

    def callInThread(self, func: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self.callInThreadWithCallback(None, func, *args, **kw)

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, Any], object] | None, func: Callable[..., Any], *args: Any, **kw: Any
    ) -> None:
        if self.joined:
            return
        self.calls += 1
        try:
            result: Any = func(*args, **kw)
            ok = True
        except BaseException:
            result, ok = Failure(), False
        if onResult is not None:
            onResult(ok, result)


@implementer(IReactorThreads)
class ThreadClock(Clock):
    """
    A L{Clock} that is also the reactor's thread interface: what a "thread" hands back
    with C{callFromThread} runs on the clock's next C{advance}, never in between.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pool = SynchronousThreadPool(name="clock")
        self.pool.start()

    def callFromThread(self, callable: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.callLater(0, callable, *args, **kwargs)

    def callInThread(self, callable: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.pool.callInThread(callable, *args, **kwargs)

    def getThreadPool(self) -> SynchronousThreadPool:
        return self.pool

    def suggestThreadPoolSize(self, size: int) -> None:
        self.pool.max = size
