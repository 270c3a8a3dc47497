"""
What this process holds of one app's queue: rows claimed from the file and not handed
over yet, the requests waiting for one, and what it may claim. Rows claimed and not
settled (handed over or not) are at most the app's C{max_in_flight}, as a broker's
prefetch counts unacknowledged deliveries: a message that kills the process raises the
delivery count of no more bystanders than that.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from zope.interface import implementer

from ...interfaces import IDelivery
from ...message import Message

if TYPE_CHECKING:
    from .transport import SQLiteTransport

__all__ = ["AppQueue", "SQLiteDelivery"]


@implementer(IDelivery)
class SQLiteDelivery:
    """One claimed row handed to the bus; settled once, in the file."""

    __slots__ = ("_transport", "app_name", "seq", "body", "message", "redelivered", "received_at", "settling", "refused")

    def __init__(
        self, transport: SQLiteTransport, app_name: str, seq: int, body: bytes, message: Message,
        redelivered: bool, received_at: float,
    ) -> None:
        self._transport = transport
        self.app_name = app_name
        self.seq = seq
        self.body = body
        self.message = message
        self.redelivered = redelivered
        self.received_at = received_at
        #: An acknowledgement, release or rejection of it is on its way to the file.
        self.settling = False
        #: The file refused its settling (a full disk): given back, this delivery is not
        #: counted (its handler did not fail, the file did).
        self.refused = False

    def ack(self) -> Deferred[None]:
        return self._transport._ack(self)

    def release(self) -> Deferred[None]:
        return self._transport._release(self)

    def reject(self, code: str, reason: str) -> Deferred[None]:
        return self._transport._reject(self, code, reason)

    def __repr__(self) -> str:
        return f"<SQLiteDelivery {self.app_name}#{self.seq} {self.message!r}>"


class AppQueue:
    """One app's queue as this process sees it."""

    __slots__ = (
        "name", "prefetch", "types", "buffer", "waiters", "claiming", "maybe_ready", "maybe_suspects", "held_back",
        "set_up", "subscribed",
    )

    def __init__(self, name: str, prefetch: int) -> None:
        self.name = name
        #: Rows this process may hold claimed and unsettled: the app's max_in_flight. Each
        #: transaction claims as many as it settles, so a round of deliveries settled
        #: together brings the next round in the same commit.
        self.prefetch = max(1, prefetch)
        self.types: set[type[Message]] = set()
        #: Claimed rows not handed over yet: (seq, body, deliveries), oldest first.
        self.buffer: deque[tuple[int, bytes, int]] = deque()
        self.waiters: deque[Deferred[IDelivery]] = deque()
        #: A claim of this queue is in the batch being written.
        self.claiming = False
        #: The file may hold ready rows of this queue never claimed before (False once a
        #: claim came back short), or rows claimed before and never settled (suspects).
        self.maybe_ready = True
        self.maybe_suspects = True
        #: Paused here (IPrefetchHold): nothing is claimed, what was claimed went back.
        self.held_back = False
        #: Its routes are in the file (set-up committed).
        self.set_up = False
        #: It was set up in this process already (a first set-up replaces its routes).
        self.subscribed = False

    def may_claim(self) -> bool:
        """Set up, not held back, no claim under way."""
        return self.set_up and not self.claiming and not self.held_back
