"""
Property-based: arbitrary bytes and JSON at the decoder and through the delivery path.
No exception escapes; every body is either handled or dead-lettered, never acknowledged
silently.
"""

import dataclasses
import json

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
