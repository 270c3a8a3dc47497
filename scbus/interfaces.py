"""
The contracts between the bus and its transports.

A transport moves encoded messages between apps. The bus relies on exactly what is
written here, so an in-memory transport and a broker behave alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

    from .message import Message

__all__ = [
    "ITransport",
    "IMessageTransport",
    "IQueueStatistics",
    "IControlPlane",
    "ISetAsideStores",
    "IDelivery",
    "ISetAside",
    "IReadyDeliveries",
    "IImmediateSend",
    "IImmediateAck",
    "IReportedSend",
    "ITransactionalSettle",
    "IPrefetchHold",
    "IPauseMarks",
    "IIdleLease",
    "IIdleLeases",
    "IConnectionState",
    "IBoundedSetAside",
    "ITraceCarrier",
]


class IDelivery(Interface):
    """
    One message handed to one app, to be settled exactly once.

    Until L{ack} is called the transport still owns the message: if the process dies, the
    connection drops or L{release} is called, it is delivered again. A transport that
    provides L{ITraceCarrier} gives its deliveries a C{trace_context} besides.
    """

    message = Attribute("The decoded L{scbus.Message}.")
    app_name = Attribute("The app (queue) it was delivered to.")
    redelivered = Attribute("True when this message was delivered before and not acknowledged.")
    received_at = Attribute("Unix time the transport handed it over.")

    def ack() -> Deferred[None]:
        """
        Settle it as done. Answers a Deferred that fires once the transport has taken the
        acknowledgement (or failed if it could not: the message will come again).
        """

    def release() -> Deferred[None]:
        """Give it back unacknowledged, to be delivered again. Answers a Deferred."""

    def reject(code: str, reason: str) -> Deferred[None]:
        """
        Set it aside as dead-lettered with a reason (it decoded, but this app cannot take
        it: its type is not one the app subscribes to). Answers a Deferred.
        """


class ISetAside(Interface):
    """A message the transport kept aside: unrouted, or undecodable (dead-lettered)."""

    id = Attribute("An id to name it by (for replay).")
    body = Attribute("The raw bytes as they were received or sent.")
    reason = Attribute("Why it was set aside, for a person.")
    code = Attribute("A short stable reason code (C{unrouted}, C{malformed}, ...).")
    type_name = Attribute("The wire type name, when one could be read, else None.")
    app_name = Attribute("The app whose queue it came from, or None.")
    at = Attribute("Unix time it was set aside.")


class IMessageTransport(Interface):
    """The messages role: queues per app, routing by type, deliveries settled once."""

    def setup(app_name: str, message_types: Iterable[type[Message]]) -> Deferred[None]:
        """
        Make C{app_name}'s queue receive every message whose class is, or derives from,
        one of C{message_types}. Idempotent. Answers a Deferred that fires when the
        subscriptions are in place.
        """

    def send(message: Message) -> Deferred[None]:
        """
        Route C{message} to every subscribed app's queue, or to the unrouted store when no
        app subscribes. Answers a Deferred that fires once the message is safe (queued, or
        confirmed by the broker) and fails with L{scbus.errors.EncodeError} when it cannot
        be encoded or L{scbus.errors.TransportError} when it cannot be sent.
        """

    def publish_raw(body: bytes, type_name: str | None = None) -> Deferred[None]:
        """
        Send bytes from outside scbus (a console replay, another language). A body that
        cannot be decoded is dead-lettered, not raised. Answers a Deferred.
        """

    def retrieve(app_name: str) -> Deferred[IDelivery]:
        """
        Answers a Deferred that fires with the next L{IDelivery} for C{app_name}. Cancelling
        it withdraws the request without losing a message.
        """


class IQueueStatistics(Interface):
    """What status shows of an app's queue: work waiting, on the broker and in hand."""

    def queue_depth(app_name: str) -> Deferred[int]:
        """
        Answers a Deferred firing with the number of messages ready in the app's queue
        (on a broker: what C{rabbitmqctl list_queues messages_ready} shows).
        """

    def buffered(app_name: str) -> int:
        """Messages this process has received for the app (prefetch) and not handed over."""


class IControlPlane(Interface):
    """Out-of-band requests between bus processes: never behind app queues."""

    def serve_control(handler: Callable[[dict[str, Any]], Deferred[dict[str, Any] | None]]) -> None:
        """
        Answer control requests (dicts) with C{handler(request)}, which returns a Deferred
        of a dict, or of None for "not for me". Requests arrive on a path that never waits
        behind app queues.
        """

    def ask(request: dict[str, Any], timeout: float) -> Deferred[list[dict[str, Any]]]:
        """
        Send a control request to every live bus process (this one included) and answer a
        Deferred firing, after C{timeout} seconds, with the list of their answers.
        """


