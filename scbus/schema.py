"""
Machine-readable descriptions of a bus's messages, for producers in other languages and
for tools: a JSON Schema (2020-12) of every registered type's envelope, and an AsyncAPI
3.0 document of the bus (its type exchanges, its apps' queues, who receives what).

The schema follows the decoder's rules (scbus.message, docs/wire.md) rule for rule:
required fields, ``int`` fields take integers and never booleans, numbers are finite,
unknown fields are allowed, a message-typed field holds the envelope of that type or of
one of its subclasses. The one rule JSON Schema cannot state is that an ``int`` field
refuses ``1.0``: JSON Schema counts ``1.0`` as an integer (the JSON data model has one
kind of number), the decoder does not.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Union

from .message import Message, registered_types
from .transports.amqp import topology

__all__ = ["json_schema", "asyncapi_document", "envelope_schema", "schema_types"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
AMQP_BINDING_VERSION = "0.3.0"

#: Finite numbers only: Python's json reads 1e999 and Infinity as inf.
_NUMBER = {"type": "number", "minimum": -sys.float_info.max, "maximum": sys.float_info.max}
_ANY: dict[str, Any] = {}

Ref = Callable[[str], str]


def schema_types() -> list[type[Message]]:
    """Every registered message type but the abstract base, by wire name."""
    found = registered_types()
    found.pop(Message.wire_name, None)
    return [found[name] for name in sorted(found)]


def _pointer_part(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _message_ref(cls: type[Message], ref: Ref) -> dict[str, Any]:
    """The envelope of C{cls} or of any registered subclass: the decoder takes both."""
    options = [c for c in schema_types() if issubclass(c, cls)]
    refs = [{"$ref": ref(c.wire_name)} for c in options]
    if not refs:
        return {"$ref": ref(cls.wire_name)}
    return refs[0] if len(refs) == 1 else {"anyOf": refs}


def field_schema(annotation: Any, ref: Ref) -> dict[str, Any]:
    """The schema of one field's JSON value, mirroring scbus.message's checkers."""
    if annotation is Any or annotation is object:
        return dict(_ANY)
    if annotation is None or annotation is type(None):
        return {"type": "null"}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    if annotation is float:
        return dict(_NUMBER)
    if annotation is str:
        return {"type": "string"}
    if isinstance(annotation, type) and issubclass(annotation, Message):
        return _message_ref(annotation, ref)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (list, tuple, collections.abc.Sequence) or annotation is list:
        schema: dict[str, Any] = {"type": "array"}
        if args and args[0] not in (Any, object):
            schema["items"] = field_schema(args[0], ref)
        return schema
    if origin is dict or annotation is dict:
        schema = {"type": "object"}
        if len(args) == 2 and args[1] not in (Any, object):
            schema["additionalProperties"] = field_schema(args[1], ref)
        return schema
    if origin is Union or origin is types.UnionType:
        return {"anyOf": [field_schema(a, ref) for a in args]}
    raise TypeError(f"no JSON Schema for field type {annotation!r}")


def _summary(cls: type) -> str | None:
    doc = inspect.getdoc(cls) if cls.__doc__ else None
    if not doc or doc.startswith(f"{cls.__name__}("):  # the dataclass's generated signature
        return None
    return doc.split("\n\n")[0].replace("\n", " ")


def envelope_schema(cls: type[Message], ref: Ref) -> dict[str, Any]:
    """
    The schema of one type's envelope (docs/wire.md). A class with a field type JSON
    cannot carry is registered but never decodes: its schema matches nothing.
    """
    try:
        return _envelope_schema(cls, ref)
    except (TypeError, NameError) as e:
        return {"title": cls.wire_name, "not": {}, "description": f"never decodes: {e}"}


def _envelope_schema(cls: type[Message], ref: Ref) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        if f.name in ("id", "created_at", "correlation_id"):
            continue
        properties[f.name] = field_schema(hints[f.name], ref)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    data: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        data["required"] = required
    schema: dict[str, Any] = {
        "title": cls.wire_name,
        "type": "object",
        "required": ["type", "id", "created_at", *(["data"] if required else [])],
        "properties": {
            "type": {"const": cls.wire_name},
            "id": {"type": "string", "minLength": 1},
            "created_at": dict(_NUMBER, description="Unix time, seconds"),
            "correlation_id": {"type": ["string", "null"]},
            "data": data,
        },
    }
    summary = _summary(cls)
    if summary:
        schema["description"] = summary
    return schema


def json_schema(message_types: Iterable[type[Message]] | None = None, title: str = "scbus messages") -> dict[str, Any]:
    """
    One JSON Schema (2020-12) for any message of the given types (default: every
    registered type): the envelope's C{type} picks the definition it must match.
    """
    chosen = list(message_types) if message_types is not None else schema_types()
    names = sorted({cls.wire_name for cls in chosen})
    definitions = {cls.wire_name: cls for cls in schema_types()}
    definitions.update({cls.wire_name: cls for cls in chosen})

    def ref(name: str) -> str:
        return f"#/$defs/{_pointer_part(name)}"

    return {
        "$schema": DIALECT,
        "title": title,
        "description": "An scbus message envelope (docs/wire.md); its type selects the definition.",
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": names}},
        "allOf": [
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": {"$ref": ref(name)},
            }
            for name in names
        ],
        "$defs": {name: envelope_schema(definitions[name], ref) for name in sorted(definitions)},
    }


_ID = re.compile(r"[^A-Za-z0-9._-]")


def _key(name: str) -> str:
    """AsyncAPI component keys allow letters, digits, '.', '-' and '_'."""
    return _ID.sub("_", name)


def asyncapi_document(
    *,
    bus_name: str,
    version: str,
    apps: Mapping[str, Iterable[type[Message]]],
    amqp: Any = None,
    message_types: Iterable[type[Message]] | None = None,
) -> dict[str, Any]:
    """
    An AsyncAPI 3.0 document: a channel per type exchange and per app queue, and a
    receive operation per app on its queue, for the messages bound to it (its
    subscriptions, their subclasses, and the heartbeats the bus answers).

    @param apps: app name to the message classes it subscribes to.
    @param amqp: the AMQP settings, for the servers and vhost (None: the in-memory bus).
    """
    chosen = list(message_types) if message_types is not None else schema_types()
    vhost = amqp.vhost if amqp is not None else "/"
    by_name = {cls.wire_name: cls for cls in schema_types()}
    by_name.update({cls.wire_name: cls for cls in chosen})
    bound = {app: topology.binding_types(subscribed) for app, subscribed in apps.items()}
    for classes in bound.values():
        by_name.update({cls.wire_name: cls for cls in classes})

    def schema_ref(name: str) -> str:
        return f"#/components/schemas/{_key(name)}"

    schemas = {_key(name): envelope_schema(by_name[name], schema_ref) for name in sorted(by_name)}
    messages = {}
    channels: dict[str, Any] = {}
    for name in sorted(by_name):
        key = _key(name)
        message: dict[str, Any] = {
            "name": name,
            "title": name,
            "contentType": "application/json",
            "payload": {"$ref": schema_ref(name)},
            "bindings": {"amqp": {"messageType": name, "bindingVersion": AMQP_BINDING_VERSION}},
        }
        summary = _summary(by_name[name])
        if summary:
            message["summary"] = summary
        messages[key] = message
        exchange = topology.type_exchange(name)
        channels[f"type.{key}"] = {
            "address": exchange,
            "title": f"{name} messages",
            "description": f"The fanout exchange every {name} is published to; it routes to the queue of each app bound to it, or else to {topology.UNROUTED_EXCHANGE}.",
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
            "bindings": {"amqp": {
                "is": "routingKey",
                "exchange": {"name": exchange, "type": "fanout", "durable": True, "autoDelete": False, "vhost": vhost},
                "bindingVersion": AMQP_BINDING_VERSION,
            }},
        }
    operations: dict[str, Any] = {}
    for app in sorted(bound):
        queue = topology.app_queue(app)
        channel_key = f"app.{_key(app)}"
        keys = [_key(cls.wire_name) for cls in bound[app]]
        channels[channel_key] = {
            "address": queue,
            "title": f"{app}'s queue",
            "description": f"Bound to the exchanges of {', '.join(cls.wire_name for cls in bound[app])}; every process running {app} consumes it.",
            "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in keys},
            "bindings": {"amqp": {
                "is": "queue",
                "queue": {"name": queue, "durable": True, "exclusive": False, "autoDelete": False, "vhost": vhost},
                "bindingVersion": AMQP_BINDING_VERSION,
            }},
        }
        operations[f"{_key(app)}.receive"] = {
            "action": "receive",
            "title": f"{app} receives",
            "channel": {"$ref": f"#/channels/{channel_key}"},
            "messages": [{"$ref": f"#/channels/{channel_key}/messages/{key}"} for key in keys],
        }
    document: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": bus_name,
            "version": version,
            "description": "An scbus bus: messages are JSON envelopes (docs/wire.md), routed by type.",
        },
        "defaultContentType": "application/json",
    }
    if amqp is not None:
        document["servers"] = {
            f"broker{i}" if i else "broker": {
                "host": f"{address.host}:{address.port}",
                "protocol": "amqps" if address.tls else "amqp",
                "protocolVersion": "0.9.1",
                "pathname": "/" + vhost.lstrip("/"),
            }
            for i, address in enumerate(amqp.addresses)
        }
    document["channels"] = channels
    document["operations"] = operations
    document["components"] = {"schemas": schemas, "messages": messages}
    return document
