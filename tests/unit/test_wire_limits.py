"""
The wire's limits on a message's own fields, where messages are built, decoded and
encoded: ids and correlation ids at most 255 bytes of UTF-8 (AMQP short strings),
created_at within the AMQP timestamp range (unsigned 64-bit seconds), wire names that
leave their exchange's name a short string; and a content header over one frame refused
at publish, by both clients.
"""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scbus import codec
from scbus.errors import EncodeError, MalformedMessage
from scbus.message import MAX_ID_BYTES, Message, envelope_problem, is_wire_id
from scbus.transports.amqp.client import Properties
from scbus.transports.amqp.pika_frames import HeaderTooLarge, publish_frames


class Limited(Message, wire_name="test.limits.Limited"):
    n: int


#: The largest float below 2**64.
LAST_TIMESTAMP = 2.0**64 - 2048


def envelope(**fields):
    return {"type": Limited.wire_name, "id": "i", "created_at": 1.0, "correlation_id": None, "data": {"n": 1}, **fields}


def body_of(**fields) -> bytes:
    return json.dumps(envelope(**fields)).encode()


GOOD_IDS = ["x", "x" * 255, "é" * 127 + "x", "☃" * 85, "😀" * 63 + "xyz", "\x00"]
BAD_IDS = [("x" * 256, "256 bytes"), ("é" * 128, "256 bytes"), ("😀" * 64, "256 bytes"), ("x" * 300, "300 bytes"),
           ("a\udc80", "lone surrogate"), ("\ud83d", "lone surrogate")]
GOOD_TIMES = [0, 0.0, -0.0, 1, 1.5, 2**63, 1e19, LAST_TIMESTAMP]
BAD_TIMES = [-1, -5, -1e-300, -0.5, 2**64, 2**64 - 1, 2.0**64, 1e20, 10**30]


@pytest.mark.parametrize("value", GOOD_IDS)
def test_ids_and_correlation_ids_up_to_255_bytes_travel(value):
    for field in ("id", "correlation_id"):
        decoded = codec.decode(body_of(**{field: value}))
        assert getattr(decoded, field) == value
        built = Limited(n=1, **{field: value})
        assert codec.decode(codec.encode(built)) == built and getattr(built, field) == value


@pytest.mark.parametrize("value, words", BAD_IDS)
def test_ids_and_correlation_ids_past_255_bytes_are_refused_naming_the_field(value, words):
    for field in ("id", "correlation_id"):
        with pytest.raises(MalformedMessage) as decoding:
            codec.decode(body_of(**{field: value}))
        with pytest.raises(MalformedMessage) as building:
            Limited(n=1, **{field: value})
        for error in (decoding.value, building.value):
            assert f"'{field}'" in str(error) and words in str(error) and "\n" not in str(error)
            assert error.reason == "malformed"


@pytest.mark.parametrize("value", GOOD_TIMES)
def test_created_at_within_the_timestamp_range_travels(value):
    decoded = codec.decode(body_of(created_at=value))
    assert decoded.created_at == float(value) and type(decoded.created_at) is float
    built = Limited(n=1, created_at=value)
    assert built.created_at == float(value) and type(built.created_at) is float
    assert codec.decode(codec.encode(built)).created_at == built.created_at


@pytest.mark.parametrize("value", BAD_TIMES)
def test_created_at_outside_the_timestamp_range_is_refused(value):
    with pytest.raises(MalformedMessage, match="'created_at' is .*: it must be at least 0 and below 2\\*\\*64"):
        codec.decode(body_of(created_at=value))
    with pytest.raises(MalformedMessage, match="'created_at'"):
        Limited(n=1, created_at=value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "now", None])
def test_created_at_that_is_not_a_finite_number_is_refused_when_built_too(value):
    with pytest.raises(MalformedMessage, match="'created_at' must be a (finite )?number"):
        Limited(n=1, created_at=value)


