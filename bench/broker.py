"""Shared by the AMQP benchmarks: a private RabbitMQ node (the tests' own), and preloading."""

from __future__ import annotations

import json
import os
import sys
import time

import pika

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.rabbit import RabbitNode, available  # noqa: E402


def start_node() -> RabbitNode:
    reason = available()
    if reason:
        raise SystemExit(f"cannot start a RabbitMQ node: {reason}")
    # (named per process: two benchmarks may run at once on one machine)
    node = RabbitNode(name=f"scbus-bench-{os.getpid()}")
    node.start()
    return node


def envelope(wire_name: str, n: int) -> bytes:
    return json.dumps(
        {"type": wire_name, "id": f"{n:032x}", "created_at": time.time(), "correlation_id": None, "data": {"n": n}}
    ).encode()


def preload(url: str, exchange: str, routing_key: str, bodies, wire_name: str | None = None) -> None:
    """Publish fast (no confirms), then wait until the broker counted them all."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    props = pika.BasicProperties(content_type="application/json", delivery_mode=2, type=wire_name)
    for body in bodies:
        channel.basic_publish(exchange, routing_key, body, props)
    connection.close()


def queue_count(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def wait_count(url: str, queue: str, expected: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while queue_count(url, queue) < expected:
        if time.monotonic() > deadline:
            raise SystemExit(f"{queue} never reached {expected} messages")
        time.sleep(0.2)
