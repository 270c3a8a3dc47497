"""
One app's consumer over AMQP, and the deliveries it hands over: a delivery becomes a
message in one guarded step, or is set aside (copied to ``scbus.dead`` with the reason,
or rejected to the queue's dead-letter exchange) and its slot is free again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ... import codec
from ...errors import BadProperties, ContentTypeRefused, DecodeError, TransportError
from ...interfaces import IDelivery
from ...message import Message
from . import topology
from .client import IAMQPChannel, IAMQPConsumer, Properties, RawDelivery, persistent_copy
from .publisher import Outgoing, Unencodable
from .settings import AMQPSettings

__all__ = ["AppConsumer", "AMQPDelivery", "Refused"]

log = Logger()


class Refused(DecodeError):
    """A decoded message the app cannot take, set aside with the bus's own reason code."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.reason = code


@implementer(IDelivery)
class AMQPDelivery:
    __slots__ = ("_app", "raw", "message", "app_name", "redelivered", "received_at", "_settled")

    def __init__(self, app: AppConsumer, raw: RawDelivery, message: Message, received_at: float) -> None:
        self._app = app
        self.raw = raw
        self.message = message
        self.app_name = app.name
        self.redelivered = raw.redelivered
        self.received_at = received_at
        self._settled = False

    def _channel(self) -> IAMQPChannel | None:
        channel = self.raw.channel
        if self._settled or channel is not self._app.channel or not channel.is_open:
            return None
        return channel

    def ack(self) -> Deferred[None]:
        try:
            self.ack_now()
        except TransportError:
            return fail()
        return succeed(None)

    def ack_now(self) -> None:
        """L{ack}, without a Deferred (see L{IImmediateAck}). @raise TransportError: channel closed."""
        channel = self._channel()
        if channel is None:
            raise TransportError(
                f"{self.app_name}: the channel of delivery {self.raw.delivery_tag} is closed; "
                "the broker delivers it again"
            )
        self._settled = True
        channel.ack(self.raw.delivery_tag)

    def release(self) -> Deferred[None]:
        channel = self._channel()
        if channel is None:
            return succeed(None)  # the broker gives it back anyway
        self._settled = True
        channel.nack(self.raw.delivery_tag, requeue=True)
        return succeed(None)

    def reject(self, code: str, reason: str) -> Deferred[None]:
        if self._channel() is None:
            return succeed(None)
        self._settled = True
        return self._app.dead_letter(self.raw, Refused(code, reason))

    @property
    def trace_context(self) -> Any:
        """ITraceCarrier: the trace context travels in the header table (read only when tracing)."""
        headers = self.raw.properties.headers
        return headers if isinstance(headers, dict) else None

    def __repr__(self) -> str:
        return f"<AMQPDelivery {self.app_name}#{self.raw.delivery_tag} {self.message!r}>"


