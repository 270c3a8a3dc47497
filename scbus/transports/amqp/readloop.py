"""
The loop every shared queue reader runs (the unrouted log, ``scbus.dead.watch``, the
control queues): take the next delivery, hand it over, and go on whatever it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .client import IAMQPChannel, IAMQPConsumer, RawDelivery

__all__ = ["read_loop", "acknowledger"]

log = Logger()


def read_loop(
    what: str,
    consumer: IAMQPConsumer,
    handle: Callable[[RawDelivery], Any],
    settle_bad: Callable[[RawDelivery], Any],
) -> Deferred[None]:
    """
    Call C{handle} with each delivery until the consumer stops (its channel closed or
    the broker cancelled it: the session starts a new loop on the new channel).

    C{handle} settles what it is given, now or later; if it raises, the delivery is
    given to C{settle_bad} (acknowledge or reject it, never requeue), so one delivery
    that cannot be handled is logged once and cannot stop the loop or come back to
    stop it again. The loop never raises.
    """

    async def loop() -> None:
        while True:
            try:
                raw = await consumer.get()
            except Exception:
                return
            try:
                handle(raw)
            except Exception:
                log.failure("{what}: could not handle a delivery; settled and skipped", what=what)
                try:
                    settle_bad(raw)
                except Exception:
                    log.failure("{what}: could not settle a delivery", what=what)

    return Deferred.fromCoroutine(loop())


def acknowledger(channel: IAMQPChannel) -> Callable[[RawDelivery], None]:
    """A C{settle_bad} for queues of copies and requests: acknowledge, while the channel is up."""

    def ack(raw: RawDelivery) -> None:
        if channel.is_open:
            channel.ack(raw.delivery_tag)

    return ack
