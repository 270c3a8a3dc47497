"""The main bus's observer hook, which the metrics and the status page are fed by."""

from datetime import timedelta

from twisted.internet.task import deferLater

from scbus.message import AppErrorOccurredMessage
from scbus.testing import BusHarness

from .shop_apps import Order, Shipped


def test_observers_get_timings_and_results():
    harness = BusHarness()
    clock = harness.clock

    def slow_shop(name, root, config):
        def on_order(order):
            if order.item == "bad":
                raise ValueError("no such item")
            return deferLater(clock, 2.5, lambda: Shipped(item=order.item))

        return {Order: on_order, timedelta(seconds=10): lambda: None}

    harness.add_app("shop", slow_shop)
    seen = []
    harness.bus.observers.append(lambda *args: seen.append(args))
    harness.start()
    harness.transport.send(Order(item="tea", created_at=clock.seconds()))
    clock.advance(1.5)  # queued for 1.5 s: the bus is not pumping while the clock stands
    harness.advance(3)
    harness.send(Order(item="bad", created_at=clock.seconds()))
    harness.advance(10)  # the idle handler runs once
    (app, handling, queued, results), (_, _, _, error), idle = seen
    assert (app, handling, queued) == ("shop", 2.5, 1.5)
    assert [type(m) for m in results] == [Shipped]
    assert isinstance(error[0], AppErrorOccurredMessage) and error[0].error == "no such item"
    assert idle == ("shop", None, None, [])
