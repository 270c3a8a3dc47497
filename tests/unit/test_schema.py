"""
The JSON Schema of the envelopes says what the decoder does: real encoded messages of
every example type validate, and for a range of wrong values the schema and the decoder
give the same verdict. The AsyncAPI document's references all resolve.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import json
import math

import jsonschema
import pytest

import apps
from apps.clock import Tick
from apps.squares import Milestone, Squared
from scbus import codec
from scbus.errors import DecodeError
from scbus.message import AppErrorOccurredMessage, HeartbeatMessage, HeartbeatResponseMessage, Message
from scbus.schema import asyncapi_document, json_schema, schema_types


class Point(Message, wire_name="test.schema.Point"):
    x: int
    y: float = 0.0


class Point3(Point, wire_name="test.schema.Point3"):
    z: int


class Shape(Message, wire_name="test.schema.Shape"):
    points: list[Point]
    centre: Point | None = None
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    weight: int | str = 0
    extra: object = None


EXAMPLES = [
    Tick(count=3),
    Squared(number=3, square=9),
    Milestone(number=10, note="ten"),
    HeartbeatMessage(app_name="squares"),
    HeartbeatMessage(),
    HeartbeatResponseMessage(app_name="squares", heartbeat_id="h1", queued_seconds=0.5, handled=3),
    AppErrorOccurredMessage(
        app_name="flaky", message=Tick(count=7).to_dict(), error="boom", error_type="ValueError",
        traceback=[{"file": "f.py", "line": 1, "function": "f", "source": "x"}],
        log=[{"time": 1.0, "level": "info", "logger": "l", "message": "m"}], interval=None,
    ),
    Shape(points=[Point(x=1), Point3(x=1, y=2.5, z=3)], centre=Point(x=0), labels={"a": "b"}, weight="heavy"),
]

# Values a field might wrongly (or rightly) hold. Integral floats are left out: JSON
# Schema cannot tell 1.0 from 1 (see scbus.schema), the decoder refuses 1.0 for an int.
VALUES = [0, -5, 2.5, "x", "", True, False, None, [], [1], ["a"], {}, {"a": 1}, {"a": "b"}, math.inf, 10**30]


@pytest.fixture(scope="module")
def validator():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def decodes(envelope: dict) -> bool:
    try:
        codec.decode(json.dumps(envelope).encode("utf-8"))
    except DecodeError:
        return False
    return True


def test_every_example_type_is_in_the_schema_and_tested_here():
    for module in pkgutil.iter_modules(apps.__path__):
        importlib.import_module(f"apps.{module.name}")
    names = {cls.wire_name for cls in schema_types()}
    tested = {type(m).wire_name for m in EXAMPLES}
    assert tested <= names
    assert "scbus.Message" not in names
    shipped = {cls.wire_name for cls in schema_types() if cls.__module__.split(".")[0] in ("apps", "scbus")}
    assert shipped <= tested, f"example types without a real message here: {shipped - tested}"


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).wire_name)
def test_real_encoded_messages_validate(validator, message):
    envelope = json.loads(codec.encode(message))
    assert list(validator.iter_errors(envelope)) == []


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).wire_name)
def test_schema_and_decoder_agree_on_each_field(validator, message):
    envelope = json.loads(codec.encode(message))
    checked = 0
    for name in envelope["data"]:
        for value in VALUES:
            if value is math.inf:
                continue  # json.dumps would write Infinity; tested on its own below
            changed = json.loads(json.dumps(envelope))
            changed["data"][name] = value
            assert validator.is_valid(changed) == decodes(changed), (name, value)
            checked += 1
        missing = json.loads(json.dumps(envelope))
        del missing["data"][name]
        assert validator.is_valid(missing) == decodes(missing), (name, "missing")
    for key, value in [("id", ""), ("id", 5), ("created_at", True), ("created_at", "now"), ("correlation_id", 3), ("data", [])]:
        changed = dict(envelope, **{key: value})
        assert not validator.is_valid(changed) and not decodes(changed), key
    assert checked > 0


@pytest.mark.parametrize(
    "envelope, why",
    [
        ({"type": "clock.Tick", "id": "a", "created_at": 1, "data": {"count": "3"}}, "str for int"),
        ({"type": "clock.Tick", "id": "a", "created_at": 1, "data": {"count": True}}, "bool for int"),
        ({"type": "clock.Tick", "id": "a", "created_at": 1, "data": {}}, "missing field"),
        ({"type": "clock.Tick", "id": "a", "created_at": 1}, "no data at all"),
        ({"type": "clock.Tock", "id": "a", "created_at": 1, "data": {"count": 3}}, "unknown type"),
        ({"id": "a", "created_at": 1, "data": {"count": 3}}, "no type"),
        ({"type": "squares.Squared", "id": "a", "created_at": 1, "data": {"number": 2, "square": 4.5}}, "float for int"),
        ({"type": "test.schema.Shape", "id": "a", "created_at": 1, "data": {"points": [{"type": "test.schema.Point", "id": "p", "created_at": 1, "data": {"x": "1"}}]}}, "bad nested field"),
        ({"type": "test.schema.Shape", "id": "a", "created_at": 1, "data": {"points": [{"type": "clock.Tick", "id": "p", "created_at": 1, "data": {"count": 1}}]}}, "nested message of another type"),
        ({"type": "test.schema.Shape", "id": "a", "created_at": 1, "data": {"points": [{"x": 1}]}}, "nested data without its envelope"),
        ({"type": "test.schema.Shape", "id": "a", "created_at": 1, "data": {"points": [], "labels": {"a": 1}}}, "dict value of the wrong type"),
    ],
)
def test_invalid_messages_fail(validator, envelope, why):
    assert not validator.is_valid(envelope), why
    assert not decodes(envelope), why


def test_a_subclass_envelope_is_accepted_where_its_base_is_declared(validator):
    point3 = Point3(x=1, z=2).to_dict()
    envelope = Shape(points=[], centre=Point(x=1)).to_dict()
    envelope["data"]["centre"] = point3
    assert validator.is_valid(envelope) and decodes(envelope)


def test_non_finite_numbers_fail(validator):
    # Python's json reads 1e999 as inf: the schema keeps numbers finite, as wire.md says.
    envelope = json.loads('{"type": "squares.Milestone", "id": "a", "created_at": 1e999, "data": {"number": 1, "note": "n"}}')
    assert math.isinf(envelope["created_at"])
    assert not validator.is_valid(envelope)
    response = HeartbeatResponseMessage(app_name="a", heartbeat_id="h").to_dict()
    response["data"]["queued_seconds"] = -math.inf
    assert not validator.is_valid(response)


def test_unknown_fields_are_allowed_as_the_decoder_ignores_them(validator):
    envelope = Tick(count=1).to_dict()
    envelope["data"]["later"] = "added by a newer producer"
    envelope["trace"] = "x"
    assert validator.is_valid(envelope) and decodes(envelope)


def _resolve(document: dict, pointer: str):
    assert pointer.startswith("#/"), pointer
    node = document
    for part in pointer[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_asyncapi_document_has_a_channel_per_type_and_an_operation_per_app():
    from scbus.transports.amqp.settings import parse_amqp_settings

    settings = parse_amqp_settings({"url": "amqp://u:secret@broker.example:5673/prod"})
    apps = {"squares": [Tick, HeartbeatMessage], "shapes": [Point, HeartbeatMessage]}
    document = asyncapi_document(bus_name="test", version="1", apps=apps, amqp=settings)
    assert document["asyncapi"] == "3.0.0"
    addresses = {channel["address"] for channel in document["channels"].values()}
    for cls in schema_types():
        assert f"scbus.type.{cls.wire_name}" in addresses
    assert {"scbus.app.squares", "scbus.app.shapes"} <= addresses
    receive = document["operations"]["shapes.receive"]
    assert receive["action"] == "receive"
    received = {ref.rsplit("/", 1)[1] for ref in (m["$ref"] for m in receive["messages"])}
    # Bound as the transport binds: the subscribed class and its subclasses, and heartbeats.
    assert received == {"test.schema.Point", "test.schema.Point3", "scbus.Heartbeat"}
    assert document["servers"]["broker"] == {
        "host": "broker.example:5673", "protocol": "amqp", "protocolVersion": "0.9.1", "pathname": "/prod",
    }
    assert "secret" not in json.dumps(document)
    for ref in _refs(document):
        assert _resolve(document, ref) is not None
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft7Validator.check_schema(schema)  # AsyncAPI's schema format builds on draft-07


def test_asyncapi_payloads_validate_real_messages():
    document = asyncapi_document(bus_name="test", version="1", apps={})
    components = document["components"]["schemas"]
    for message in EXAMPLES:
        envelope = json.loads(codec.encode(message))
        # The payload's references point into the document: validate with it as the root.
        validator = jsonschema.Draft7Validator(
            {"$ref": f"#/components/schemas/{type(message).wire_name}", "components": document["components"]}
        )
        assert list(validator.iter_errors(envelope)) == [], type(message).wire_name
        if components[type(message).wire_name]["properties"]["data"].get("required"):
            envelope["data"] = {"not": "it"}
            assert not validator.is_valid(envelope)


def test_a_type_that_never_decodes_matches_nothing():
    # A field type JSON cannot carry is refused where the class is defined; one naming a
    # class defined further down waits for its first use, and one never defined leaves
    # the class registered, never decoding.
    class Unusable(Message, wire_name="test.schema.Unusable"):
        tags: NeverDefined  # noqa: F821

    envelope = {"type": "test.schema.Unusable", "id": "a", "created_at": 1, "data": {"tags": []}}
    assert not decodes(envelope)
    validator = jsonschema.Draft202012Validator(json_schema())
    assert not validator.is_valid(envelope)
    assert validator.is_valid(Tick(count=1).to_dict())
