"""Each txAMQP 0.8.2 defect that scbus.transports.amqp.txamqp_compat fixes, shown."""

import decimal
from io import BytesIO

import pytest

pytest.importorskip("txamqp")

from txamqp.codec import Codec  # noqa: E402
from txamqp.connection import Body, Frame  # noqa: E402

from scbus.transports.amqp.txamqp_compat import FixedBody, FixedCodec  # noqa: E402
from scbus.transports.amqp.txamqp_client import TxChannel  # noqa: E402

EVERY_TYPE = {
    "text": "José ☃",
    "true": True,
    "false": False,
    "none": None,
    "small": -7,
    "big": 2**40,
    "float": 1.5,
    "decimal": decimal.Decimal("12.34"),
    "bytes": b"\x00\xff",
    "nested": {"inner": {"deeper": [1, "two", None]}},
    "array": [1, True, "x", 2.5, {"k": "v"}, [3]],
    "empty": {},
}


def roundtrip(codec_class, table):
    buf = BytesIO()
    codec_class(buf).encode_table(table)
    return codec_class(BytesIO(buf.getvalue())).decode_table()


def test_original_tables_cannot_read_what_rabbitmq_sends():
    buf = BytesIO()
    FixedCodec(buf).encode_table({"x-death": [{"count": 1, "reason": "rejected"}]})
    with pytest.raises(ValueError, match="b'A'"):
        Codec(BytesIO(buf.getvalue())).decode_table()


def test_fixed_tables_carry_every_type_both_ways():
    assert roundtrip(FixedCodec, EVERY_TYPE) == EVERY_TYPE


def test_non_ascii_strings_get_their_byte_length():
    buf = BytesIO()
    FixedCodec(buf).encode_shortstr("é")
    assert buf.getvalue() == b"\x02\xc3\xa9"
    broken = BytesIO()
    Codec(broken).encode_shortstr("é")
    assert broken.getvalue()[0] == 1  # the original counted one character


def encoded_body(data: bytes) -> bytes:
    buf = BytesIO()
    c = Codec(buf)
    Body(data).encode(c)
    c.flush()
    return buf.getvalue()


def test_bodies_stay_bytes():
    data = "{\"name\": \"José\"}".encode("utf-8")
    original = Body.decode(None, Codec(BytesIO(encoded_body(data))))
    assert isinstance(original.content, str)  # the defect: bytes turned into str by chance
    fixed = FixedBody.decode(None, FixedCodec(BytesIO(encoded_body(data))))
    assert fixed.content == data
    assert FixedBody.type == Frame.BODY


class _FakeChannel:
    def basic_publish(self, **kwargs):
        from twisted.internet.defer import succeed

        return succeed(None)  # txAMQP answers every method call with a Deferred


def test_confirms_with_multiple_resolve_every_earlier_publish():
    from types import SimpleNamespace

    from twisted.internet.task import Clock

    from scbus.transports.amqp.txamqp_spec import load_spec

    connection = SimpleNamespace(
        _watch_clock=Clock(), outgoing=SimpleNamespace(pending=[]), transport=None, spec=load_spec(), MAX_LENGTH=131_072
    )
    channel = TxChannel(connection=connection, channel=_FakeChannel())
    channel._confirming = True
    from scbus.transports.amqp.client import Properties, PublishRefused, PublishReturned

    sent = [channel.publish("x", "", b"{}", Properties()) for _ in range(5)]
    outcomes = [[] for _ in sent]
    for d, out in zip(sent, outcomes):
        d.addBoth(out.append)
    channel._confirmed(3, multiple=True, refused=False)
    assert [bool(o) for o in outcomes] == [True, True, True, False, False]
    channel._confirmed(4, multiple=False, refused=True)
    assert outcomes[3][0].check(PublishRefused)
    channel._confirms.returned(None, "x", "", b"{}")  # a return names its publish by what it carries
    channel._confirmed(5, multiple=False, refused=False)
    assert outcomes[4][0].check(PublishReturned)
