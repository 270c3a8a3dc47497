"""
The in-memory hot path does less than a full JSON round trip where it can prove the
result is the same: the encoder built once, the scanner called directly, and receivers'
copies of flat messages built from a snapshot of their values instead of decoding. Each
is held here against the plain path it replaces, outcome for outcome.
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from scbus import codec
from scbus.errors import FieldTypeError
from scbus.message import Message, from_snapshot, snapshot
from scbus.transports.local import SNAPSHOT_DEPTH, LocalTransport


class Flat(Message, wire_name="test.copies.Flat"):
    n: int
    name: str
    ratio: float
    on: bool = False


class Nested(Message, wire_name="test.copies.Nested"):
    tags: list[str]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)

flats = st.builds(
    Flat,
    n=st.integers(),
    name=st.text(),
    ratio=st.floats(allow_nan=False, allow_infinity=False),
    on=st.booleans(),
)

# JSONEncoder.encode as codec.encode used it for every body: the oracle.
reference_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def outcome(fn, *args):
    try:
        return ("made", fn(*args))
    except Exception as e:
        return ("raised", type(e), str(e))


def decoded_values(message):
    back = codec.decode(codec.encode(message))
    return type(back), list(vars(back).items()), [type(v) for v in vars(back).values()]


def copied_values(message):
    copy = from_snapshot(snapshot(message))
    return type(copy), list(vars(copy).items()), [type(v) for v in vars(copy).values()]


@settings(deadline=None)
@given(json_values)
def test_the_encoder_built_once_writes_what_json_encoder_writes(value):
    envelope = {"type": "t", "id": "i", "created_at": 1.5, "correlation_id": None, "data": {"v": value}}
    assert outcome(codec._dumps, envelope) == outcome(reference_encoder.encode, envelope)


def test_a_circular_value_is_refused_with_the_encoders_own_words():
    loop: list = []
    loop.append(loop)
    envelope = {"type": "t", "data": {"v": loop}}
    assert outcome(codec._dumps, envelope) == ("raised", ValueError, "Circular reference detected")


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    json_values.map(lambda v: json.dumps(v, allow_nan=True))
    | st.text(max_size=40)
    | st.sampled_from([" {}", "{} ", "{}x", "{} {}", "", " ", '{"a": 1, "a": 2}', "[1e999]", "NaN", "{\"a\": Infinity}"])
)
def test_the_scanner_called_directly_reads_and_refuses_as_the_decoder_does(text):
    assert outcome(codec._parse, text) == outcome(codec._decoder.decode, text)


@settings(deadline=None)
@given(flats)
def test_a_copy_from_a_snapshot_is_what_decoding_gives_value_for_value_and_type_for_type(message):
    assert copied_values(message) == decoded_values(message)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flats, st.sampled_from(["n", "name", "ratio", "on", "id", "created_at", "correlation_id"]), json_values)
def test_a_field_changed_after_construction_is_snapshotted_only_when_decoding_agrees(message, field, value):
    try:
        setattr(message, field, value)
    except FieldTypeError:
        # Refused at assignment; a value written past that check must still be caught.
        message.__dict__[field] = value
    try:
        codec.encode(message)
    except Exception:
        return  # refused at the sender: nothing is queued, nothing to copy
    # No snapshot is always safe (the body is decoded); a snapshot must give exactly what
    # decoding gives, and so never exist for a body that decoding refuses.
    if snapshot(message) is not None:
        assert outcome(copied_values, message) == outcome(decoded_values, message)


def test_messages_that_are_not_flat_are_not_snapshotted():
    assert snapshot(Nested(tags=["a"])) is None
    wrong = Flat(n=1, name="a", ratio=1.0)
    wrong.__dict__["n"] = True  # a bool where an int is declared (past the assignment check)
    assert snapshot(wrong) is None


class OwnEnvelope(Message, wire_name="test.copies.OwnEnvelope"):
    n: int

    def to_dict(self):
        envelope = super().to_dict()
        envelope["data"]["n"] = self.n * 2
        return envelope


def test_a_class_that_writes_its_own_envelope_is_decoded_from_its_body():
    transport = transport_with("a", [OwnEnvelope])
    transport.send_now(OwnEnvelope(n=2))
    assert snapshot(OwnEnvelope(n=2)) is None
    assert transport.take_ready("a").message.n == 4


def transport_with(app, types, **kwargs):
    transport = LocalTransport(Clock(), **kwargs)
    transport.startService()
    transport.setup(app, types)
    return transport


def test_a_receiver_gets_its_own_copy_made_when_the_message_was_sent():
    transport = transport_with("a", [Flat])
    transport.setup("b", [Flat])
    sent = Flat(n=1, name="x", ratio=0.5)
    transport.send_now(sent)
    sent.n = 2
    first, second = transport.take_ready("a"), transport.take_ready("b")
    assert first.message.n == second.message.n == 1
    assert first.message is not second.message and first.message is not sent
    first.message.name = "changed"
    assert second.message.name == "x"


def test_a_wrong_typed_field_written_past_the_checks_is_still_dead_lettered():
    transport = transport_with("a", [Flat])
    sent = Flat(n=1, name="x", ratio=0.5)
    sent.__dict__["n"] = True  # past the assignment check, which refuses it
    transport.send_now(sent)
    assert transport.take_ready("a") is None
    [entry] = transport.dead_letters
    assert entry.code == "wrong-type" and "field 'n'" in entry.reason


def test_a_limit_lowered_after_sending_still_applies_at_delivery():
    transport = transport_with("a", [Flat])
    transport.send_now(Flat(n=1, name="x", ratio=0.5))
    transport.max_nesting = 1
    assert transport.take_ready("a") is None
    transport.max_nesting = codec.DEFAULT_MAX_NESTING
    transport.send_now(Flat(n=2, name="x", ratio=0.5))
    transport.max_message_size = 10
    assert transport.take_ready("a") is None
    assert [e.code for e in transport.dead_letters] == ["malformed", "too-large"]


def test_a_deep_queue_keeps_bodies_alone():
    transport = transport_with("a", [Flat])
    for n in range(SNAPSHOT_DEPTH + 5):
        transport.send_now(Flat(n=n, name="x", ratio=0.5))
    entries = list(transport._queue("a").ready)
    assert all(taken is not None for _, _, taken, _ in entries[:SNAPSHOT_DEPTH])
    assert all(taken is None for _, _, taken, _ in entries[SNAPSHOT_DEPTH:])
    assert [transport.take_ready("a").message.n for _ in range(len(entries))] == list(range(len(entries)))
