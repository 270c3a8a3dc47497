"""
The one-write publish holds to pika's own bytes: pika's C{Connection._send_message}
(run on a stand-in that captures what it would write) is the oracle, for generated
properties, bodies and frame sizes, and for what it refuses.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pika
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pika import spec
from pika.connection import Connection

from scbus.transports.amqp.client import Properties
from scbus.transports.amqp.pika_frames import HeaderTooLarge, publish_frames


def pika_bytes(channel, exchange, routing_key, mandatory, props: Properties, body, body_max):
    written: list[bytes] = []
    stand_in = SimpleNamespace(_body_max_length=body_max, _output_marshaled_frames=written.extend)
    pika_props = pika.BasicProperties(**{k: getattr(props, k) for k in Properties.__dataclass_fields__})
    method = spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory)
    Connection._send_message(stand_in, channel, method, (pika_props, body))  # type: ignore[arg-type]
    return b"".join(written)


short_text = st.one_of(st.none(), st.text(max_size=90), st.binary(max_size=90))
header_values = st.one_of(
    st.text(max_size=20), st.integers(-(2**63), 2**63 - 1), st.booleans(), st.none(), st.binary(max_size=10),
)
properties = st.builds(
    Properties,
    content_type=st.one_of(short_text, st.just("application/json"), st.text(min_size=256, max_size=300)),
    delivery_mode=st.one_of(st.none(), st.integers(0, 300)),
    message_id=short_text,
    correlation_id=short_text,
    timestamp=st.one_of(st.none(), st.integers(0, 2**64 + 5)),
    type=short_text,
    app_id=short_text,
    reply_to=short_text,
    headers=st.one_of(st.none(), st.dictionaries(st.text(max_size=10), header_values, max_size=4)),
)


def header_size(frames: bytes) -> int:
    """The content header's payload size in a publish's frames (method frame first)."""
    _kind, _channel, method_size = struct.unpack_from(">BHI", frames)
    kind, _channel, size = struct.unpack_from(">BHI", frames, 8 + method_size)
    assert kind == 2
    return size


def outcome(fn):
    try:
        return ("ok", fn())
    except Exception as e:
        return ("raised", type(e).__name__)


@settings(max_examples=500, deadline=None)
@given(
    channel=st.integers(1, 65535),
    exchange=st.one_of(st.text(max_size=40), st.text(min_size=250, max_size=260)),
    routing_key=st.text(max_size=20),
    mandatory=st.booleans(),
    props=properties,
    body=st.binary(max_size=1500),
    body_max=st.one_of(st.integers(1, 64), st.integers(200, 600)),
)
def test_the_bytes_and_the_refusals_are_pikas(channel, exchange, routing_key, mandatory, props, body, body_max):
    ours = outcome(lambda: publish_frames(channel, exchange, routing_key, mandatory, props, body, body_max))
    theirs = outcome(lambda: pika_bytes(channel, exchange, routing_key, mandatory, props, body, body_max))
    if theirs[0] == "raised":
        assert ours[0] == "raised"
    elif header_size(theirs[1]) > body_max:
        # pika writes a content header larger than a frame (the broker closes the
        # connection for it); ours refuses it
        assert ours == ("raised", "HeaderTooLarge")
    else:
        assert ours == theirs
        # the method frame comes from a cache the second time: the same bytes
        assert publish_frames(channel, exchange, routing_key, mandatory, props, body, body_max) == theirs[1]


def test_a_usual_publish_is_one_write_of_three_frames():
    props = Properties(content_type="application/json", delivery_mode=2, message_id="a" * 32,
                       timestamp=1_700_000_000, type="shop.Order")
    frames = publish_frames(3, "scbus.type.shop.Order", "", True, props, b'{"n": 1}', 131_064)
    assert frames == pika_bytes(3, "scbus.type.shop.Order", "", True, props, b'{"n": 1}', 131_064)
    kinds = []
    while frames:
        kind, _channel, size = struct.unpack_from(">BHI", frames)
        assert frames[7 + size] == 0xCE
        kinds.append(kind)
        frames = frames[8 + size:]
    assert kinds == [1, 2, 3]  # method, content header, body
    with pytest.raises(pika.exceptions.ShortStringTooLong):
        publish_frames(3, "x", "", False, Properties(type="t" * 256), b"", 10)


# txAMQP writes the usual publish (no header table) the same way: its own frames are the
# oracle there.

text_or_none = st.one_of(st.none(), st.text(max_size=60))


@settings(max_examples=200, deadline=None)
@given(
    channel=st.integers(1, 2000),
    exchange=st.text(max_size=40),
    mandatory=st.booleans(),
    props=st.builds(
        Properties,
        content_type=text_or_none, delivery_mode=st.one_of(st.none(), st.integers(0, 255)),
        message_id=text_or_none, correlation_id=text_or_none,
        timestamp=st.one_of(st.none(), st.integers(0, 2**63)), type=text_or_none, app_id=text_or_none,
        reply_to=text_or_none,
    ),
    body=st.binary(max_size=1500),
    frame_max=st.one_of(st.integers(9, 80), st.integers(300, 700)),
)
def test_the_bytes_are_txamqps_for_a_publish_without_headers(channel, exchange, mandatory, props, body, frame_max):
    pytest.importorskip("txamqp")
    from txamqp.connection import Frame
    from txamqp.content import Content

    from scbus.transports.amqp.txamqp_client import _to_content
    from scbus.transports.amqp.txamqp_compat import FixedChannel, FixedClient, FixedMethod
    from scbus.transports.amqp.txamqp_spec import load_spec

    spec = load_spec()
    publish = spec.classes.byname["basic"].methods.byname["publish"]
    frames: list = [Frame(channel, FixedMethod(publish, 0, exchange, "", mandatory, False))]
    content: Content = _to_content(body, props, publish.klass, frame_max - 8)
    stand_in = SimpleNamespace(id=channel, client=SimpleNamespace(MAX_LENGTH=frame_max))
    FixedChannel.write_content(stand_in, publish.klass, content, SimpleNamespace(put=frames.append))
    packer = SimpleNamespace(spec=spec, FRAME_END=spec.constants.bypyname["frame_end"].id)
    theirs = b"".join(FixedClient._pack_frame(packer, f) for f in frames)
    if header_size(theirs) > frame_max - 8:
        with pytest.raises(HeaderTooLarge):
            publish_frames(channel, exchange, "", mandatory, props, body, frame_max - 8)
    else:
        assert publish_frames(channel, exchange, "", mandatory, props, body, frame_max - 8) == theirs
