"""
The broker objects scbus declares, by name, and their arguments (docs/wire.md shows the
picture). Declared on every (re)connect; every declaration is idempotent.

Routing by class: one fanout exchange per message type. An app's queue is bound to the
exchange of every type it subscribes to *and of every known subclass of it*. Messages
nobody subscribes to fall through to the alternate exchange ``scbus.unrouted``.

Why not exchange-to-exchange bindings from a subclass's exchange to its base's? With an
alternate exchange on every type exchange, RabbitMQ applies the alternate exchange of
each exchange a message passes through that routes it nowhere: a Dog routed to a Dog
subscriber would also land in ``scbus.unrouted`` because the Animal exchange it passed
through had no queue. Binding queues directly keeps "unrouted" exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ...codec import CONTENT_TYPE
from ...message import Message, registered_types
from ..setaside import DEAD

__all__ = [
    "UNROUTED_EXCHANGE",
    "UNROUTED_QUEUE",
    "DEAD_EXCHANGE",
    "DEAD_QUEUE",
    "type_exchange",
    "app_queue",
    "exchange_arguments",
    "queue_arguments",
    "binding_types",
    "message_properties",
    "replay_route",
    "replay_headers",
]

PREFIX = "scbus"
UNROUTED_EXCHANGE = "scbus.unrouted"
UNROUTED_QUEUE = "scbus.unrouted"
DEAD_EXCHANGE = "scbus.dead"
DEAD_QUEUE = "scbus.dead"
#: Bound to the dead-letter exchange: a second copy of what the broker dead-letters (a
#: quorum queue's delivery limit, a rejected delivery), not of the bus's own dead letters
#: (published straight to the scbus.dead queue); consumed by the bus processes
#: (competing) so that each is reported once.
DEAD_WATCH_QUEUE = "scbus.dead.watch"

#: Each process's own queue (``scbus.discard.<process>``, exclusive), bound to the exchange
#: of each type in L{DISCARDED_WHEN_UNROUTED} and holding nothing (``x-max-length = 0``):
#: such a message always routes somewhere, so it never falls through to
#: ``scbus.unrouted``, and what no app takes is dropped. Exclusive, so it lives on the node
#: the process is connected to: a durable one on a stopped cluster node would stop every
#: process's set-up.
DISCARD_QUEUE = "scbus.discard"

#: Types nobody needs kept when no app takes them: answers to heartbeats.
DISCARDED_WHEN_UNROUTED = ("scbus.HeartbeatResponse",)

#: Headers scbus writes on what it sets aside.
REASON_HEADER = "x-scbus-reason"
ERROR_HEADER = "x-scbus-error"
APP_HEADER = "x-scbus-app"
TYPE_HEADER = "x-scbus-type"
#: When it was set aside, in milliseconds since the epoch (an integer: pika cannot write a
#: float into a header table): what its age in a listing counts from.
SET_ASIDE_AT_HEADER = "x-scbus-set-aside-at"


def type_exchange(wire_name: str) -> str:
    """The exchange a message of this type is published to."""
    return f"{PREFIX}.type.{wire_name}"


def app_queue(app_name: str) -> str:
    """The durable queue an app (in every process that runs it) consumes from."""
    return f"{PREFIX}.app.{app_name}"


def exchange_arguments() -> dict[str, Any]:
    return {"alternate-exchange": UNROUTED_EXCHANGE}


def queue_arguments(queue_type: str, delivery_limit: int | None) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "x-queue-type": queue_type,
        "x-dead-letter-exchange": DEAD_EXCHANGE,
    }
    if queue_type == "quorum" and delivery_limit is not None:
        arguments["x-delivery-limit"] = delivery_limit
    return arguments


def discard_queue_arguments() -> dict[str, Any]:
    return {"x-queue-type": "classic", "x-max-length": 0}


def holding_queue_arguments(queue_type: str) -> dict[str, Any]:
    """For scbus.unrouted and scbus.dead: kept until an operator acts."""
    return {"x-queue-type": queue_type}


def message_properties(message: Message) -> dict[str, Any]:
    """The basic properties of a published message (docs/wire.md), as keywords."""
    return {
        "content_type": CONTENT_TYPE,
        "delivery_mode": 2,
        "message_id": message.id,
        "correlation_id": message.correlation_id,
        "timestamp": int(message.created_at),
        "type": message.wire_name,
    }


def replay_route(kind: str, type_name: str | None, app_name: str | None) -> tuple[str, str] | None:
    """
    Where a replayed set-aside message goes, as (exchange, routing key): a dead letter back
    to the queue of the app it came from, anything else to its type's exchange; None if
    neither is known.
    """
    if kind == DEAD and app_name:
        return "", app_queue(app_name)
    if type_name:
        return type_exchange(type_name), ""
    return None


def replay_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    """A set-aside message's headers without the ones that say why it was set aside."""
    return {k: v for k, v in (headers or {}).items() if not k.startswith("x-scbus-") and k != "x-death"}


def binding_types(subscribed: Iterable[type[Message]]) -> list[type[Message]]:
    """The subscribed classes and every registered subclass of them, by wire name."""
    subscribed = tuple(subscribed)
    found = {
        cls.wire_name: cls
        for cls in registered_types().values()
        if subscribed and issubclass(cls, subscribed)
    }
    for cls in subscribed:
        found.setdefault(cls.wire_name, cls)
    return [found[name] for name in sorted(found)]
