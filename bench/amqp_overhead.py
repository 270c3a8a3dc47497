"""
The AMQP transport's own CPU per message, with no broker: the bus over AMQPTransport with
an in-memory client seam that confirms at once (scbus.testing.amqp). What is
left over the raw client loop in bench/amqp_throughput.py is roughly this.

    python -m bench.amqp_overhead [--messages 20000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from twisted.internet.task import Clock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scbus import codec  # noqa: E402
from scbus.transports.amqp.client import Properties, RawDelivery  # noqa: E402
from scbus.testing.amqp import FakeConnection  # noqa: E402
from tests.unit.test_amqp_transport_unit import Order, fake_bus  # noqa: E402


def run(messages: int) -> float:
    clock = Clock()
    connection = FakeConnection()
    connection.log = _NullLog()
    bus, app = fake_bus(clock, connection)
    props = Properties(content_type="application/json", type=Order.wire_name)
    raws = [
        RawDelivery(app.channel, i + 1, False, "", "", props, codec.encode(Order(n=i)))
        for i in range(messages)
    ]
    start = time.process_time()
    for raw in raws:
        app.channel.deliveries.put(raw)
        clock.advance(0)
    elapsed = time.process_time() - start
    assert bus.apps["shop"].counters.acked == messages
    return elapsed / messages


class _NullLog(list):
    def append(self, item):  # the fake records calls; the benchmark does not need them
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    best = min(run(args.messages) for _ in range(args.repeat))
    print(f"scbus CPU per message over the AMQP seam (no broker): {best * 1e6:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
