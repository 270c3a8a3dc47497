"""
``scbus consume``: watch messages of some types go by, from outside the bus.

A temporary exclusive queue (gone when the command ends) is bound to the exchange of
each type and of its registered subclasses, as an app's queue would be. Note that while
it is bound, a type no app subscribes to counts as routed and skips ``scbus.unrouted``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from typing import Any

from .argtypes import seconds
from .. import codec
from ..errors import DecodeError
from ..transports.amqp import topology
from .common import EXIT_BROKER, Refused, load_bus, message_type, run_refusing
from .reach import reach

__all__ = ["add_parser", "render"]


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "consume", help="print messages of some types as they pass (AMQP)",
        description="Bind a temporary queue to the types' exchanges and print each message: "
        "readably, or as JSON lines with --json (which publish --lines takes back).",
    )
    p.add_argument("--config", required=True)
    p.add_argument("types", nargs="+", metavar="TYPE", help="wire type names (subclasses included)")
    p.add_argument("--limit", type=int, help="stop after this many messages (exit 1 if fewer came)")
    p.add_argument("--timeout", type=seconds, help="stop after this many seconds")
    p.add_argument("--json", action="store_true", help="one JSON envelope per line")
    p.set_defaults(run=lambda args: run_refusing(run, args))


def render(body: bytes) -> str:
    """A message as a person reads it: time, type, ids, then one field per line."""
    try:
        message = codec.decode(body)
    except DecodeError as e:
        return f"(cannot decode: {e}) {body[:200].decode('utf-8', 'replace')}"
    envelope = message.to_dict()
    at = datetime.datetime.fromtimestamp(message.created_at).isoformat(sep=" ", timespec="seconds")
    head = f"{at}  {message.wire_name}  id={message.id}"
    if message.correlation_id:
        head += f"  correlation={message.correlation_id}"
    lines = [head]
    for name, value in envelope["data"].items():
        lines.append(f"    {name}: {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines)


def _as_json_line(body: bytes) -> str | None:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def run(args: argparse.Namespace) -> int:
    from ..client import BrokerUnreachable, connect_blocking

    if args.limit is not None and args.limit < 1:
        raise Refused("--limit must be at least 1")
    config, _apps = load_bus(args.config)
    reach(config, "consume")  # the broker, or why not
    settings = config.transport.amqp
    classes = topology.binding_types([message_type(name) for name in args.types])
    try:
        connection = connect_blocking(settings, 10.0, "scbus consume")
    except BrokerUnreachable as e:
        raise Refused(f"cannot reach the broker: {e}", EXIT_BROKER) from None
    received = 0
    try:
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        for cls in classes:
            exchange = topology.type_exchange(cls.wire_name)
            channel.exchange_declare(exchange, "fanout", durable=True, arguments=topology.exchange_arguments())
            channel.queue_bind(queue, exchange)
        channel.basic_qos(prefetch_count=100)
        # Said once the queue is bound, so a script knows what it publishes next is seen.
        print(f"consuming {', '.join(c.wire_name for c in classes)} (Ctrl-C to stop)", file=sys.stderr, flush=True)

        def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
            nonlocal received
            if args.limit is not None and received >= args.limit:
                return  # left unacknowledged: the queue goes with the connection
            if args.json:
                line = _as_json_line(body)
                if line is None:
                    print(f"scbus: skipped a body that is not JSON (id {props.message_id})", file=sys.stderr)
                else:
                    print(line, flush=True)
            else:
                print(render(body), flush=True)
            received += 1
            ch.basic_ack(method.delivery_tag)

        channel.basic_consume(queue, on_message)
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        while args.limit is None or received < args.limit:
            left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if left <= 0:
                break
            connection.process_data_events(time_limit=left)
    finally:
        try:
            connection.close()
        except Exception:
            pass
    if args.limit is not None and received < args.limit:
        print(f"scbus: {received} of {args.limit} message(s) within {args.timeout}s", file=sys.stderr)
        return 1
    return 0
