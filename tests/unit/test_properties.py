"""
Property-based: arbitrary bytes and JSON at the decoder and through the delivery path.
No exception escapes; every body is either handled or dead-lettered, never acknowledged
silently.
"""

import dataclasses
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher

from scbus import codec
from scbus.errors import DecodeError
from scbus.message import Message
from scbus.testing import BusHarness


class Item(Message, wire_name="prop.Item"):
    name: str
    count: int
    tags: list[str] = dataclasses.field(default_factory=list)
    extra: dict[str, float] | None = None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)

envelopes = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["prop.Item", "prop.Unknown", "scbus.Heartbeat"]) | st.text(max_size=5) | json_values,
        "id": st.text(min_size=1, max_size=8) | json_values,
        "created_at": st.floats(allow_nan=False) | json_values,
        "correlation_id": st.none() | st.text(max_size=8) | json_values,
        "data": st.fixed_dictionaries(
            {}, optional={"name": json_values, "count": json_values, "tags": json_values, "extra": json_values}
        ) | json_values,
    },
)

items = st.builds(
    Item,
    name=st.text(),
    count=st.integers(),
    tags=st.lists(st.text(), max_size=3),
    extra=st.none() | st.dictionaries(st.text(max_size=5), st.floats(allow_nan=False, allow_infinity=False), max_size=3),
)


# No per-example deadline: timing on a loaded CI machine is not what is tested here.
@settings(deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_a_decode_error(body):
    try:
        codec.decode(body)
    except DecodeError as e:
        assert e.reason and str(e)


@settings(deadline=None)
@given(envelopes)
def test_arbitrary_envelopes_decode_or_raise_a_decode_error(envelope):
    body = json.dumps(envelope).encode()
    try:
        message = codec.decode(body)
    except DecodeError:
        return
    assert isinstance(message, Message)


@settings(deadline=None)
@given(items)
def test_every_valid_message_round_trips(item):
    back = codec.decode(codec.encode(item))
    assert back == item and back.id == item.id


bodies = st.lists(
    st.one_of(
        st.binary(max_size=100),
        envelopes.map(lambda e: json.dumps(e).encode()),
        items.map(codec.encode),
    ),
    max_size=25,
)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=60)
@given(bodies)
def test_every_body_is_handled_or_dead_lettered(batch):
    failures = []

    def watch(event):
        if event.get("log_failure") is not None or event.get("isError"):
            failures.append(event)

    globalLogPublisher.addObserver(watch)
    try:
        h = BusHarness()
        handled = []
        h.add_app("items", lambda n, r, c: {Item: lambda m: handled.append(m.id)})
        h.start()
        for body in batch:
            h.transport.publish_raw(body, "prop.Item")
        h.flush()
    finally:
        globalLogPublisher.removeObserver(watch)
    dead = [e for e in h.transport.dead_letters if e.app_name == "items"]
    answered = [r for r in h.sent if r.wire_name == "scbus.HeartbeatResponse"]
    assert len(handled) + len(answered) + len(dead) == len(batch)
    assert h.transport.unacked("items") == 0 and not h.transport._queue("items").ready
    assert not failures, failures


def _reference_short_string(value, name, wire_name):
    """An id or correlation id must fit an AMQP short string: 255 bytes of UTF-8."""
    from scbus.errors import MalformedMessage

    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise MalformedMessage(f"{wire_name}: '{name}' is not UTF-8 text (it holds a lone surrogate)") from None
    if size > 255:
        raise MalformedMessage(
            f"{wire_name}: '{name}' is {size} bytes of UTF-8, over the limit of 255 (an AMQP short string)"
        )


def _reference_timestamp(value, wire_name):
    """created_at must be a finite number that fits an AMQP timestamp (unsigned 64-bit seconds)."""
    from scbus.errors import MalformedMessage

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedMessage(f"{wire_name}: 'created_at' must be a number (Unix time)")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if math.isnan(seconds) or math.isinf(seconds):
        raise MalformedMessage(f"{wire_name}: 'created_at' must be a finite number (Unix time)")
    if seconds < 0 or int(seconds) >= 2**64:
        shown = repr(value) if len(repr(value)) <= 30 else f"{seconds:.6g}"
        raise MalformedMessage(
            f"{wire_name}: 'created_at' is {shown}: it must be at least 0 and below 2**64 "
            "(Unix time in seconds, an AMQP timestamp)"
        )
    return seconds


