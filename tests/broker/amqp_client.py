"""
A plain pika client for the broker tests, outside scbus: publishes numbered messages
with publisher confirms and collects what the bus produced, as a program in another
language would (see docs/wire.md).
"""

from __future__ import annotations

import inspect
import json
import time
import uuid
from collections import Counter

import pika
from twisted.internet import reactor, task

TYPE_EXCHANGE = "scbus.type.{}"


class Producer:
    def __init__(self, url: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.confirmed = 0
        self.sent = 0

    def declare_type(self, wire_name: str) -> None:
        self.channel.exchange_declare(
            TYPE_EXCHANGE.format(wire_name), "fanout", durable=True,
            arguments={"alternate-exchange": "scbus.unrouted"},
        )

    def publish(self, wire_name: str, data: dict, message_id: str | None = None) -> None:
        envelope = {
            "type": wire_name,
            "id": message_id or uuid.uuid4().hex,
            "created_at": time.time(),
            "correlation_id": None,
            "data": data,
        }
        self.sent += 1
        self.channel.basic_publish(
            TYPE_EXCHANGE.format(wire_name), "", json.dumps(envelope).encode(),
            pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                 message_id=envelope["id"], type=wire_name),
            mandatory=True,
        )
        self.confirmed += 1  # basic_publish raises on nack or return in confirm mode

    def close(self) -> None:
        try:
            self.connection.close()
        except Exception:
            pass


class Collector:
    """A durable queue of its own bound to a type's exchange: every message of that type."""

    def __init__(self, url: str, wire_name: str, queue: str) -> None:
        self.url = url
        self.queue = queue
        self.wire_name = wire_name
        self.counts: Counter[int] = Counter()
        self.pids: Counter[int] = Counter()
        self.connection = None
        self._connect()
        self.channel.queue_declare(queue, durable=True)
        self.channel.exchange_declare(
            TYPE_EXCHANGE.format(wire_name), "fanout", durable=True,
            arguments={"alternate-exchange": "scbus.unrouted"},
        )
        self.channel.queue_bind(queue, TYPE_EXCHANGE.format(wire_name))
        self.channel.queue_purge(queue)

    def _connect(self) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self.channel = self.connection.channel()

    def reconnect(self) -> None:
        """After the broker came back: same queue, counts kept."""
        self.close()
        self._connect()

    def drain(self, seconds: float = 0.5) -> int:
        """Take what arrived; survive the broker going away."""
        taken = 0
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                method, _props, body = self.channel.basic_get(self.queue, auto_ack=True)
                if method is None:
                    self.connection.sleep(0.05)
                    continue
                data = json.loads(body)["data"]
                self.counts[data["n"]] += 1
                self.pids[data["pid"]] += 1
                taken += 1
        except (pika.exceptions.AMQPError, OSError):
            try:
                time.sleep(0.5)
                self._connect()
            except (pika.exceptions.AMQPError, OSError):
                pass
        return taken

    def wait_for(self, expected: set[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not expected <= set(self.counts):
            self.drain(0.5)
        self.drain(1.0)  # late duplicates

    def close(self) -> None:
        try:
            self.connection.close()
        except Exception:
            pass


def report(name: str, sent: int, confirmed: int, counts: Counter[int], expected: set[int]) -> dict:
    handled = sum(counts.values())
    distinct = set(counts)
    figures = {
        "case": name,
        "sent": sent,
        "confirmed": confirmed,
        "handled": handled,
        "lost": len(expected - distinct),
        "duplicated": handled - len(distinct & expected),
    }
    print(
        f"\n{name}: sent={figures['sent']} confirmed={figures['confirmed']} "
        f"handled={figures['handled']} lost={figures['lost']} duplicated={figures['duplicated']}"
    )
    return figures


async def eventually(check, timeout=30.0):
    """Until C{check()} (a value or an awaitable) is true, for at most C{timeout} s."""
    deadline = reactor.seconds() + timeout

    async def holds():
        result = check()
        return (await result) if inspect.isawaitable(result) else result

    while not await holds():
        if reactor.seconds() > deadline:
            raise AssertionError("condition not met in time")
        await task.deferLater(reactor, 0.05, lambda: None)


def fresh_vhost(test, prefix: str) -> str:
    """The URL of a vhost of C{test}'s own on C{test.rabbit}, deleted after the test."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:6]}"
    test.rabbit.ctl("add_vhost", vhost)
    test.addCleanup(test.rabbit.ctl, "delete_vhost", vhost)
    test.rabbit.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    return test.rabbit.url.rsplit("/", 1)[0] + "/" + vhost
