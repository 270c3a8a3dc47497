"""
Publisher confirms of one channel, in tag order: a multiple confirm answers its run by
popping from the front, never by scanning every publish still unconfirmed (pika's
Twisted channel scans them all on each one).
"""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet.defer import Deferred

from .client import PublishRefused, PublishReturned

__all__ = ["PublishConfirms"]


class PublishConfirms:
    def __init__(self) -> None:
        self._sequence = 0
        self._unconfirmed: OrderedDict[int, Deferred[None]] = OrderedDict()
        self._returned = False

    def expect(self) -> Deferred[None]:
        """The Deferred of the publish just written: the broker numbers them from 1."""
        self._sequence += 1
        d: Deferred[None] = Deferred()
        self._unconfirmed[self._sequence] = d
        return d

    def returned(self) -> None:
        """basic.return: it comes just before the confirm of the same publish."""
        self._returned = True

    def answer(self, tag: int, multiple: bool, refused: bool) -> None:
        unconfirmed = self._unconfirmed
        answered: list[Deferred[None]] = []
        if multiple:
            while unconfirmed and next(iter(unconfirmed)) <= tag:
                answered.append(unconfirmed.popitem(last=False)[1])
        else:
            one = unconfirmed.pop(tag, None)
            if one is not None:
                answered.append(one)
        for d in answered:
            if refused:
                d.errback(PublishRefused("the broker refused the message (basic.nack)"))
            elif self._returned:
                self._returned = False
                d.errback(PublishReturned("the broker returned the message: nothing routes it"))
            else:
                d.callback(None)

    def fail_all(self, error: Exception) -> None:
        """The channel is gone: no confirm will come."""
        pending, self._unconfirmed = self._unconfirmed, OrderedDict()
        for d in pending.values():
            d.errback(error)