def _reference_from_dict(envelope):
    """
    The field-by-field decoder that Message.from_dict replaced with a faster one: the
    oracle the fast one must agree with, outcome for outcome and word for word.
    """
    from scbus.errors import FieldTypeError, MalformedMessage, MissingField, UnknownMessageType
    from scbus.message import _defaults, _plan, lookup

    if not isinstance(envelope, dict):
        raise MalformedMessage(f"a message must be a JSON object, got {type(envelope).__name__}")
    wire_name = envelope.get("type")
    if not isinstance(wire_name, str):
        raise MalformedMessage("the envelope has no string 'type'")
    target = lookup(wire_name)
    if not issubclass(target, Message):
        raise UnknownMessageType(f"message type {wire_name!r} is not a 'scbus.Message' message")
    message_id = envelope.get("id")
    if not isinstance(message_id, str) or not message_id:
        raise MalformedMessage(f"{wire_name}: the envelope has no string 'id'")
    _reference_short_string(message_id, "id", wire_name)
    created_at = _reference_timestamp(envelope.get("created_at"), wire_name)
    correlation_id = envelope.get("correlation_id")
    if correlation_id is not None and not isinstance(correlation_id, str):
        raise MalformedMessage(f"{wire_name}: 'correlation_id' must be a string or null")
    if correlation_id is not None:
        _reference_short_string(correlation_id, "correlation_id", wire_name)
    data = envelope.get("data", {})
    if not isinstance(data, dict):
        raise MalformedMessage(f"{wire_name}: 'data' must be a JSON object")
    plan = _plan(target)
    missing = plan.required.difference(data)
    if missing:
        raise MissingField(f"{wire_name}: missing field(s) {', '.join(sorted(missing))}")
    values = {"id": message_id, "created_at": created_at, "correlation_id": correlation_id}
    defaults = _defaults(target)
    for name, check in plan.fields:
        if name in data:
            try:
                values[name] = check(data[name], name)
            except FieldTypeError as e:
                raise FieldTypeError(f"{wire_name}: {e}") from None
        else:
            values[name] = defaults[name]()
    return target, values


def _outcome(fn, *args):
    try:
        result = fn(*args)
    except Exception as e:
        return ("raised", type(e), str(e))
    if isinstance(result, Message):
        result = (type(result), dict(vars(result)))
    return ("built", result)


# Mostly valid, so that every field's check is reached; each part may be anything.
item_fields = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=5) | json_values,
        "count": st.integers() | json_values,
        "tags": st.lists(st.text(max_size=3) | json_values, max_size=3) | json_values,
        "extra": st.none() | st.dictionaries(st.text(max_size=3), st.floats() | json_values, max_size=3) | json_values,
    },
)
#: Ids around the 255-byte limit: ASCII, 2-, 3- and 4-byte characters, lone surrogates.
near_limit_ids = st.tuples(st.sampled_from(["x", "é", "☃", "😀", "\udc80"]), st.integers(0, 260), st.text(max_size=3)).map(
    lambda t: t[0] * t[1] + t[2]
)
#: The ends of the AMQP timestamp range, as floats and as integers.
timestamp_ends = st.sampled_from(
    [0, 0.0, -0.0, -1, -1e-300, 2**64 - 1, 2**64, 2**64 - 2048.0, 2.0**64, 2**63, 1e19, 1e20, 10**400]
)
near_valid = st.fixed_dictionaries(
    {
        "type": st.just("prop.Item"),
        "id": st.just("x") | near_limit_ids | json_values,
        "created_at": st.floats() | st.integers() | st.just(1.5) | timestamp_ends,
        "correlation_id": st.none() | st.text(max_size=3) | near_limit_ids,
        "data": item_fields,
    }
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_valid | envelopes | json_values | st.floats() | st.integers())
def test_from_dict_agrees_with_the_field_by_field_reference(envelope):
    expected = _outcome(_reference_from_dict, envelope)
    assert _outcome(Message.from_dict, envelope) == expected


@settings(deadline=None)
@given(
    name=st.text(max_size=5) | json_values,
    count=st.integers() | json_values,
    tags=st.lists(st.text(max_size=3) | json_values, max_size=3) | json_values,
)
def test_building_a_message_checks_fields_as_decoding_does(name, count, tags):
    expected = _outcome(
        _reference_from_dict,
        {"type": "prop.Item", "id": "x", "created_at": 1.0, "data": {"name": name, "count": count, "tags": tags}},
    )
    built = _outcome(lambda: Item(name=name, count=count, tags=tags, id="x", created_at=1.0))
    if expected[0] == "raised":
        assert built[0] == "raised" and built[1] is expected[1]
        assert built[2].split(": ", 1)[1] == expected[2].split(": ", 1)[1]  # class name vs wire name
    else:
        assert built == expected