@pytest.mark.parametrize("field, value, words", [
    ("created_at", -1.0, "'created_at' is -1.0"),
    ("created_at", 2.0**64, "below 2**64"),
    ("id", "x" * 256, "'id' is 256 bytes"),
    ("id", "", "no string 'id'"),
    ("correlation_id", "é" * 200, "'correlation_id' is 400 bytes"),
    ("correlation_id", 5, "'correlation_id' must be a string or null"),
])
def test_a_message_changed_after_it_was_built_is_refused_at_encode(field, value, words):
    message = Limited(n=1)
    setattr(message, field, value)  # as a handler may, on the message it returns
    assert words in (envelope_problem(message) or "")
    with pytest.raises(EncodeError) as info:
        codec.encode(message)
    assert str(info.value).startswith("test.limits.Limited: cannot encode: ") and words in str(info.value)


def test_is_wire_id_says_what_can_travel():
    assert all(is_wire_id(v) for v in GOOD_IDS)
    assert not any(is_wire_id(v) for v, _ in BAD_IDS)
    assert not is_wire_id(None) and not is_wire_id(b"x") and not is_wire_id("")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_the_id_limit_is_the_utf8_size(text):
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        size = None
    fits = bool(text) and size is not None and size <= MAX_ID_BYTES
    assert is_wire_id(text) == fits
    try:
        codec.decode(body_of(id=text))
        decoded = True
    except MalformedMessage:
        decoded = False
    assert decoded == fits


def test_a_wire_name_whose_exchange_name_would_pass_255_bytes_is_refused_at_class_definition():
    class Longest(Message, wire_name="w" * 244):
        pass

    assert Longest.wire_name == "w" * 244
    with pytest.raises(TypeError, match="245 bytes of UTF-8: at most 244"):
        class TooLong(Message, wire_name="w" * 245):
            pass
    with pytest.raises(TypeError, match="246 bytes of UTF-8"):
        class TooLongInBytes(Message, wire_name="é" * 123):
            pass


# --- content headers over one frame ---------------------------------------------------------

#: RabbitMQ's default frame_max less the frame's own 8 bytes.
MAX_PAYLOAD = 131_072 - 8


def header_with(size: int) -> Properties:
    """Properties whose content header is exactly C{size} bytes (a padded header table)."""
    base = Properties(content_type="application/json", delivery_mode=2, headers={"pad": ""})
    empty = content_header_size(publish_frames(1, "", "q", False, base, b"", MAX_PAYLOAD))
    return Properties(content_type="application/json", delivery_mode=2, headers={"pad": "p" * (size - empty)})


def content_header_size(frames: bytes) -> int:
    _, _, method_size = struct.unpack_from(">BHI", frames)
    kind, _, size = struct.unpack_from(">BHI", frames, 8 + method_size)
    assert kind == 2
    return size


def test_pika_frames_refuses_a_content_header_over_one_frame():
    fits = header_with(MAX_PAYLOAD)
    frames = publish_frames(1, "", "q", False, fits, b"{}", MAX_PAYLOAD)
    assert content_header_size(frames) == MAX_PAYLOAD
    with pytest.raises(HeaderTooLarge, match=f"is {MAX_PAYLOAD + 1} bytes, over the {MAX_PAYLOAD} one frame carries"):
        publish_frames(1, "", "q", False, header_with(MAX_PAYLOAD + 1), b"{}", MAX_PAYLOAD)


def tx_channel(frame_max: int = 131_072):
    pytest.importorskip("txamqp")
    from twisted.internet.defer import succeed
    from twisted.internet.task import Clock

    from scbus.transports.amqp.txamqp_client import TxChannel
    from scbus.transports.amqp.txamqp_spec import load_spec

    published = []
    txamqp_channel = SimpleNamespace(id=1, basic_publish=lambda **kw: published.append(kw) or succeed(None))
    connection = SimpleNamespace(
        _watch_clock=Clock(), outgoing=SimpleNamespace(pending=[]), transport=None, spec=load_spec(),
        MAX_LENGTH=frame_max,
    )
    return TxChannel(connection=connection, channel=txamqp_channel), published


