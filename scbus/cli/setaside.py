"""
``scbus set-aside``: what the console offers for messages kept aside, without a console
(AMQP: the shared ``scbus.unrouted`` and ``scbus.dead`` queues).

    scbus set-aside --config F list unrouted|dead [--json]
    scbus set-aside --config F replay unrouted|dead ID
    scbus set-aside --config F purge unrouted|dead [--yes]

Listing looks at up to 500 messages and gives them all back. Replay publishes the one
message again (a dead letter to the queue of the app it came from, an unrouted one to its
type's exchange), waits for the broker's confirm and only then removes it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
from typing import Any

import pika
from pika import exceptions as pika_errors

from ..transports.amqp import topology
from ..transports.amqp.client import RawDelivery, persistent_copy
from ..config import Config
from ..message import Message
from ..transports.setaside import DEAD, UNROUTED, replay_refusal
from .common import EXIT_BROKER, Refused, load_bus, run_refusing
from .reach import FILE, HTTP, reach

__all__ = ["add_parser"]

QUEUES = {UNROUTED: topology.UNROUTED_QUEUE, DEAD: topology.DEAD_QUEUE}


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "set-aside", help="list, replay or purge unrouted and dead-lettered messages",
        description="The messages the bus kept aside: unrouted (no app subscribes) and dead "
        "(could not be decoded, or quarantined).",
    )
    p.add_argument("--config", required=True)
    actions = p.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("list", help="show what is kept (nothing is removed)")
    ls.add_argument("kind", choices=sorted(QUEUES))
    ls.add_argument("--json", action="store_true", help="one JSON object per message")
    rp = actions.add_parser("replay", help="publish one again and remove it once confirmed")
    rp.add_argument("kind", choices=sorted(QUEUES))
    rp.add_argument("id", help="the message's id, as list shows it")
    rp.add_argument(
        "--force", action="store_true",
        help="replay even a message that would only be set aside again (no app of this config "
        "subscribes to its type; its body still does not decode)",
    )
    pg = actions.add_parser("purge", help="delete every message of one kind")
    pg.add_argument("kind", choices=sorted(QUEUES))
    pg.add_argument("--yes", action="store_true", help="do not ask (needed without a terminal)")
    p.set_defaults(run=lambda args: run_refusing(run, args))


def run(args: argparse.Namespace) -> int:
    from ..client import BrokerUnreachable, connect_blocking

    config, apps = load_bus(args.config)
    way = reach(config, f"set-aside {args.action}")
    if way == HTTP:
        from .overhttp import set_aside

        return set_aside(config, args)
    if way == FILE:
        from .overfile import set_aside as on_file

        return on_file(config, args, apps)
    settings = config.transport.amqp
    if args.action == "purge" and not args.yes and not sys.stdin.isatty():
        raise Refused("purge deletes messages for good: confirm on a terminal, or pass --yes")
    try:
        connection = connect_blocking(settings, 10.0, "scbus set-aside")
    except BrokerUnreachable as e:
        raise Refused(f"cannot reach the broker: {e}", EXIT_BROKER) from None
    try:
        if args.action == "replay":
            return _replay(connection, args, config, apps)
        return {"list": _list, "purge": _purge}[args.action](connection, args)
    finally:
        try:
            connection.close()
        except Exception:
            pass


def _channel(connection: pika.BlockingConnection, queue: str) -> tuple[Any, int]:
    """A channel, and the queue's message count; a refusal if the queue does not exist."""
    channel = connection.channel()
    try:
        count = channel.queue_declare(queue, passive=True).method.message_count
    except pika_errors.ChannelClosedByBroker:
        raise Refused(f"{queue} does not exist on this broker (no bus has run here yet)") from None
    return channel, count


def _browse(channel: Any, kind: str) -> Any:
    """(raw, entry) for each kept message, unacknowledged: closing the channel gives them back."""
    from ..transports.amqp.holding import SET_ASIDE_LIMIT, set_aside_entry  # loads Twisted: only here

    queue = QUEUES[kind]
    for _ in range(SET_ASIDE_LIMIT):
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            return
        raw = RawDelivery(
            channel=None, delivery_tag=method.delivery_tag, redelivered=method.redelivered,  # type: ignore[arg-type]
            exchange=method.exchange, routing_key=method.routing_key, properties=properties, body=body,
        )
        yield raw, set_aside_entry(kind, raw)