class ISetAsideStores(Interface):
    """The unrouted and dead-letter stores an operator reads and replays from."""

    def set_aside(kind: str) -> Deferred[list[ISetAside]]:
        """
        Answers a Deferred firing with a list of L{ISetAside}: C{kind} is C{"unrouted"} or
        C{"dead"} (undecodable or refused bodies).
        """

    def replay(kind: str, entry_id: str, force: bool = False) -> Deferred[bool]:
        """
        Publish a set-aside message again (after an app subscribed to it, or after the code
        that decodes it was deployed) and drop it from the store. Answers a Deferred firing
        with True when found. Unless C{force}, one that would only be set aside again is
        left where it is and the Deferred fails with L{scbus.errors.ReplayRefused} saying
        why (L{scbus.transports.setaside.replay_refusal}: no app subscribes to its type
        yet, or its body still does not decode). A replayed message keeps its id.
        """


class ITransport(IMessageTransport, IQueueStatistics, IControlPlane, ISetAsideStores):
    """
    Everything the main bus drives: each role above. A part that needs one role (the
    console's set-aside views, a status reader) depends on that interface alone.
    """


class IReadyDeliveries(Interface):
    """
    Optional, beside L{ITransport}: deliveries already in hand are taken without a
    Deferred, so the bus's loop costs one call per message when a queue is full. A
    transport without it is driven by L{ITransport.retrieve} alone.
    """

    def take_ready(app_name: str) -> IDelivery | None:
        """
        The next L{IDelivery} for C{app_name} if one can be handed over now, without
        passing one that an earlier L{ITransport.retrieve} still waits for; else None.
        """


class IImmediateSend(Interface):
    """
    Optional, beside L{ITransport}: a transport whose sends are safe when the call
    returns (in memory) lets the bus settle a delivery without a Deferred per send.
    """

    def send_now(message: Message) -> None:
        """
        L{ITransport.send}, done by the time it returns. Raises
        L{scbus.errors.EncodeError} when the message cannot be encoded and
        L{scbus.errors.TransportError} when it cannot be sent.
        """


class IImmediateAck(Interface):
    """
    Optional, beside L{ITransport}: a transport that takes an acknowledgement when the
    call returns (written, or to be written at the end of the reactor turn) lets the bus
    settle a delivery without a Deferred per ack.
    """

    def ack_now(delivery: IDelivery) -> None:
        """
        L{IDelivery.ack} of one of this transport's deliveries, taken by the time it
        returns. Raises L{scbus.errors.TransportError} when it cannot be taken (the
        message will come again).
        """


class IReportedSend(Interface):
    """
    Optional, beside L{ITransport}: L{ITransport.send} with its outcome passed to a
    callable instead of a Deferred, for a transport whose sends finish later (when the
    broker confirms): the bus's path for a handler with one result then builds no
    Deferred chain per message.
    """

    def send_reported(message: Message, report: Callable[[Failure | None], object]) -> None:
        """
        L{ITransport.send}; C{report} is called exactly once, maybe before this returns:
        with None once the message is sent, or with a Failure of
        L{scbus.errors.EncodeError} or L{scbus.errors.TransportError}.
        """


class ITransactionalSettle(Interface):
    """
    Optional, beside L{ITransport}: a transport that holds both ends of a handling (the
    queues are one database) writes a handler's results and the acknowledgement of the
    message it handled in one transaction, so each is done exactly once: a crash before
    the commit leaves the message to be handled again and nothing sent; after it, both
    are done. The bus uses it for every delivery whose handler returned messages.
    """

    def prepare(message: Message) -> object:
        """
        C{message} encoded (and routed) for L{ack_with}, now. Raises
        L{scbus.errors.EncodeError} when it cannot be encoded.
        """

    def ack_with(delivery: IDelivery, prepared: list[object], report: Callable[[Failure | None], object]) -> None:
        """
        Send the L{prepare}d messages and acknowledge C{delivery}, all in one transaction.
        C{report} is called exactly once, on the reactor thread, maybe before this returns:
        with None once committed, or with a Failure of L{scbus.errors.TransportError}
        when nothing of it was done (the delivery is still held: release it).
        """


# --- optional capabilities --------------------------------------------------------------
#
# Each is asked for as C{IX(transport, None)}: a transport that does not provide one
# gets the in-memory behaviour (one process, nothing prefetched, always connected).