class AppConsumer:
    """
    One app's consumer: its queue, channel and prefetch, the requests waiting for a
    delivery, and the one step that turns a delivery into a message or sets it aside.
    The transport opens its channel on each session (see L{AMQPTransport._start_app});
    pause.py holds and resumes it.

    @param publish: sends an L{Outgoing} (the transport's publisher), for dead letters.
    """

    def __init__(
        self,
        name: str,
        prefetch: int,
        settings: AMQPSettings,
        clock: Any,
        publish: Callable[[Outgoing], Deferred[None]],
    ) -> None:
        self.name = name
        self._settings = settings
        self._clock = clock
        self._publish = publish
        self.queue = topology.app_queue(name)
        self.prefetch = prefetch
        self.types: set[type[Message]] = set()
        self.channel: IAMQPChannel | None = None
        self.consumer: IAMQPConsumer | None = None
        self.session: int | None = None
        self.starting = False
        self.waiters: list[Deferred[AMQPDelivery]] = []
        self.inner: dict[int, Deferred[Any]] = {}
        self.setup_waiters: list[Deferred[None]] = []
        #: Wire names the queue is bound to on the current session.
        self.bound: set[str] = set()
        self.held = False  # paused: no consumer (see pause.py)
        #: Deliveries waiting on their dead-letter copy: id -> (its channel, settled)
        self._copying: dict[int, tuple[IAMQPChannel, Deferred[None]]] = {}

    def retrieve(self) -> Deferred[AMQPDelivery]:
        waiter: Deferred[AMQPDelivery] = Deferred(self.withdraw)
        self.waiters.append(waiter)
        if self.consumer is not None:
            self.attach(waiter)
        return waiter

    def take_ready(self) -> AMQPDelivery | None:
        """
        A delivery that arrived and waits, decoded, without a Deferred; None when none
        waits or a retrieve() is still waiting (it is owed the next one).
        """
        consumer = self.consumer
        while consumer is not None and not self.waiters:
            raw = consumer.take()
            if raw is None:
                return None
            delivery = self._delivery_or_set_aside(raw)
            if delivery is not None:
                return delivery
            consumer = self.consumer
        return None

    def _delivery_or_set_aside(self, raw: RawDelivery) -> AMQPDelivery | None:
        """The delivery as a message for the app; None when it cannot be read (set aside)."""
        try:
            message = self.decode(raw)
        except DecodeError as error:
            self.dead_letter(raw, error)
            return None
        return AMQPDelivery(self, raw, message, self._clock.seconds())

    def buffered(self) -> int:
        return self.consumer.buffered if self.consumer is not None else 0

    def fire_setup(self) -> None:
        waiters, self.setup_waiters = self.setup_waiters, []
        for d in waiters:
            d.callback(None)

    def fail_setup(self, failure: Failure) -> None:
        waiters, self.setup_waiters = self.setup_waiters, []
        for d in waiters:
            d.errback(failure)

    def attach(self, waiter: Deferred[AMQPDelivery]) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        inner = consumer.get()
        self.inner[id(waiter)] = inner
        inner.addCallbacks(
            self._got_raw, self._get_failed,
            callbackArgs=(waiter, consumer), errbackArgs=(waiter, consumer),
        )

    def withdraw(self, waiter: Deferred[AMQPDelivery]) -> None:
        if waiter in self.waiters:
            self.waiters.remove(waiter)
        inner = self.inner.pop(id(waiter), None)
        if inner is not None and not inner.called:
            inner.cancel()

    def _got_raw(self, raw: RawDelivery, waiter: Deferred[AMQPDelivery], consumer: IAMQPConsumer) -> None:
        self.inner.pop(id(waiter), None)
        if waiter.called or waiter not in self.waiters:
            # withdrawn just as the message arrived: give it back, lose nothing
            if raw.channel.is_open:
                raw.channel.nack(raw.delivery_tag, requeue=True)
            return
        delivery = self._delivery_or_set_aside(raw)
        if delivery is None:
            if self.consumer is not None:
                self.attach(waiter)
            return
        self.waiters.remove(waiter)
        waiter.callback(delivery)

    def decode(self, raw: RawDelivery) -> Message:
        """
        The one place a delivery becomes a message. Raises L{DecodeError} only: whatever
        else goes wrong on the way is this delivery's problem, so it is set aside with a
        reason and its slot is free again, never left unsettled.
        """
        try:
            if raw.property_error is not None:
                raise BadProperties(raw.property_error)
            content_type = raw.properties.content_type
            if content_type != codec.CONTENT_TYPE:  # (ours, the usual case, needs no parsing)
                _check_content_type(content_type)
            return codec.decode(raw.body, self._settings.max_message_size, self._settings.max_nesting)
        except DecodeError:
            raise
        except Exception as e:
            raise DecodeError(f"cannot read this delivery: {type(e).__name__}: {e}"[:1000]) from None

    def _get_failed(self, failure: Failure, waiter: Deferred[AMQPDelivery], consumer: IAMQPConsumer) -> None:
        self.inner.pop(id(waiter), None)
        if failure.check(CancelledError):
            return
        # The channel closed, or the broker cancelled the consumer: the waiter stays and
        # is served by the next consumer.
        if self.consumer is consumer and self.channel is not None and self.channel.is_open:
            log.warn("{app}: consumer cancelled ({error}); consuming again", app=self.name, error=failure.getErrorMessage())
            channel = self.channel
            self.consumer = None
            channel.close()

    def dead_letter(self, raw: RawDelivery, error: DecodeError) -> Deferred[None]:
        """
        Copy the delivery to scbus.dead with the reason in headers, then acknowledge it;
        if the copy cannot be made, reject it to the queue's dead-letter exchange. Never
        raises: whatever the delivery holds, it is settled.
        """
        try:
            props = raw.properties
            type_name = _text_or_none(props.type) or (
                codec.peek_type(raw.body) if len(raw.body) <= self._settings.max_message_size else None
            )
            message_id = _text_or_none(props.message_id)
            ours = {
                topology.REASON_HEADER: error.reason,
                topology.ERROR_HEADER: str(error)[:1000],
                topology.APP_HEADER: self.name,
                topology.SET_ASIDE_AT_HEADER: round(self._clock.seconds() * 1000),
            }
            if type_name:
                ours[topology.TYPE_HEADER] = type_name
            theirs = props.headers if isinstance(props.headers, dict) else {}
            copies = [persistent_copy(props, {**theirs, **ours}) for _ in range(1 if not theirs else 2)]
            if theirs:
                # Their headers may not survive encoding again: then ours alone.
                copies[1].headers = ours
        except Exception as e:  # properties too odd to read: the broker sets it aside
            type_name = message_id = None
            copies = []
            error = DecodeError(f"{error} (and its properties cannot be copied: {type(e).__name__})")
        log.error(
            "dead-lettered a message from {queue} (type {type}, id {id}) [{code}]: {reason}",
            queue=self.queue, type=type_name or "?", id=message_id, code=error.reason, reason=str(error),
        )
        settled: Deferred[None] = Deferred()
        key = id(settled)
        self._copying[key] = (raw.channel, settled)

        def done() -> None:
            self._copying.pop(key, None)
            if not settled.called:
                settled.callback(None)

        def copy(remaining: list[Properties]) -> None:
            if not remaining:
                reject()
                return
            out = Outgoing("", topology.DEAD_QUEUE, raw.body, remaining[0], None)
            self._publish(out).addCallbacks(copied, not_copied, errbackArgs=(remaining[1:],))

        def copied(_: Any) -> None:
            if raw.channel.is_open and not settled.called:
                raw.channel.ack(raw.delivery_tag)
            done()

        def not_copied(failure: Failure, remaining: list[Properties]) -> None:
            if remaining and failure.check(Unencodable):
                copy(remaining)
                return
            # Let the broker dead-letter it instead (x-death says "rejected").
            log.warn("could not copy to {dead} ({error}); rejecting to the queue's dead-letter exchange",
                     dead=topology.DEAD_QUEUE, error=failure.getErrorMessage())
            reject()

        def reject() -> None:
            if raw.channel.is_open and not settled.called:
                raw.channel.nack(raw.delivery_tag, requeue=False)
            done()

        copy(copies)
        return settled


    def channel_gone(self, channel: IAMQPChannel) -> None:
        """
        C{channel} closed: its deliveries still waiting on their dead-letter copy are
        settled now, as released (the broker gives them back), and their slots are free at
        once, not when the copy's send settles on a later session (then the delivery that
        comes back may be copied a second time: at least once).
        """
        for key, (on, settled) in list(self._copying.items()):
            if on is channel:
                del self._copying[key]
                settled.callback(None)


def _check_content_type(content_type: Any) -> None:
    if isinstance(content_type, (bytes, bytearray)):
        raise ContentTypeRefused(f"content type {bytes(content_type)!r} is not UTF-8 text")
    base = (content_type or "").split(";")[0].strip().lower()
    if base not in ("", codec.CONTENT_TYPE):
        raise ContentTypeRefused(f"content type {content_type!r} is not {codec.CONTENT_TYPE}")


def _text_or_none(value: Any) -> str | None:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None
