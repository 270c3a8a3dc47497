"""
The publisher: every message the AMQP transport sends goes through here. It declares a
type's exchange once per publishing channel, publishes with confirms, keeps sends made
while disconnected in a bounded buffer, sends again what a lost channel never confirmed,
and fails a send whose confirm does not come in time.

Every send settles: confirmed, or failed with the reason. One whose channel or connection
went away before its confirm is kept, in order, and written again only on a session whose
publishing channel is up (never again on the one that failed it), so a closing channel
cannot bounce a send back and forth.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from ...errors import EncodeError, NotRunning, TransportError
from . import topology
from .client import Properties, PublishRefused, PublishReturned
from .session import Session
from .settings import AMQPSettings

__all__ = ["Outgoing", "Publisher", "ensure_type_exchange", "ChannelGone", "DeclareFailed", "Unencodable"]


class DeclareFailed(TransportError):
    """The broker refused a type's exchange (it exists with another kind or arguments)."""


class ChannelGone(TransportError):
    """The connection went away while a type's exchange was being declared: not a refusal."""


class Unencodable(EncodeError):
    """
    The client raised while encoding a publish (properties it cannot write, a header
    frame over the broker's frame_max): the message's fault, not the transport's, so it
    is never a reason to deliver the input again.
    """


class Outgoing:
    """
    One message to publish. Its outcome (None once the broker confirmed it, or a
    Failure) goes once to C{report} when one is given, else fires C{d}: the bus's
    hot path passes a callable and so builds no Deferred chain per message.
    """

    __slots__ = (
        "exchange", "routing_key", "body", "properties", "declare", "d", "report", "finished", "deadline", "losses",
    )

    def __init__(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties, declare: str | None,
        report: Callable[[Failure | None], object] | None = None,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.properties = properties
        #: the wire name whose exchange must exist first, if any (then C{exchange} is
        #: that type's exchange)
        self.declare = declare
        self.report = report
        self.d: Deferred[None] | None = Deferred() if report is None else None
        self.finished = False
        self.deadline = 0.0
        #: Channels that closed with it written and not confirmed.
        self.losses = 0

    def finish(self, outcome: Failure | None) -> None:
        """The outcome, once: a late confirm after the sweep gave up is dropped."""
        if self.finished:
            return
        self.finished = True
        if self.report is not None:
            self.report(outcome)
        elif self.d is not None:
            if outcome is None:
                self.d.callback(None)
            else:
                self.d.errback(outcome)


def ensure_type_exchange(session: Session, wire_name: str) -> Deferred[None]:
    """
    Declare a type's exchange once per publishing channel (the transport empties
    C{session.exchanges} when that channel closes: a publish to an exchange deleted from
    outside is what closes it); concurrent callers share the wait.
    """
    name = topology.type_exchange(wire_name)
    state = session.exchanges.get(name)
    if state is True:
        return succeed(None)
    mine: Deferred[None] = Deferred()
    if state is not None:
        state.append(mine)
        return mine
    waiting: list[Deferred[None]] = [mine]
    session.exchanges[name] = waiting

    def done(result: Any) -> None:
        # (may run at once, for a client that answers synchronously)
        if session.exchanges.get(name) is waiting:
            if isinstance(result, Failure):
                del session.exchanges[name]
            else:
                session.exchanges[name] = True
        if not isinstance(result, Failure):
            for w in waiting:
                w.callback(None)
            return
        error: TransportError
        if not session.alive or not session.connection.is_open:
            error = ChannelGone(f"the connection closed while declaring exchange {name}")
        else:
            error = DeclareFailed(f"cannot declare exchange {name}: {result.getErrorMessage()}")
        for w in waiting:
            w.errback(error)

    channel = session.topology
    try:
        if channel is None:
            raise TransportError("the session has no declaring channel")
        declared = channel.exchange_declare(name, "fanout", durable=True, arguments=topology.exchange_arguments())
    except Exception:  # (a client may raise at once on a closed channel)
        declared = fail()
    declared.addBoth(done)
    return mine


#: Channels that may close with one send written and unconfirmed before it fails: a
#: publish that itself makes the broker close the channel (a body over the broker's own
#: size limit) must not be written again for ever.
MAX_LOSSES = 5


class Publisher:
    """
    @param current: the session to publish on now, if any.
    @param accepting: whether sends are taken (False once the transport stops).
    """

    def __init__(
        self,
        settings: AMQPSettings,
        clock: Any,
        current: Callable[[], Session | None],
        accepting: Callable[[], bool],
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._current = current
        self._accepting = accepting
        self._outbox: deque[Outgoing] = deque()
        #: Sends whose channel went away before their confirm, in the order they failed
        #: (a channel fails its publishes in tag order): they go first at the next flush.
        self._kept: list[Outgoing] = []
        self._flush_call: Any = None
        self._unconfirmed: dict[int, Outgoing] = {}
        self._sweeper = LoopingCall(self._sweep_unconfirmed)
        self._sweeper.clock = clock

    @property
    def waiting(self) -> int:
        """Messages kept until a session is ready (the send buffer)."""
        return len(self._outbox) + len(self._kept)

    def start(self) -> None:
        self._sweeper.start(min(1.0, self._settings.confirm_timeout / 2), now=False)

    def stop(self) -> None:
        """Stop sweeping; what waits in the buffer fails with L{NotRunning}."""
        if self._sweeper.running:
            self._sweeper.stop()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self._take_back()
        while self._outbox:
            self._outbox.popleft().finish(Failure(NotRunning("the transport stopped before this message was sent")))

    def send(self, out: Outgoing) -> Deferred[None]:
        """Publish now, or keep it until a session is ready; C{out.d}."""
        assert out.d is not None, "an Outgoing with a report callable is submitted"
        self.submit(out)
        return out.d

    def submit(self, out: Outgoing) -> None:
        """Publish now, or keep it until a session is ready; the outcome goes to C{out.finish}."""
        if not self._accepting():
            out.finish(Failure(NotRunning("the transport is stopped")))
            return
        session = self._current()
        if session is not None and session.ready and not self._outbox and not self._kept:
            # (inline _dispatch: an exchange already declared is the usual case)
            if out.declare is None or session.exchanges.get(out.exchange) is True:
                self._publish_now(session, out)
            else:
                self._dispatch(session, out)
        elif self.waiting >= self._settings.send_buffer:
            out.finish(Failure(TransportError(
                f"not connected to the broker and the send buffer is full "
                f"({self._settings.send_buffer} messages waiting)"
            )))
        else:
            self._outbox.append(out)

    def flush(self) -> None:
        """Publish what waits, in order, while the session's publishing channel is up."""
        session = self._current()
        if session is None or not session.publishing:
            return  # the next session, or the publishing channel reopened, flushes
        self._take_back()
        while self._outbox and session.publishing:
            self._dispatch(session, self._outbox.popleft())

    def _take_back(self) -> None:
        if self._kept:
            kept, self._kept = self._kept, []
            self._outbox.extendleft(reversed(kept))

    def _dispatch(self, session: Session, out: Outgoing) -> None:
        if out.declare is None or session.exchanges.get(out.exchange) is True:
            self._publish_now(session, out)
            return
        d = ensure_type_exchange(session, out.declare)
        d.addCallbacks(
            lambda _: self._publish_now(session, out), self._failed, errbackArgs=(session, out)
        )

    def _publish_now(self, session: Session, out: Outgoing) -> None:
        channel = session.publisher
        if channel is None or not channel.is_open or not session.alive:
            self._failed(Failure(TransportError("publishing channel closed")), session, out)
            return
        try:
            confirmed = channel.publish(out.exchange, out.routing_key, out.body, out.properties, mandatory=True)
        except Exception as e:
            if channel.is_open and session.alive:
                # Raised while the channel is up: these properties cannot be encoded, and
                # trying again would raise again.
                failure = Failure(Unencodable(f"cannot publish: {type(e).__name__}: {e}"))
            else:
                failure = Failure()
            self._failed(failure, session, out)
            return
        # A confirm that never comes must not leave send() hanging: the sweep fails it.
        out.deadline = self._clock.seconds() + self._settings.confirm_timeout
        self._unconfirmed[id(out)] = out
        confirmed.addCallbacks(self._confirmed, self._not_confirmed, callbackArgs=(out,), errbackArgs=(session, out))

    def _confirmed(self, _: Any, out: Outgoing) -> None:
        self._unconfirmed.pop(id(out), None)
        out.finish(None)

    def _not_confirmed(self, failure: Failure, session: Session, out: Outgoing) -> None:
        self._unconfirmed.pop(id(out), None)
        out.losses += 1
        self._failed(failure, session, out)

    def _sweep_unconfirmed(self) -> None:
        now = self._clock.seconds()
        late = [out for out in self._unconfirmed.values() if out.deadline <= now]
        for out in late:
            self._unconfirmed.pop(id(out), None)
            out.finish(Failure(TransportError(
                f"the broker did not confirm within {self._settings.confirm_timeout}s"
            )))

    def _failed(self, failure: Failure, session: Session, out: Outgoing) -> None:
        if out.finished:
            return
        if failure.check(Unencodable):
            out.finish(failure)
        elif failure.check(PublishRefused, PublishReturned, DeclareFailed):
            out.finish(Failure(TransportError(failure.getErrorMessage())))
        elif not self._accepting():
            out.finish(Failure(NotRunning("the transport stopped before the broker confirmed this message")))
        elif session.publishing and not failure.check(ChannelGone):
            # Failed on a channel that is still up: not a loss, and it would fail again.
            out.finish(Failure(TransportError(f"not sent: {failure.getErrorMessage()}")))
        elif out.losses >= MAX_LOSSES:
            out.finish(Failure(TransportError(
                f"not sent: the channel closed {out.losses} times with this message written and "
                f"not confirmed (the last: {failure.getErrorMessage()})"
            )))
        else:
            # The channel or connection went away before the confirm: send it again on
            # the next session, or the next publishing channel (the broker may have it
            # already: at least once). Never at once: this session cannot take it.
            self._kept.append(out)
            current = self._current()
            if current is not None and current is not session and current.publishing:
                self._flush_soon()  # a late failure from an earlier session

    def _flush_soon(self) -> None:
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self._flush_later)

    def _flush_later(self) -> None:
        self._flush_call = None
        self.flush()