class IPrefetchHold(Interface):
    """
    Optional: a transport that receives ahead of the bus (a broker's prefetch) gives back
    what a paused app holds, so other processes can take it meanwhile.
    """

    def hold(app_name: str) -> Deferred[int]:
        """Receive no more for C{app_name}; give back what is held. Answers how many went back."""

    def unhold(app_name: str) -> Deferred[None]:
        """Receive for C{app_name} again."""


class IPauseMarks(Interface):
    """
    Optional: pauses kept by the transport, where every process reads them (those that
    start later too), so C{pause(app, everywhere=True)} outlives the processes now running.
    """

    def mark_paused(app_name: str, paused: bool) -> Deferred[None]:
        """Keep (paused) or drop (not paused) C{app_name}'s pause mark."""

    def watch_pause_marks(observer: Callable[[str, bool], None]) -> None:
        """C{observer(app_name, paused)} hears every change of a pause mark, from any process."""


class IIdleLease(Interface):
    """One process's claim on the right to run one app's idle handlers."""

    held = Attribute("True while this process holds the lease (as last heard).")

    def holds() -> bool:
        """Checked before each run: held, and still known to be held now."""

    def release() -> None:
        """Give the lease up (a pause): another process may take it."""


class IIdleLeases(Interface):
    """
    Optional: a transport shared by several processes runs each app's idle handlers in
    one of them (C{apps.NAME.idle = "one"}); without it every process runs them.
    """

    def idle_lease(app_name: str, on_change: Callable[[bool], None]) -> IIdleLease:
        """Claim C{app_name}'s lease; C{on_change(held)} hears each time it is won or lost."""


class IConnectionState(Interface):
    """
    Optional: a transport whose store can be out of reach (a broker away, a database that
    cannot be written) says so; without it a transport counts as connected while running.
    """

    connected = Attribute("True while messages can be sent and received.")
    waiting_to_send = Attribute("Messages kept in this process until they can be sent (an int).")
    problem = Attribute(
        "While not connected, why, for a person (C{/ready} shows it), or None when there is nothing more to say."
    )


class IBoundedSetAside(Interface):
    """Optional: set-aside stores that drop their oldest entries to stay bounded."""

    dropped = Attribute("A dict from store kind (C{unrouted}, C{dead}) to entries dropped so far.")


class ITraceCarrier(Interface):
    """
    Optional: a transport that carries a message's trace context (the W3C
    C{traceparent} and C{tracestate}, and C{baggage} when there is any) from its send to
    every delivery of it, so that a chain of apps is one trace across processes
    (L{scbus.tracing}). Without it, with tracing on, sends and handlings are still spans,
    but each handling starts a trace of its own.

    What a transport does to provide it:
      - keep C{trace_context} beside the body, wherever the body goes: an app's queue, the
        unrouted store, the dead store (the in-memory transport keeps it in the queue
        entry, the AMQP transport writes it as header-table entries; a table-backed
        store adds a column of it as JSON text);
      - give each L{IDelivery} an attribute C{trace_context}: what was kept, as a mapping
        of str to str (or to the header values the client decoded), or None;
      - keep the bytes it writes when tracing is off exactly what they were: only
        L{send_traced} writes a context.
    """

    messaging_system = Attribute(
        "The spans' C{messaging.system}: C{rabbitmq} over AMQP, C{scbus} for the bus's own stores."
    )

    def send_traced(
        message: Message, trace_context: dict[str, str], report: Callable[[Failure | None], object]
    ) -> None:
        """
        L{IReportedSend.send_reported} (C{report} called exactly once, maybe before this
        returns), with C{trace_context} kept beside the body for its deliveries.
        """

    def trace_attributes(message: Message, delivery: IDelivery | None) -> dict[str, Any]:
        """
        Span attributes naming where C{message} goes (C{delivery} None: its send) or came
        from (its delivery): C{messaging.destination.name} at least (the span is named
        after it), and what the transport knows besides (RabbitMQ's routing key, a
        delivery tag).
        """

    def trace_replays(
        hook: Callable[
            [str, ISetAside, Any, dict[str, Any]], tuple[dict[str, str], Callable[[Failure | None], None]]
        ]
    ) -> None:
        """
        From now on, a set-aside message replayed (L{ISetAsideStores.replay}) is published
        with the context that C{hook(kind, entry, kept, attributes)} answers instead of
        the one kept with it. C{kept}: the trace context kept beside the body (as a
        delivery's C{trace_context}), or None; C{attributes}: as L{trace_attributes}
        answers for a send, for where the replay goes. The callable it answers with is
        called once with the outcome of that publish (None once it is sent).
        """
