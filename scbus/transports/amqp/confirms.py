"""
Publisher confirms of one channel, in tag order: a multiple confirm answers its run by
popping from the front, never by scanning every publish still unconfirmed (pika's
Twisted channel scans them all on each one).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet.defer import Deferred

from .client import PublishRefused, PublishReturned

__all__ = ["PublishConfirms"]


class PublishConfirms:
    def __init__(self) -> None:
        self._sequence = 0
        self._unconfirmed: OrderedDict[int, tuple[Deferred[None], Any]] = OrderedDict()
        #: Message ids of publishes the broker returned, whose confirm is still to come.
        self._returned: list[Any] = []

    def expect(self, message_id: Any = None) -> Deferred[None]:
        """The Deferred of the publish just written: the broker numbers them from 1."""
        self._sequence += 1
        d: Deferred[None] = Deferred()
        self._unconfirmed[self._sequence] = (d, message_id)
        return d

    def returned(self, message_id: Any = None) -> None:
        """basic.return: it comes before the confirm of the same publish."""
        if len(self._returned) >= 1000:  # (never, by the protocol's order: a bound all the same)
            del self._returned[0]
        self._returned.append(message_id)

    def answer(self, tag: int, multiple: bool, refused: bool) -> None:
        unconfirmed = self._unconfirmed
        answered: list[tuple[Deferred[None], Any]] = []
        if multiple:
            while unconfirmed and next(iter(unconfirmed)) <= tag:
                answered.append(unconfirmed.popitem(last=False)[1])
        else:
            one = unconfirmed.pop(tag, None)
            if one is not None:
                answered.append(one)
        failed = self._returns_among(answered) if self._returned and not refused else set()
        for i, (d, _) in enumerate(answered):
            if refused:
                d.errback(PublishRefused("the broker refused the message (basic.nack)"))
            elif i in failed:
                d.errback(PublishReturned("the broker returned the message: nothing routes it"))
            else:
                d.callback(None)

    def _returns_among(self, answered: list[tuple[Deferred[None], Any]]) -> set[int]:
        """
        Which of the answered publishes were returned. A multiple confirm may cover a
        returned publish and routed ones: a return carries its message's properties, so
        it names its publish by message id (None matching a publish that had none).
        """
        returned = self._returned
        failed: set[int] = set()
        for i, (_, message_id) in enumerate(answered):
            if message_id in returned:
                returned.remove(message_id)
                failed.add(i)
                if not returned:
                    break
        return failed

    def fail_all(self, error: Exception) -> None:
        """The channel is gone: no confirm will come."""
        pending, self._unconfirmed = self._unconfirmed, OrderedDict()
        self._returned.clear()
        for d, _ in pending.values():
            d.errback(error)
