"""
The thread that owns the database connection.

SQLite connections belong to the thread that made them, and a commit may wait on the
disk (an fsync with ``durability = "power"``, a checkpoint, another program's lock): so
one thread opens the file, runs every job on it in order, and hands each result back to
the reactor thread (C{callFromThread}). The reactor never waits on the file.

L{InlineWriter} runs the same jobs in the calling thread and hands results back through
a clock, so unit tests (with C{task.Clock}) are deterministic.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime

from .store import Store

__all__ = ["Writer", "ThreadedWriter", "InlineWriter", "Job", "Done"]

#: A job runs on the store in the writer's thread.
Job = Callable[[Store], Any]
#: And its result comes back on the reactor thread: C{done(error, value)}.
Done = Callable[[BaseException | None, Any], object]


class Writer:
    """What the transport asks of the thread that owns the connection."""

    store: Store | None = None

    def start(self) -> None:
        """Open the file (C{opener()}). @raise StartupProblem: it cannot be used."""
        raise NotImplementedError

    def run(self, job: Job, done: Done) -> None:
        """Run C{job(store)} after the jobs before it; C{done(error, value)} on the reactor."""
        raise NotImplementedError

    def stop(self) -> Deferred[None]:
        """Close the connection after the jobs already given. Answers when it is closed."""
        raise NotImplementedError


class ThreadedWriter(Writer):
    """One thread, one connection, jobs in order."""

    def __init__(self, opener: Callable[[], Store], reactor: IReactorFromThreads) -> None:
        self._opener = opener
        self._reactor = reactor
        self._jobs: queue.SimpleQueue[tuple[Job, Done] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed: Deferred[None] | None = None

    def start(self) -> None:
        opened = threading.Event()
        problem: list[BaseException] = []
        self._closed = Deferred()
        self._thread = threading.Thread(
            target=self._main, args=(opened, problem), name="scbus-sqlite-writer", daemon=True
        )
        self._thread.start()
        opened.wait()  # at start only: the file is opened (or refused) before the bus runs
        if problem:
            self._thread.join()
            self._thread = None
            raise problem[0]

    def _main(self, opened: threading.Event, problem: list[BaseException]) -> None:
        try:
            store = self.store = self._opener()
        except BaseException as e:
            problem.append(e)
            opened.set()
            return
        opened.set()
        call = self._reactor.callFromThread
        try:
            while True:
                item = self._jobs.get()
                if item is None:
                    break
                job, done = item
                try:
                    value = job(store)
                except BaseException as e:
                    call(done, e, None)
                else:
                    call(done, None, value)
        finally:
            store.connection.close()
            closed = self._closed
            if closed is not None:
                call(closed.callback, None)

    def run(self, job: Job, done: Done) -> None:
        self._jobs.put((job, done))

    def stop(self) -> Deferred[None]:
        closed = self._closed
        if self._thread is None or closed is None:
            return succeed(None)
        self._thread = None
        self._jobs.put(None)
        return closed


class InlineWriter(Writer):
    """
    Runs each job at once, in the calling thread, and reports it through C{clock} on
    the next turn (C{clock.advance(0)} under test), as the threaded writer reports
    through the reactor.
    """

    def __init__(self, opener: Callable[[], Store], clock: IReactorTime) -> None:
        self._opener = opener
        self._clock = clock

    def start(self) -> None:
        self.store = self._opener()

    def run(self, job: Job, done: Done) -> None:
        store = self.store
        if store is None:
            raise RuntimeError("the writer is not started")
        try:
            value = job(store)
        except BaseException as e:
            self._clock.callLater(0, done, e, None)
        else:
            self._clock.callLater(0, done, None, value)

    def stop(self) -> Deferred[None]:
        store, self.store = self.store, None
        if store is not None:
            store.connection.close()
        return succeed(None)
