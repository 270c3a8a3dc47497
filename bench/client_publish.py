"""
Confirmed publishes per second from outside the bus, on a private RabbitMQ node:

- the blocking ``Publisher`` (one confirm awaited per message: a round trip each),
- the ``TwistedPublisher`` with every publish in flight at once (confirms pipelined),
- ``scbus publish --lines`` (a process: config, builders, every line checked, then sent).

    python -m bench.client_publish [--messages 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import pika

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.broker import queue_count, start_node  # noqa: E402
from scbus.client import Publisher, TwistedPublisher  # noqa: E402
from tests.client_app import Order  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXCHANGE = f"scbus.type.{Order.wire_name}"


def bind_queue(url: str, name: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.exchange_declare(EXCHANGE, "fanout", durable=True, arguments={"alternate-exchange": "scbus.unrouted"})
    channel.queue_declare(name)
    channel.queue_purge(name)
    channel.queue_bind(name, EXCHANGE)
    connection.close()


def blocking(url: str, messages: int) -> float:
    orders = [Order(item="tea", quantity=n) for n in range(messages)]
    with Publisher(url) as publisher:
        start = time.perf_counter()
        for order in orders:
            publisher.publish(order)
        return time.perf_counter() - start


def twisted(url: str, messages: int) -> float:
    from twisted.internet import defer, reactor

    orders = [Order(item="tea", quantity=n) for n in range(messages)]
    elapsed: list[float] = []

    async def run() -> None:
        publisher = TwistedPublisher(url)
        await publisher.publish(Order(item="warm-up", quantity=0))  # connect outside the timing
        start = time.perf_counter()
        await defer.gatherResults([publisher.publish(order) for order in orders])
        elapsed.append(time.perf_counter() - start)
        await publisher.close()

    d = defer.Deferred.fromCoroutine(run())
    d.addErrback(lambda f: f.printTraceback())
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    return elapsed[0]


def command(url: str, messages: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "bus.toml")
        with open(config, "w") as f:
            f.write(f'[transport]\ntype = "amqp"\nurl = "{url}"\n\n[apps.shipping]\n'
                    f'builder = "tests.client_app:make_shipping"\nconfig = {{ path = "{tmp}/h" }}\n')
        lines = os.path.join(tmp, "orders.jsonl")
        with open(lines, "w") as f:
            for n in range(messages):
                f.write(json.dumps({"item": "tea", "quantity": n}) + "\n")
        env = dict(os.environ, PYTHONPATH=ROOT)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "scbus.cli", "publish", "--config", config, Order.wire_name, "--lines", lines],
            check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    node = start_node()
    try:
        for name, run in (("Publisher (blocking)", blocking), ("scbus publish --lines", command), ("TwistedPublisher (pipelined)", twisted)):
            queue = f"bench.client.{run.__name__}"
            bind_queue(node.url, queue)
            seconds = run(node.url, args.messages)
            arrived = queue_count(node.url, queue)
            assert arrived >= args.messages, f"{name}: {arrived} of {args.messages} arrived"
            print(f"{name:30s} {args.messages / seconds:8.0f} confirmed msg/s  ({args.messages} in {seconds:.2f} s)")
    finally:
        node.cleanup()


if __name__ == "__main__":
    main()
