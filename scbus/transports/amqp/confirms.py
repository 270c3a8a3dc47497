"""
Publisher confirms of one channel, in tag order: a multiple confirm answers its run by
popping from the front, never by scanning every publish still unconfirmed (pika's
Twisted channel scans them all on each one); returns are matched to their publish.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet.defer import Deferred

from .client import PublishRefused, PublishReturned

__all__ = ["PublishConfirms"]


class PublishConfirms:
    """
    A basic.return comes before the confirm of its publish, returns come in publish order,
    and a multiple confirm may cover a returned publish among routed ones. So each return
    is matched at once to a publish still unconfirmed: the first after the last one
    returned that carries the same message id, or, for publishes without one (raw
    publishes, copies of foreign messages), the same exchange, routing key and body. Its
    tag is kept until its own confirm (or nack) answers it, and only that publish fails.
    Publishes alike in all of these cannot be told apart, and need not be: which of two
    identical messages went nowhere is one and the same outcome.
    """

    def __init__(self) -> None:
        self._sequence = 0
        self._unconfirmed: OrderedDict[int, tuple[Deferred[None], Any]] = OrderedDict()
        #: Tags of publishes the broker returned, whose confirm is still to come.
        self._returned: set[int] = set()
        self._last_returned = 0

    def expect(self, message_id: Any = None, exchange: str = "", routing_key: str = "", body: bytes = b"") -> Deferred[None]:
        """The Deferred of the publish just written: the broker numbers them from 1."""
        self._sequence += 1
        d: Deferred[None] = Deferred()
        self._unconfirmed[self._sequence] = (d, message_id if message_id is not None else (exchange, routing_key, body))
        return d

    def returned(self, message_id: Any = None, exchange: str = "", routing_key: str = "", body: bytes = b"") -> None:
        """basic.return, with what it carries of its publish."""
        key = message_id if message_id is not None else (exchange, routing_key, body)
        after = self._last_returned
        for tag, (_, published) in self._unconfirmed.items():
            if tag > after and published == key:
                self._returned.add(tag)
                self._last_returned = tag
                return
        # (no unconfirmed publish is like it: by the protocol's order, never)

    def answer(self, tag: int, multiple: bool, refused: bool) -> None:
        unconfirmed = self._unconfirmed
        answered: list[tuple[int, tuple[Deferred[None], Any]]]
        if multiple:
            answered = []
            while unconfirmed and next(iter(unconfirmed)) <= tag:
                answered.append(unconfirmed.popitem(last=False))
        else:
            one = unconfirmed.pop(tag, None)
            answered = [(tag, one)] if one is not None else []
        returned = self._returned
        for answered_tag, (d, _) in answered:
            if returned and answered_tag in returned:
                returned.discard(answered_tag)
                if not refused:
                    d.errback(PublishReturned("the broker returned the message: nothing routes it"))
                    continue
            if refused:
                d.errback(PublishRefused("the broker refused the message (basic.nack)"))
            else:
                d.callback(None)

    def fail_all(self, error: Exception) -> None:
        """The channel is gone: no confirm will come."""
        pending, self._unconfirmed = self._unconfirmed, OrderedDict()
        self._returned.clear()
        for d, _ in pending.values():
            d.errback(error)
