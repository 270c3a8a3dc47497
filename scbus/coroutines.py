"""
Where a handler's coroutine runs.

On Twisted's asyncio reactor (or the event loop L{scbus.testing} gives its harness) it
runs as an asyncio task, so it may await asyncio code: C{asyncio.sleep}, an
C{asyncio.Queue}, an aiohttp request. Twisted's installed versions cannot await a
Deferred inside an asyncio task ("Task got bad yield"), so the task turns each Deferred
the coroutine awaits into a future: Deferreds from Twisted code are awaited alike.
Cancelling the answer (a time limit) cancels the task: C{asyncio.CancelledError} is
raised inside the coroutine, at the await it is stopped at.

On any other reactor Twisted drives the coroutine, and it may await Deferreds only: there
is no asyncio event loop to run asyncio code on. While it runs, asyncio's "running loop"
is a stand-in that answers every use with L{AsyncioReactorRequired}, one line naming the
reactor to choose, where asyncio would say "no running event loop" or "await wasn't used
with future" or fail further in.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import types
from collections.abc import Coroutine, Generator
from typing import Any, NoReturn, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

__all__ = ["AsyncioReactorRequired", "REACTOR_REQUIRED", "event_loop_of", "start_coroutine"]

T = TypeVar("T")

#: The error a handler gets for awaiting asyncio code where no asyncio loop runs.
REACTOR_REQUIRED = (
    "the handler awaited asyncio code, which needs Twisted's asyncio reactor: "
    'run twistd --reactor=asyncio -n scbus ..., or set bus.reactor = "asyncio" in the config'
)


class AsyncioReactorRequired(RuntimeError):
    """A coroutine handler used asyncio on a reactor that has no asyncio event loop."""


def event_loop_of(reactor: object) -> asyncio.AbstractEventLoop | None:
    """The asyncio loop C{reactor} runs on: Twisted's asyncio reactor has one, others none."""
    # Not imported unless installed: a reactor of that class cannot exist otherwise.
    module = sys.modules.get("twisted.internet.asyncioreactor")
    if module is None or not isinstance(reactor, module.AsyncioSelectorReactor):
        return None
    loop: asyncio.AbstractEventLoop = reactor._asyncioEventloop  # no public accessor
    return loop


def start_coroutine(
    coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop | None, context: contextvars.Context
) -> Deferred[T]:
    """
    Run C{coro} in C{context} on C{loop} as an asyncio task, or, without a loop, as
    Twisted does. Answers a Deferred of its result; cancelling it cancels the coroutine.
    The Deferred's callbacks run in the caller's context, not in C{context}.
    """
    if loop is None:
        return context.run(Deferred.fromCoroutine, _without_asyncio(coro))
    wrapped = _on_asyncio(coro, loop)
    try:
        task = loop.create_task(wrapped, context=context)
    except BaseException:  # a closed loop: neither coroutine is ever to run
        wrapped.close()
        coro.close()
        raise
    return Deferred.fromFuture(task)


# --- on an asyncio loop ------------------------------------------------------------------


async def _on_asyncio(coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop) -> T:
    result: T = await _deferreds_as_futures(coro, loop)
    return result


@types.coroutine
def _deferreds_as_futures(
    coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop
) -> Generator[Any, Any, T]:
    """
    Step C{coro} for its asyncio task, handing the task a future in place of each
    Deferred it yields; anything else (an asyncio future, asyncio.sleep(0)'s bare yield)
    goes to the task as it is.
    """
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            yielded = coro.send(value) if error is None else coro.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        value = error = None
        if isinstance(yielded, Deferred):
            future = _when_fired(yielded, loop)
            future._asyncio_future_blocking = True  # what the task expects: "await future"
            yielded = future
        try:
            value = yield yielded
        except GeneratorExit:  # closed (collected while pending): close it too, if not yet
            coro.close()
            raise
        except BaseException as e:  # CancelledError, ...: the coroutine's to handle
            error = e


def _when_fired(d: Deferred[Any], loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    """
    A future done when C{d} fires. C{d} keeps its result: the coroutine's C{await d} reads
    it from C{d} once resumed. Cancelling the future (the task was cancelled) cancels C{d}.
    """
    future: asyncio.Future[None] = loop.create_future()

    def fired(result: object) -> object:
        if not future.done():
            future.set_result(None)
        return result

    def done(_: asyncio.Future[None]) -> None:
        if future.cancelled() and not d.called:
            d.cancel()
            # The coroutine gets the task's CancelledError, not this one.
            d.addErrback(_drop_cancelled)

    d.addBoth(fired)
    future.add_done_callback(done)
    return future


def _drop_cancelled(failure: Failure) -> None:
    failure.trap(CancelledError)


# --- without one ---------------------------------------------------------------------------


class _NoEventLoop:
    """
    asyncio's running loop while a coroutine runs on a reactor without one: whatever
    asyncio asks of it (a future, a timer, a task) raises L{AsyncioReactorRequired}.
    """

    def __getattr__(self, name: str) -> NoReturn:
        raise AsyncioReactorRequired(REACTOR_REQUIRED)

    def __repr__(self) -> str:
        return "<no asyncio event loop: Twisted's asyncio reactor is not running>"


_NO_EVENT_LOOP = _NoEventLoop()


@types.coroutine
def _without_asyncio(coro: Coroutine[Any, Any, T]) -> Generator[Any, Any, T]:
    """
    Step C{coro} for Twisted with the stand-in loop set as asyncio's running loop; an
    asyncio future the coroutine yields (made on some other loop) gets the same error.
    """
    value: Any = None
    error: BaseException | None = None
    while True:
        previous = asyncio._get_running_loop()
        asyncio._set_running_loop(_NO_EVENT_LOOP)  # type: ignore[arg-type]  # a stand-in
        try:
            yielded = coro.send(value) if error is None else coro.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        finally:
            asyncio._set_running_loop(previous)
        value = error = None
        if hasattr(type(yielded), "_asyncio_future_blocking"):
            error = AsyncioReactorRequired(REACTOR_REQUIRED)
            continue
        try:
            value = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as e:
            error = e
