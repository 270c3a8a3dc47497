"""
Helpers for testing your own apps: the real bus on the in-memory transport and a fake
clock, so handlers, idle handlers and chains of apps run deterministically, with no
reactor and no sleeping. Thread-pool apps too: their handlers run at once on a
L{SynchronousThreadPool} and their results come back through the clock. Coroutine
handlers run as asyncio tasks on a L{ClockEventLoop}, an asyncio loop on the same clock:
they may await asyncio code and Deferreds, and their sleeps and timeouts pass as the
clock is moved.
L{scbus.testing.amqp} has an in-memory AMQP client, for transport authors.

    from scbus.testing import BusHarness
    from apps.clock import Tick, make_clock

    def test_clock_ticks_every_five_seconds():
        harness = BusHarness()
        harness.add_app("clock", make_clock, config={"every": 5})
        harness.start()
        harness.advance(10)
        assert [t.count for t in harness.sent_of(Tick)] == [1, 2]
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from ..appbus import ApplicationMessageBus
from ..mainbus import AppStatus, MainMessageBus
from ..message import AppErrorOccurredMessage, Message
from ..transports.local import LocalTransport
from .eventloop import MAX_ROUNDS, ClockEventLoop
from .threads import SynchronousThreadPool, ThreadClock

__all__ = ["BusHarness", "ClockEventLoop", "SynchronousThreadPool", "ThreadClock", "result_of", "run_handler"]

M = TypeVar("M", bound=Message)

#: Rounds of "run what is due now" before flush() decides the apps never go quiet.
MAX_FLUSH_ROUNDS = MAX_ROUNDS


def result_of(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has already fired; raises its failure; errors if pending."""
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    if not outcome:
        raise AssertionError(f"{d!r} has not fired (is the handler waiting on a real reactor?)")
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


def capture_from(level: str = "info") -> None:
    """
    Let stdlib log records from C{level} up reach the handlers (and so an
    AppErrorOccurredMessage's C{log}), as twistd does for C{bus.log_level}: Python's
    default lets only warnings through. Never makes logging less verbose than it is.
    """
    wanted = logging.WARNING if level == "warn" else logging.getLevelName(level.upper())
    if not isinstance(wanted, int):
        raise ValueError(f"log_level must be debug, info, warn, error or critical, not {level!r}")
    root = logging.getLogger()
    if root.getEffectiveLevel() > wanted:
        root.setLevel(wanted)


def run_handler(
    builder: Callable[..., Any],
    message: Message,
    *,
    config: dict[str, Any] | None = None,
    root_config: dict[str, Any] | None = None,
    name: str = "app",
    log_level: str = "info",
) -> list[Message]:
    """
    Build one app and hand it one message; answers what it returns (errors included,
    with the records the handler logged from C{log_level} up, as under twistd). A
    coroutine handler runs to its end on a fake clock, its sleeps passing at once.
    """
    capture_from(log_level)
    subscriptions = builder(name, root_config or {}, config or {})
    clock = Clock()
    loop = ClockEventLoop(clock)
    app = ApplicationMessageBus(name, subscriptions, reactor=clock, event_loop=loop)
    d = app.handle(message)
    loop.flush()
    for _ in range(MAX_FLUSH_ROUNDS):
        if d.called or not loop.skip_to_next():
            break
    return result_of(d)


class BusHarness:
    """
    Apps on a L{LocalTransport} driven by a L{ThreadClock}.

    Thread-pool apps (C{threads=N}) run their handlers on a L{SynchronousThreadPool}:
    at once, with the result handed back through the clock, so tests stay deterministic.
    Coroutine handlers run on L{loop}, an asyncio loop on the same clock.
    An error's C{log} holds the handler's records from C{log_level} up, as under twistd
    with that C{bus.log_level}. Given a C{tracer_provider}, the bus traces to it
    (L{scbus.tracing}): with the SDK's in-memory exporter a test reads the spans.
    """

    def __init__(
        self, *, max_message_size: int | None = None, log_level: str = "info", tracer_provider: Any = None
    ) -> None:
        capture_from(log_level)
        self.clock = ThreadClock()
        #: The asyncio loop coroutine handlers run on; its time is the clock's.
        self.loop = ClockEventLoop(self.clock)
        self.transport = LocalTransport(self.clock, max_message_size=max_message_size, record=True)
        self.bus = MainMessageBus("test", self.transport, reactor=self.clock, grace_period=0)
        if tracer_provider is not None:
            # OpenTelemetry spans to this provider (the SDK's, with an in-memory exporter)
            self.bus.enable_tracing(tracer_provider)

    def add_app(
        self,
        name: str,
        builder: Callable[..., Any],
        *,
        config: dict[str, Any] | None = None,
        root_config: dict[str, Any] | None = None,
        max_in_flight: int = 10,
        **options: Any,
    ) -> ApplicationMessageBus:
        """
        Build and add an app. C{options} are ApplicationMessageBus keywords (retries,
        retry_delay, time_limit, ...); retry delays pass on the fake clock.
        """
        subscriptions = builder(name, root_config or {}, config or {})
        if options.get("threads") and "thread_pool" not in options:
            options["thread_pool"] = SynchronousThreadPool(options["threads"], name=f"scbus-{name}")
        options.setdefault("event_loop", self.loop)
        app = ApplicationMessageBus(name, subscriptions, reactor=self.clock, **options)
        self.bus.add_app(name, app, subscriptions, max_in_flight=max_in_flight)
        return app

    def start(self) -> None:
        self.transport.startService()
        self.bus.startService()
        self.flush()

    def stop(self) -> None:
        d = self.bus.stopService()
        self.flush()
        result_of(d)
        self.transport.stopService()

    def send(self, message: Message) -> None:
        """Send C{message} as if from another app, and run everything it causes."""
        result_of(self.bus.send(message))
        self.flush()

    def flush(self) -> None:
        """Run everything due now (deliveries, handlers, sends, coroutines) until nothing is."""
        self.loop.flush()

    def advance(self, seconds: float) -> None:
        """
        Move the clock forward, running idle handlers, coroutines' timers and what they
        cause on the way.
        """
        self.loop.advance(seconds)

    @property
    def sent(self) -> list[Message]:
        """Every message sent on this bus, in order."""
        assert self.transport.sent is not None
        return list(self.transport.sent)

    def sent_of(self, message_type: type[M]) -> list[M]:
        return [m for m in self.sent if isinstance(m, message_type)]

    @property
    def errors(self) -> list[AppErrorOccurredMessage]:
        return self.sent_of(AppErrorOccurredMessage)

    def status(self) -> list[AppStatus]:
        return result_of(self.bus.status())
