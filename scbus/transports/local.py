"""
LocalTransport: the broker's semantics in memory.

It stores encoded bytes, not objects, so a message that could not cross the wire fails
here too, and each app gets its own decoded copy. A queue per app, routing by class
including subclasses, at-least-once delivery (what is not acknowledged comes again),
unrouted and dead-lettered messages kept where an operator can see and replay them.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import codec
from ..errors import (
    DecodeError, EncodeError, MalformedMessage, NotRunning, ReplayRefused, TransportError, UnknownMessageType,
)
from ..interfaces import (
    IBoundedSetAside, IDelivery, IImmediateAck, IImmediateSend, IReadyDeliveries, ISetAside, ITraceCarrier, ITransport,
)
from ..message import HeartbeatResponseMessage, Message, Snapshot, from_snapshot, lookup, snapshot
from ..reactors import running_reactor
from .inprocess import InProcessControl
from .setaside import DEAD, DEFAULT_LIMIT, UNROUTED, SetAsideMessage, SetAsideStore, replay_refusal

__all__ = ["LocalTransport", "LocalDelivery"]

log = Logger()

#: A queue shorter than this keeps, beside each body, a snapshot of the message's values
#: when decoding would give them back unchanged: the receiver's copy is then built from it
#: without decoding. Deeper queues keep bodies alone, so memory stays bounded.
SNAPSHOT_DEPTH = 1000

#: A queued message: its body, whether it was delivered before, a snapshot of its values
#: (see SNAPSHOT_DEPTH) and the trace context it was sent with (ITraceCarrier), if any.
_Entry = tuple[bytes, bool, "Snapshot | None", "dict[str, str] | None"]


def _not_held(delivery: LocalDelivery) -> TransportError:
    return TransportError(
        f"delivery {delivery.app_name}#{delivery.tag} is no longer held "
        "(recovered or settled); it will be, or was, delivered again"
    )


@implementer(IDelivery)
class LocalDelivery:
    __slots__ = ("_transport", "app_name", "tag", "body", "message", "redelivered", "received_at", "trace_context")

    def __init__(
        self,
        transport: LocalTransport,
        app_name: str,
        tag: int,
        body: bytes,
        message: Message,
        redelivered: bool,
        received_at: float,
        trace_context: dict[str, str] | None = None,
    ) -> None:
        self._transport = transport
        self.app_name = app_name
        self.tag = tag
        self.body = body
        self.message = message
        self.redelivered = redelivered
        self.received_at = received_at
        #: The context it was sent with (ITraceCarrier), or None.
        self.trace_context = trace_context

    def ack(self) -> Deferred[None]:
        return self._transport._settle(self, requeue=False)

    def release(self) -> Deferred[None]:
        return self._transport._settle(self, requeue=True)

    def reject(self, code: str, reason: str) -> Deferred[None]:
        d = self._transport._settle(self, requeue=False)
        d.addCallback(lambda _: self._transport._set_aside_dead(
            self.body, code, reason, self.message.wire_name, self.app_name, self.trace_context
        ))
        return d

    def __repr__(self) -> str:
        return f"<LocalDelivery {self.app_name}#{self.tag} {self.message!r}>"


class _Queue:
    __slots__ = ("name", "ready", "unacked", "waiters", "types", "delivered")

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready: deque[_Entry] = deque()
        self.unacked: dict[int, LocalDelivery] = {}
        self.waiters: deque[Deferred[LocalDelivery]] = deque()
        self.types: set[type[Message]] = set()
        self.delivered = 0


@implementer(ITransport, IReadyDeliveries, IImmediateSend, IImmediateAck, IBoundedSetAside, ITraceCarrier)
class LocalTransport(InProcessControl, Service):
    """
    In-memory transport for one process; the embedded default.

    @param max_message_size: bodies larger than this are dead-lettered (None: no limit).
    @param max_nesting: bodies nested deeper than this are dead-lettered.
    @param set_aside_limit: entries each of the unrouted and dead stores keeps; past
        that the oldest go (counted in L{dropped}).
    @param record: keep every message sent in C{self.sent}, for tests.
    """

    name = "transport"
    #: ITraceCarrier: the messages are the bus's own, held in this process.
    messaging_system = "scbus"

    def __init__(
        self,
        reactor: IReactorTime | None = None,
        *,
        max_message_size: int | None = None,
        max_nesting: int = codec.DEFAULT_MAX_NESTING,
        set_aside_limit: int = DEFAULT_LIMIT,
        record: bool = False,
    ) -> None:
        if reactor is None:
            reactor = running_reactor()
        self._reactor = reactor
        self._queues: dict[str, _Queue] = {}
        self._routes: dict[type[Message], tuple[_Queue, ...]] = {}
        self._tags = itertools.count(1)
        self._wake_pending: set[_Queue] = set()
        self._wake_call: Any = None
        self.max_message_size = max_message_size
        self.max_nesting = max_nesting
        self.unrouted = SetAsideStore(set_aside_limit)
        self.dead_letters = SetAsideStore(set_aside_limit)
        self.sent: list[Message] | None = [] if record else None
        self._stopped = False
        self._replay_hook: Any = None

    def __repr__(self) -> str:
        return f"<LocalTransport queues={sorted(self._queues)}>"

    # --- lifecycle ------------------------------------------------------------------------

    def startService(self) -> None:
        self._stopped = False
        super().startService()

    def stopService(self) -> None:
        """
        Like a closed connection: whatever was delivered and not acknowledged comes back,
        to the queues that go with the process; say what goes with them.
        """
        self._stopped = True
        self.recover()
        queued = sum(len(q.ready) for q in self._queues.values())
        if queued or len(self.unrouted) or len(self.dead_letters):
            log.warn(
                "in-memory transport stopped: {queued} queued message(s), {unrouted} unrouted and "
                "{dead} dead-lettered are lost with the process (a broker keeps them: transport.type = \"amqp\")",
                queued=queued, unrouted=len(self.unrouted), dead=len(self.dead_letters),
            )
        return super().stopService()

    def recover(self, app_name: str | None = None) -> int:
        """
        Put every unacknowledged delivery (of one app, or all) back in its queue, marked
        redelivered: what the broker does when a consumer's channel closes. Answers how
        many were put back.
        """
        queues = [self._queue(app_name)] if app_name else list(self._queues.values())
        count = 0
        for queue in queues:
            pending = sorted(queue.unacked.values(), key=lambda d: d.tag, reverse=True)
            queue.unacked.clear()
            for delivery in pending:
                queue.ready.appendleft((delivery.body, True, None, delivery.trace_context))
            count += len(pending)
            self._wake(queue)
        return count

    # --- ITransport -----------------------------------------------------------------------

    def setup(self, app_name: str, message_types: Iterable[type[Message]]) -> Deferred[None]:
        queue = self._queue(app_name)
        queue.types.update(message_types)
        self._routes.clear()
        return succeed(None)

    def send(self, message: Message) -> Deferred[None]:
        try:
            self.send_now(message)
        except (EncodeError, NotRunning):
            return fail()
        return succeed(None)

    def send_now(self, message: Message, trace_context: dict[str, str] | None = None) -> None:
        if self._stopped:
            raise NotRunning("the transport is stopped")
        body = codec.encode(message, self.max_message_size)
        if self.sent is not None:
            self.sent.append(message)
        self._route(type(message), body, snapshot(message), trace_context)

    # --- ITraceCarrier: the context is kept in the queue entry, beside the body ------------

    def send_traced(
        self, message: Message, trace_context: dict[str, str], report: Callable[[Failure | None], object]
    ) -> None:
        try:
            self.send_now(message, trace_context)
        except Exception:
            report(Failure())
            return
        report(None)

    def trace_attributes(self, message: Message, delivery: IDelivery | None) -> dict[str, Any]:
        # Routing is by type: a message's type is where it goes, on either side.
        return {"messaging.destination.name": message.wire_name}

    def trace_replays(self, hook: Any) -> None:
        self._replay_hook = hook

    def publish_raw(self, body: bytes, type_name: str | None = None) -> Deferred[None]:
        if self._stopped:
            return fail(NotRunning("the transport is stopped"))
        body = bytes(body)
        name = type_name or codec.peek_type(body)
        if name is None:
            return fail(MalformedMessage("cannot tell the message type of this body; pass type_name"))
        message_type = self._known_type(name)
        if message_type is None:
            # No app can subscribe to a type nobody here knows: as on the broker, unrouted.
            self._keep_unrouted(body, name)
            return succeed(None)
        self._route(message_type, body)
        return succeed(None)

    @staticmethod
    def _known_type(name: str) -> type[Message] | None:
        try:
            return lookup(name)
        except UnknownMessageType:
            return None

    def take_ready(self, app_name: str) -> LocalDelivery | None:
        queue = self._queue(app_name)
        return None if queue.waiters or not queue.ready else self._next_delivery(queue)

    def retrieve(self, app_name: str) -> Deferred[IDelivery]:
        delivery = self.take_ready(app_name)
        if delivery is not None:
            return succeed(delivery)
        queue = self._queue(app_name)
        waiter: Deferred[LocalDelivery] = Deferred(lambda d: self._withdraw(queue, d))
        queue.waiters.append(waiter)
        return cast("Deferred[IDelivery]", waiter)

    def queue_depth(self, app_name: str) -> Deferred[int]:
        return succeed(len(self._queue(app_name).ready))

    def buffered(self, app_name: str) -> int:
        return 0  # nothing is prefetched in memory

    def set_aside(self, kind: str) -> Deferred[list[ISetAside]]:
        return succeed(list(self._store(kind)))

    def replay(self, kind: str, entry_id: str, force: bool = False) -> Deferred[bool]:
        store = self._store(kind)
        for entry in store:
            if entry.id != entry_id:
                continue
            if not force:
                refusal = replay_refusal(
                    kind, entry, lambda cls: bool(self._targets(cls)), self.max_message_size, self.max_nesting
                )
                if refusal is not None:
                    return fail(ReplayRefused(refusal))
            if kind == DEAD and entry.app_name in self._queues:
                store.remove(entry)
                context = self._replay_context(kind, entry, entry.type_name)
                self._enqueue(self._queues[entry.app_name], entry.body, None, context)
                return succeed(True)
            name = entry.type_name or codec.peek_type(entry.body)
            if name is None:
                return fail(ReplayRefused(f"cannot tell the type of {entry.id}; it stays in {kind}"))
            store.remove(entry)
            context = self._replay_context(kind, entry, name)
            message_type = self._known_type(name)
            if message_type is None or not self._targets(message_type):
                self._keep_unrouted(entry.body, name, entry.id, context)  # forced, still nobody: kept, same id
            else:
                self._route(message_type, entry.body, None, context)
            return succeed(True)
        return succeed(False)

    def _replay_context(self, kind: str, entry: SetAsideMessage, type_name: str | None) -> dict[str, str] | None:
        """The context a replay goes with: the replay's own while tracing, else the one kept."""
        if self._replay_hook is None:
            return entry.trace_context
        attributes = {"messaging.destination.name": type_name} if type_name else {}
        context, ended = self._replay_hook(kind, entry, entry.trace_context, attributes)
        ended(None)  # queued by the time this returns
        return context

    # --- inspection -----------------------------------------------------------------------

    @property
    def dropped(self) -> dict[str, int]:
        """How many of the oldest entries each set-aside store dropped to stay bounded."""
        return {UNROUTED: self.unrouted.dropped, DEAD: self.dead_letters.dropped}

    def unacked(self, app_name: str) -> int:
        return len(self._queue(app_name).unacked)

    @property
    def apps(self) -> list[str]:
        return sorted(self._queues)

    # --- internals ------------------------------------------------------------------------

    def _store(self, kind: str) -> SetAsideStore:
        if kind == UNROUTED:
            return self.unrouted
        if kind == DEAD:
            return self.dead_letters
        raise ValueError(f"kind must be {UNROUTED!r} or {DEAD!r}, not {kind!r}")

    def _queue(self, app_name: str) -> _Queue:
        queue = self._queues.get(app_name)
        if queue is None:
            queue = self._queues[app_name] = _Queue(app_name)
        return queue

    def _targets(self, message_type: type[Message]) -> tuple[_Queue, ...]:
        targets = self._routes.get(message_type)
        if targets is None:
            mro = message_type.__mro__
            targets = tuple(
                q for q in self._queues.values() if any(k in q.types for k in mro)
            )
            self._routes[message_type] = targets
        return targets

    def _route(
        self, message_type: type[Message], body: bytes, taken: Snapshot | None = None,
        trace_context: dict[str, str] | None = None,
    ) -> None:
        targets = self._targets(message_type)
        if not targets:
            if issubclass(message_type, HeartbeatResponseMessage):
                return  # an answer nobody asked for here: nothing to keep or replay
            self._keep_unrouted(body, message_type.wire_name, None, trace_context)
            return
        for queue in targets:
            self._enqueue(queue, body, taken, trace_context)

    def _keep_unrouted(
        self, body: bytes, type_name: str, entry_id: str | None = None, trace_context: dict[str, str] | None = None
    ) -> None:
        entry = SetAsideMessage(
            body=body, reason=f"no app subscribes to {type_name}", code=UNROUTED, type_name=type_name,
            trace_context=trace_context,
        )
        if entry_id is not None:
            entry.id = entry_id
        self._keep(self.unrouted, entry)
        log.warn(
            "unrouted: no app subscribes to {type}; kept as {id} (replay it from the "
            "console once an app subscribes)",
            type=type_name,
            id=entry.id,
        )

    def _enqueue(
        self, queue: _Queue, body: bytes, taken: Snapshot | None, trace_context: dict[str, str] | None = None
    ) -> None:
        queue.ready.append((body, False, taken if len(queue.ready) < SNAPSHOT_DEPTH else None, trace_context))
        if queue.waiters:
            self._wake(queue)

    def _wake(self, queue: _Queue) -> None:
        # Waiters are woken from the reactor, never from inside send(): an app's handler
        # sending to another app must not run that app's handler on its own stack.
        if not queue.waiters or not queue.ready:
            return
        self._wake_pending.add(queue)
        if self._wake_call is None:
            self._wake_call = self._reactor.callLater(0, self._wake_waiters)

    def _wake_waiters(self) -> None:
        self._wake_call = None
        pending, self._wake_pending = self._wake_pending, set()
        for queue in pending:
            while queue.waiters and queue.ready:
                delivery = self._next_delivery(queue)
                if delivery is None:
                    break
                queue.waiters.popleft().callback(delivery)

    def _next_delivery(self, queue: _Queue) -> LocalDelivery | None:
        while queue.ready:
            body, redelivered, taken, trace_context = queue.ready.popleft()
            message = None
            if taken is not None and self.max_nesting >= 2 and (
                self.max_message_size is None or len(body) <= self.max_message_size
            ):
                # What decoding would give (an envelope and a flat data object nest two
                # deep; the size was checked at sending), without decoding.
                message = from_snapshot(taken)
            if message is None:
                try:
                    message = codec.decode(body, self.max_message_size, self.max_nesting)
                except DecodeError as e:
                    self._dead_letter(body, e, codec.peek_type(body), queue.name, trace_context)
                    continue
            tag = next(self._tags)
            delivery = LocalDelivery(
                self, queue.name, tag, body, message, redelivered, self._reactor.seconds(), trace_context
            )
            queue.unacked[tag] = delivery
            queue.delivered += 1
            return delivery
        return None

    def _withdraw(self, queue: _Queue, waiter: Deferred[LocalDelivery]) -> None:
        try:
            queue.waiters.remove(waiter)
        except ValueError:
            pass

    def ack_now(self, delivery: IDelivery) -> None:
        """
        Acknowledge at once, without a Deferred (L{IImmediateAck}): what the main bus
        calls on its hot path. L{TransportError} when the delivery is no longer held.
        """
        held = cast(LocalDelivery, delivery)
        if self._queues[held.app_name].unacked.pop(held.tag, None) is None:
            raise _not_held(held)

    def _settle(self, delivery: LocalDelivery, requeue: bool) -> Deferred[None]:
        queue = self._queues[delivery.app_name]
        if queue.unacked.pop(delivery.tag, None) is None:
            return fail(_not_held(delivery))
        if requeue:
            queue.ready.appendleft((delivery.body, True, None, delivery.trace_context))
            self._wake(queue)
        return succeed(None)

    def _dead_letter(
        self, body: bytes, error: DecodeError, type_name: str | None, app_name: str | None,
        trace_context: dict[str, str] | None = None,
    ) -> None:
        self._set_aside_dead(body, error.reason, str(error), type_name, app_name, trace_context)

    def _set_aside_dead(
        self, body: bytes, code: str, reason: str, type_name: str | None, app_name: str | None,
        trace_context: dict[str, str] | None = None,
    ) -> None:
        entry = SetAsideMessage(
            body=body, reason=reason, code=code, type_name=type_name, app_name=app_name,
            trace_context=trace_context,
        )
        self._keep(self.dead_letters, entry)
        log.error(
            "dead-lettered {id}{where} [{code}]: {reason}",
            id=entry.id,
            where=f" from {app_name}" if app_name else "",
            code=code,
            reason=reason,
        )

    def _keep(self, store: SetAsideStore, entry: SetAsideMessage) -> None:
        if store.append(entry) and store.dropped % 1000 == 1:
            log.warn(
                "{kind} store full ({limit} entries, transport.set_aside_limit): dropped the "
                "oldest; {dropped} dropped so far",
                kind=entry.code if entry.code == UNROUTED else DEAD,
                limit=store.limit,
                dropped=store.dropped,
            )

