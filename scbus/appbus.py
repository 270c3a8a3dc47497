"""
ApplicationMessageBus: runs one app's handlers and turns whatever they do into a list
of outgoing messages.

It knows nothing of transports. Whatever a handler does (returns a message, a list, a
Deferred, a coroutine; raises; returns garbage), the caller gets a Deferred that fires
with a list of messages and never fails: errors become L{AppErrorOccurredMessage}s.
A coroutine runs where L{scbus.coroutines} says: as an asyncio task on the asyncio
reactor, so that it may await asyncio code as well as Deferreds.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import random
import linecache
import os
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from datetime import timedelta
from typing import Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from . import codec
from .appstate import AppCounters
from .coroutines import event_loop_of, start_coroutine
from .logs.errorlog import ErrorLogLimiter, format_traceback
from .errors import HandlerTimeout, InvalidSubscriptions
from .logs.capture import CapturedLog, install as install_log_capture, run_capturing
from .message import (
    AppErrorOccurredMessage,
    HeartbeatMessage,
    HeartbeatResponseMessage,
    Message,
)
from .reactors import running_reactor

__all__ = ["ApplicationMessageBus", "Handler", "Subscriptions", "check_subscriptions"]

log = Logger()

Handler = Callable[..., Any]
Subscriptions = Mapping[Any, Handler]

# Frames from these files are the bus's plumbing, not the app's code: left out of the
# traceback an error message carries.
_PLUMBING = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
    os.path.abspath(inspect.getfile(Deferred)),
    os.path.dirname(os.path.abspath(inspect.getfile(ThreadPool))) + os.sep + "threadpool.py",
)


def check_subscriptions(
    app_name: str, subscriptions: Any
) -> tuple[dict[type[Message], Handler], dict[timedelta, Handler]]:
    """
    Split a builder's dict into message handlers and idle handlers.

    @raise InvalidSubscriptions: with a sentence naming the bad key or value.
    """
    if not isinstance(subscriptions, Mapping):
        raise InvalidSubscriptions(
            f"app {app_name!r}: the builder must return a dict of subscriptions, "
            f"got {type(subscriptions).__name__}"
        )
    handlers: dict[type[Message], Handler] = {}
    idle: dict[timedelta, Handler] = {}
    for key, handler in subscriptions.items():
        if not callable(handler):
            raise InvalidSubscriptions(
                f"app {app_name!r}: the handler for {key!r} is not callable "
                f"({type(handler).__name__})"
            )
        if isinstance(key, timedelta):
            if key <= timedelta(0):
                raise InvalidSubscriptions(
                    f"app {app_name!r}: idle interval {key} must be positive"
                )
            idle[key] = handler
        elif isinstance(key, type) and issubclass(key, Message):
            handlers[key] = handler
        else:
            raise InvalidSubscriptions(
                f"app {app_name!r}: subscription key {key!r} is neither a Message class "
                "nor a datetime.timedelta"
            )
    if not handlers and not idle:
        raise InvalidSubscriptions(f"app {app_name!r}: the builder returned no subscriptions")
    return handlers, idle


class _NotMessages(TypeError):
    """A handler returned something that is not None, a message or messages."""


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:80]}{'...' if len(text) > 80 else ''}"


def _as_messages(
    value: Any, *, allow_async: bool
) -> list[Message] | Deferred[list[Message]] | Coroutine[Any, Any, Any]:
    """
    The accepted return shapes, as a list (or a Deferred of one); a coroutine is handed
    back as it is, for the app bus to start on its event loop.
    """
    if value is None:
        return []
    if isinstance(value, Message):
        return [value]
    if isinstance(value, Deferred) or inspect.iscoroutine(value):
        if not allow_async:
            if inspect.iscoroutine(value):
                value.close()  # never to run: no "never awaited" warning on top of the error
            raise _NotMessages(
                "the handler returned a Deferred or coroutine from a thread-pool app; "
                "threaded handlers must return plain values"
            )
        if isinstance(value, Deferred):
            return value.addCallback(_as_messages, allow_async=False)
        return value
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise _NotMessages(
            "a handler must return None, a Message, an iterable of Messages, a Deferred "
            f"or a coroutine; it returned {_describe(value)}"
        )
    messages = list(value)
    for item in messages:
        if not isinstance(item, Message):
            raise _NotMessages(
                f"a handler returned an iterable holding {_describe(item)}, not a Message"
            )
    return messages


def _frames(failure: Failure) -> list[dict[str, Any]]:
    frames = []
    for function, filename, line, _locals, _globals in failure.frames:
        if os.path.abspath(filename).startswith(_PLUMBING):
            continue
        frames.append(
            {
                "file": filename,
                "line": line,
                "function": function,
                "source": linecache.getline(filename, line).strip(),
            }
        )
    return frames


def _as_data(value: Any) -> Any:
    """A JSON-safe copy: anything JSON cannot carry becomes text."""
    return codec.json_safe(value)


def _handler_name(handler: Handler) -> str:
    return getattr(handler, "__qualname__", None) or repr(handler)


class ApplicationMessageBus:
    """
    One app: its handlers, its idle handlers, its counters.

    @param name: the app's name, as in the config.
    @param subscriptions: what the app's builder returned: Message classes and
        C{timedelta}s mapped to callables.
    @param threads: run handlers in a pool of this many threads (0: in the reactor thread).
        For apps that block (file I/O, scraping) so that they do not freeze the bus.
    @param retries: on an exception, run a message's handler again up to this many times,
        after exponential backoff with jitter from C{retry_delay} up to C{retry_max_delay}
        seconds, before reporting the error. The delivery stays in flight meanwhile.
    @param time_limit: seconds a handler may run; past it the call is an error (a
        coroutine or Deferred is cancelled; a thread's late result is ignored).
    @param thread_pool: the pool a thread-pool app runs its handlers in, instead of one
        of C{threads} threads of its own (tests pass L{scbus.testing.SynchronousThreadPool}).
    @param event_loop: the asyncio loop coroutine handlers run on as tasks; by default the
        asyncio reactor's when C{reactor} is one. Without a loop Twisted runs them, and
        asyncio code in them fails with one line naming C{--reactor=asyncio}.
    """

    def __init__(
        self,
        name: str,
        subscriptions: Subscriptions,
        *,
        threads: int = 0,
        reactor: IReactorTime | None = None,
        retries: int = 0,
        retry_delay: float = 1.0,
        retry_max_delay: float = 60.0,
        time_limit: float | None = None,
        thread_pool: ThreadPool | None = None,
        event_loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if reactor is None:
            reactor = running_reactor()
        self.name = name
        self._reactor = reactor
        self._event_loop = event_loop if event_loop is not None else event_loop_of(reactor)
        self._handlers, self._idle = check_subscriptions(name, subscriptions)
        self._resolved: dict[type, Handler | None] = {}
        self.threads = threads
        self.retries = retries
        self.retry_base_delay = retry_delay
        self.retry_max_delay = retry_max_delay
        self.time_limit = time_limit
        self._random = random.random
        self._pool: ThreadPool | None = thread_pool
        if threads and thread_pool is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=threads, name=f"scbus-{name}")
            self._pool.threadFactory = _daemon_thread  # type: ignore[assignment]  # a factory, as Thread is
        #: Everything counted about this app; the main bus adds its delivery counts here.
        self.counters = AppCounters()
        self._running_in_pool = 0
        self._error_log = ErrorLogLimiter(reactor)
        install_log_capture()

    def __repr__(self) -> str:
        return f"<ApplicationMessageBus {self.name!r}>"

    # --- counts, read from the counters -------------------------------------------------

    @property
    def handled(self) -> int:
        return self.counters.handled

    @property
    def errors(self) -> int:
        return self.counters.errors

    @property
    def retried(self) -> int:
        return self.counters.retried

    @property
    def last_handled_at(self) -> float | None:
        return self.counters.last_handled_at

    @property
    def last_error(self) -> str | None:
        return self.counters.last_error

    # --- what the app asked for ---------------------------------------------------------

    @property
    def message_types(self) -> list[type[Message]]:
        """The classes the app subscribes to, plus heartbeats, which the bus answers."""
        return [*self._handlers, HeartbeatMessage]

    @property
    def intervals(self) -> list[timedelta]:
        return list(self._idle)

    def handler_for(self, message_type: type[Message]) -> Handler | None:
        """The handler for C{message_type}, falling back along its base classes."""
        try:
            return self._resolved[message_type]
        except KeyError:
            pass
        handler = None
        for klass in message_type.__mro__:
            handler = self._handlers.get(klass)
            if handler is not None:
                break
        self._resolved[message_type] = handler
        return handler

    # --- lifecycle (the thread pool) ------------------------------------------------------

    def start(self) -> None:
        if self._pool is not None and not self._pool.started:
            self._pool.start()

    def stop(self) -> None:
        """Stop the pool; never blocks the reactor on a handler that is still running."""
        pool = self._pool
        if pool is None or not pool.started:
            return
        if self._running_in_pool:
            log.warn(
                "{app}: {n} handler(s) still running in threads at stop; not waiting",
                app=self.name,
                n=self._running_in_pool,
            )
            threading.Thread(target=pool.stop, daemon=True, name=f"stop-{self.name}").start()
        else:
            pool.stop()

    # --- running handlers -------------------------------------------------------------------

    def handle(self, message: Message) -> Deferred[list[Message]]:
        """
        Run the handler for C{message}. Always answers a Deferred of a list of messages,
        which never fails: an error becomes an L{AppErrorOccurredMessage} in the list.
        """
        result = self.handle_now(message)
        if result is None:
            log.error(
                "{app}: no handler for {type}; delivered by mistake, dropped",
                app=self.name,
                type=message.wire_name,
            )
            return succeed([])
        return result if isinstance(result, Deferred) else succeed(result)

    def handle_now(
        self, message: Message, received_at: float | None = None
    ) -> list[Message] | Deferred[list[Message]] | None:
        """
        L{handle}, answering the list itself when the handler finished synchronously, and
        None when the app takes no message of this type. C{received_at} (when the
        transport handed the message over) splits a heartbeat's delay into time in the
        queue and time waiting here.
        """
        handler = self.handler_for(type(message))
        if handler is None:
            if isinstance(message, HeartbeatMessage):
                return self._answer_heartbeat(message, received_at)
            return None
        return self._run(handler, (message,), message, None)

    def idle(self, interval: timedelta) -> Deferred[list[Message]]:
        """Run the idle handler for C{interval}, with the same capture and error rules."""
        try:
            handler = self._idle[interval]
        except KeyError:
            raise KeyError(f"app {self.name!r} has no idle handler for {interval}") from None
        self.counters.idle_started(interval, self._reactor.seconds())
        result = self._run(handler, (), None, interval)
        return result if isinstance(result, Deferred) else succeed(result)

    def _run(
        self,
        handler: Handler,
        args: tuple[Any, ...],
        message: Message | None,
        interval: timedelta | None,
        attempt: int = 1,
    ) -> list[Message] | Deferred[list[Message]]:
        captured = CapturedLog()
        if self._pool is not None:
            self._running_in_pool += 1
            # The handler's thread runs in a copy of this context (as asyncio.to_thread
            # does), so what the caller made current, the handling's span, is current there.
            d = deferToThreadPool(
                cast(IReactorFromThreads, self._reactor), self._pool, contextvars.copy_context().run,
                run_capturing, captured, self._call_threaded, handler, args,
            )
            d.addBoth(self._left_pool)
        else:
            limit = self.time_limit
            started = self._reactor.seconds() if limit is not None else 0.0
            try:
                result = run_capturing(captured, self._call, handler, args)
            except BaseException as e:
                if not isinstance(e, Exception):
                    raise
                return self._attempt_failed(Failure(), captured, handler, args, message, interval, attempt)
            # _call answers a list, or a Deferred of one (type() is far cheaper than an
            # isinstance check against Deferred, an abstract base class).
            if type(result) is list:
                took = self._reactor.seconds() - started if limit is not None else 0.0
                if limit is not None and took > limit:
                    late = HandlerTimeout(
                        f"the handler ran {took:.3f}s, past its time limit of {limit}s "
                        "(it blocked the reactor: give the app threads)"
                    )
                    return self._attempt_failed(Failure(late), captured, handler, args, message, interval, attempt)
                return self._finished(result, message)
            d = result if isinstance(result, Deferred) else self._start(result, captured)
        failed_args = (captured, handler, args, message, interval, attempt)
        if self.time_limit is not None:
            d.addTimeout(self.time_limit, self._reactor, onTimeoutCancel=self._timed_out)
        d.addCallbacks(self._finished, self._attempt_failed, callbackArgs=(message,), errbackArgs=failed_args)
        return d

    @staticmethod
    def _timed_out(result: Any, timeout: float) -> Any:
        raise HandlerTimeout(f"the handler ran past its time limit of {timeout}s")

    def retry_delay(self, attempt: int) -> float:
        """Exponential backoff with jitter: the delay before attempt C{attempt + 1}."""
        ceiling = min(self.retry_max_delay, self.retry_base_delay * 2 ** (attempt - 1))
        return ceiling * (0.5 + 0.5 * self._random())

    def _attempt_failed(
        self,
        failure: Failure,
        captured: CapturedLog,
        handler: Handler,
        args: tuple[Any, ...],
        message: Message | None,
        interval: timedelta | None,
        attempt: int,
    ) -> list[Message] | Deferred[list[Message]]:
        # Idle handlers run again on their next tick; a handler that returned something
        # that is not messages will do it again: neither is retried.
        if message is not None and attempt <= self.retries and not failure.check(_NotMessages):
            delay = self.retry_delay(attempt)
            self.counters.retried += 1
            log.info(
                "{app}: {what} failed ({error}); attempt {next} of {total} in {delay:.2f}s",
                app=self.name, what=message.wire_name, error=failure.getErrorMessage(),
                next=attempt + 1, total=self.retries + 1, delay=delay,
            )
            retry: Deferred[Any] = deferLater(
                self._reactor, delay, self._run, handler, args, message, interval, attempt + 1
            )
            return retry
        return self._failed(failure, captured, handler, message, interval, attempt)

    def _left_pool(self, result: Any) -> Any:
        self._running_in_pool -= 1
        return result

    def _start(self, coro: Coroutine[Any, Any, Any], captured: CapturedLog) -> Deferred[list[Message]]:
        # The coroutine runs in a context that captures its log, as a plain handler's
        # call does; what its answer sets off (the error report, sending) does not.
        context = run_capturing(captured, contextvars.copy_context)
        try:
            d = start_coroutine(coro, self._event_loop, context)
        except Exception:  # the loop is closed, ...: the handler's error like any other
            return fail()
        return d.addCallback(_as_messages, allow_async=False)

    @staticmethod
    def _call(handler: Handler, args: tuple[Any, ...]) -> Any:
        return _as_messages(handler(*args), allow_async=True)

    @staticmethod
    def _call_threaded(handler: Handler, args: tuple[Any, ...]) -> Any:
        return _as_messages(handler(*args), allow_async=False)

    def _finished(self, messages: list[Message], incoming: Message | None) -> list[Message]:
        if incoming is not None:
            self.counters.call_done(self._reactor.seconds())
            correlation = incoming.correlation_id or incoming.id
            for out in messages:
                if out.correlation_id is None:
                    out.correlation_id = correlation
        return messages

    def _failed(
        self,
        failure: Failure,
        captured: CapturedLog,
        handler: Handler,
        message: Message | None,
        interval: timedelta | None,
        attempts: int = 1,
    ) -> list[Message]:
        assert failure.type is not None  # a Failure always holds an exception
        error = failure.getErrorMessage() or failure.type.__name__
        error_type = failure.type.__qualname__
        if failure.type.__module__ not in ("builtins", __name__):
            error_type = f"{failure.type.__module__}.{error_type}"
        elif failure.check(_NotMessages):
            error_type = "TypeError"
        self.counters.call_failed(f"{error_type}: {error}")
        what = message.wire_name if message is not None else f"idle {interval}"
        frames = _frames(failure)
        if self._error_log.admit(self.name, error_type):
            log.warn(
                "{app}: handler {handler} failed on {what}: {error_type}: {error} "
                "({captured} log line(s) captured)\n{traceback}",
                app=self.name,
                handler=_handler_name(handler),
                what=what,
                error_type=error_type,
                error=error,
                captured=len(captured.records) + captured.dropped,
                traceback=format_traceback(frames, error_type, error),
            )
        if message is not None:
            self.counters.call_done(self._reactor.seconds())
        if isinstance(message, AppErrorOccurredMessage):
            # Reporting a failure to handle a failure report would loop; the log has it.
            log.error(
                "{app}: not reporting an error raised while handling an error report",
                app=self.name,
            )
            return []
        report = AppErrorOccurredMessage(
            app_name=self.name,
            message=codec.embeddable(message),
            error=error,
            error_type=error_type,
            traceback=frames,
            log=_as_data(captured.as_data()),
            handler=_handler_name(handler),
            interval=interval.total_seconds() if interval is not None else None,
            attempts=attempts,
        )
        if message is not None:
            report.correlation_id = message.correlation_id or message.id
        return [report]

    def unsendable_report(
        self, error: str, incoming: Message | None, correlation_id: str | None
    ) -> AppErrorOccurredMessage:
        """
        The handler returned a message that cannot travel: that is the app's error,
        counted and reported like any other.
        """
        self.counters.call_failed(None)
        log.warn("{app}: {error}", app=self.name, error=error)
        report = AppErrorOccurredMessage(
            app_name=self.name,
            message=codec.embeddable(incoming),
            error=error,
            error_type="scbus.errors.EncodeError",
            traceback=[],
            log=[],
            handler="",
        )
        report.correlation_id = correlation_id
        return report

    def _answer_heartbeat(self, heartbeat: HeartbeatMessage, received_at: float | None = None) -> list[Message]:
        if heartbeat.app_name not in (None, self.name):
            return []
        now = self._reactor.seconds()
        self.counters.heartbeat(now, max(0.0, now - heartbeat.created_at))
        received = now if received_at is None else received_at
        queued = max(0.0, received - heartbeat.created_at)
        return [
            HeartbeatResponseMessage(
                app_name=self.name,
                heartbeat_id=heartbeat.id,
                queued_seconds=queued,
                handling_seconds=max(0.0, now - received),
                handled=self.counters.handled,
                errors=self.counters.errors,
                correlation_id=heartbeat.correlation_id or heartbeat.id,
            )
        ]


def _daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
    # A handler stuck in a thread must not keep the process alive after the bus stopped.
    return threading.Thread(*args, daemon=True, **kwargs)