def _list(connection: pika.BlockingConnection, args: argparse.Namespace) -> int:
    channel, count = _channel(connection, QUEUES[args.kind])
    entries = [entry.as_json() for _raw, entry in _browse(channel, args.kind)]
    channel.close()
    return show_listing(entries, count, args)


def show_listing(entries: list[dict[str, Any]], total: int, args: argparse.Namespace, more: str = "") -> int:
    """Set-aside entries (as L{SetAsideMessage.as_json} gives them), as JSON lines or for people."""
    if args.json:
        for entry in entries:
            print(json.dumps(entry, ensure_ascii=False))
        return 0
    if not entries:
        print(f"no {args.kind} messages")
        return 0
    for entry in entries:
        at = datetime.datetime.fromtimestamp(entry["at"]).isoformat(sep=" ", timespec="seconds") if entry["at"] else "?"
        where = f" from {entry['app']}" if entry["app"] else ""
        print(f"{entry['id']}  {at}  {entry['code']}{where}  type={entry['type']}  {entry['reason']}")
        print(f"    {entry['body'][:100]}{'...' if len(entry['body']) > 100 else ''}")
    shown = f"{len(entries)} of {total}{more}" if total > len(entries) else str(len(entries))
    print(f"{shown} {args.kind} message(s)")
    return 0


def _replay(
    connection: pika.BlockingConnection, args: argparse.Namespace, config: Config, apps: dict[str, list[type[Message]]]
) -> int:
    channel, _count = _channel(connection, QUEUES[args.kind])
    channel.confirm_delivery()
    try:
        for raw, entry in _browse(channel, args.kind):
            if entry.id != args.id:
                continue
            refusal = None if args.force else replay_refusal(
                args.kind, entry, lambda cls: any(issubclass(cls, tuple(types)) for types in apps.values()),
                config.transport.max_message_size, config.transport.max_nesting,
            )
            if refusal is not None:
                raise Refused(f"not replayed: {refusal} (--force replays it anyway)")
            route = topology.replay_route(args.kind, entry.type_name, entry.app_name)
            if route is None:
                raise Refused(f"cannot tell the type of {entry.id}; it stays in {args.kind}")
            exchange, routing_key = route
            if exchange:
                channel.exchange_declare(exchange, "fanout", durable=True, arguments=topology.exchange_arguments())
            properties = persistent_copy(raw.properties, topology.replay_headers(raw.properties.headers))
            try:
                channel.basic_publish(
                    exchange, routing_key, raw.body, pika.BasicProperties(**dataclasses.asdict(properties)), mandatory=True,
                )
            except pika_errors.UnroutableError:
                raise Refused(f"nothing routes {entry.id} ({exchange or routing_key}); it stays in {args.kind}") from None
            channel.basic_ack(raw.delivery_tag)
            print(f"replayed {entry.id} to {exchange or routing_key}")
            return 0
    finally:
        if channel.is_open:
            channel.close()
    from ..transports.amqp.holding import SET_ASIDE_LIMIT

    raise Refused(f"no {args.kind} message with id {args.id} (among the first {SET_ASIDE_LIMIT})")


def purge_confirmed(count: int, args: argparse.Namespace, where: str) -> bool:
    """Whether to delete the C{count} entries kept in C{where}: there are some, and --yes or the terminal says so."""
    if count == 0:
        print(f"no {args.kind} messages")
        return False
    if not args.yes:
        answer = input(f"Delete all {count} {args.kind} message(s) in {where} for good? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return False
    return True


def _purge(connection: pika.BlockingConnection, args: argparse.Namespace) -> int:
    queue = QUEUES[args.kind]
    channel, count = _channel(connection, queue)
    if not purge_confirmed(count, args, queue):
        return 0 if count == 0 else 1
    purged = channel.queue_purge(queue).method.message_count
    print(f"deleted {purged} {args.kind} message(s)")
    return 0