def test_txamqp_refuses_a_content_header_over_one_frame_and_writes_one_that_fits():
    from scbus.transports.amqp.txamqp_compat import header_size

    channel, published = tx_channel()
    from scbus.transports.amqp.txamqp_client import _PROPERTY_NAMES

    klass = channel._connection.spec.classes.byname["basic"]
    fits = header_with(MAX_PAYLOAD)
    # txAMQP's encoding of these properties has the size pika's has
    wire = {w: getattr(fits, a) for a, w in _PROPERTY_NAMES.items() if getattr(fits, a) is not None}
    assert header_size(klass, 2, wire) == MAX_PAYLOAD
    channel.publish("", "q", b"{}", fits)
    assert len(published) == 1
    with pytest.raises(HeaderTooLarge, match=f"is {MAX_PAYLOAD + 1} bytes"):
        channel.publish("", "q", b"{}", header_with(MAX_PAYLOAD + 1))
    assert len(published) == 1  # nothing written for the refused one


def test_txamqp_refuses_a_header_table_it_cannot_encode_at_publish():
    channel, published = tx_channel()
    with pytest.raises(TypeError, match="cannot put a object in an AMQP field table"):
        channel.publish("", "q", b"{}", Properties(headers={"x": object()}))
    assert published == []


# --- a broker that offers no frame size limit ------------------------------------------------


class _TuneChannel:
    def __init__(self):
        self.tuned = None

    def connection_tune_ok(self, *args):
        self.tuned = args


@pytest.mark.parametrize("offered, asked", [(0, 131_072), (4096, 4096), (131_072, 131_072), (1_048_576, 1_048_576)])
def test_txamqp_asks_for_a_frame_size_when_the_broker_offers_no_limit(offered, asked):
    pytest.importorskip("txamqp")
    from scbus.transports.amqp.txamqp_compat import FixedDelegate

    started = []
    client = SimpleNamespace(MAX_LENGTH=4096, heartbeatInterval=10, started=SimpleNamespace(fire=lambda: started.append(1)))
    delegate = FixedDelegate()
    delegate.client = client
    channel = _TuneChannel()
    delegate.connection_tune(channel, SimpleNamespace(channel_max=0, frame_max=offered))
    assert channel.tuned == (0, asked, 10)
    assert client.MAX_LENGTH == asked and started == [1]


def test_txamqp_splits_a_body_by_the_frame_size_asked_for_when_unlimited():
    pytest.importorskip("txamqp")
    from scbus.transports.amqp.txamqp_compat import FixedDelegate

    channel, published = tx_channel(frame_max=0)
    delegate = FixedDelegate()
    delegate.client = channel._connection
    channel._connection.heartbeatInterval = 0
    channel._connection.started = SimpleNamespace(fire=lambda: None)
    delegate.connection_tune(_TuneChannel(), SimpleNamespace(channel_max=0, frame_max=0))
    written = []
    channel._connection.transport = SimpleNamespace(write=written.append)
    body = b"z" * (3 * 131_072)
    channel.publish("x", "", body, Properties(message_id="m"))
    [frames] = written
    sizes = []
    while frames:
        kind, _, size = struct.unpack_from(">BHI", frames)
        sizes.append((kind, size))
        frames = frames[8 + size:]
    bodies = [size for kind, size in sizes if kind == 3]
    assert sum(bodies) == len(body) and max(bodies) == 131_072 - 8


# --- publishing from outside a bus ------------------------------------------------------------


@pytest.mark.parametrize("field, value, words", [
    ("created_at", -5.0, "'created_at' is -5.0"), ("id", "x" * 300, "'id' is 300 bytes"),
    ("correlation_id", "☃" * 86, "'correlation_id' is 258 bytes"),
])
def test_the_publishers_refuse_a_message_past_the_limits_in_one_line_before_connecting(field, value, words):
    from twisted.internet.task import Clock

    from scbus.client import Publisher, TwistedPublisher

    message = Limited(n=1)
    setattr(message, field, value)
    unreachable = "amqp://guest:guest@127.0.0.1:1/%2F"  # refused before any connection is tried
    publisher = Publisher(unreachable)
    with pytest.raises(EncodeError) as info:
        publisher.publish(message)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert publisher._connection is None
    failed = TwistedPublisher(unreachable, reactor=Clock()).publish(message)
    errors = []
    failed.addErrback(errors.append)
    [failure] = errors
    assert failure.check(EncodeError) and words in failure.getErrorMessage()
