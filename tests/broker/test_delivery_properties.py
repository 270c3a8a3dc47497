"""
Property-based, over the whole AMQP delivery path against a real node: hypothesis
generates bodies *and* properties (content types as text and as bytes, header tables
with every AMQP field type, extreme values, deep nesting, non-finite numbers); a plain
pika producer publishes them byte for byte; the bus consumes them with each client.

Every delivery must end handled and acknowledged or set aside with a reason (the one an
oracle predicts), the connection must stay up, in flight must return to 0 and nothing
may be raised anywhere. The cases are generated first and then run as one batch (the
broker cannot be driven from inside hypothesis's synchronous loop), so a failure prints
the cases it failed on rather than a shrunk one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from scbus import codec
from scbus.appbus import ApplicationMessageBus
from scbus.errors import DecodeError
from scbus.mainbus import MainMessageBus
from scbus.message import Message

from ..contract.test_amqp_contract import connected, make_amqp_transport
from .hostile import FIELD_TYPES, HostileProducer, Raw, array, nested_table, table
from .amqp_client import eventually, fresh_vhost

#: Cases per client: the batch runs in a few seconds on a loaded machine.
EXAMPLES = 40

#: The last second a datetime can hold: pika decodes header timestamps as datetimes.
LAST_DATETIME = 253402300799

REASONS = {
    "malformed", "content-type", "bad-properties", "too-large", "unknown-type",
    "missing-field", "wrong-type", "unexpected-type", "undecodable",
}


class HypoItem(Message, wire_name="hypo.Item"):
    n: int
    x: float = 0.0
    note: str = ""
    extra: Any = None


# --- properties -------------------------------------------------------------------------

INT_EXTREMES = {
    b"b": [-128, 127], b"B": [0, 255], b"s": [-(2**15), 2**15 - 1], b"u": [0, 2**16 - 1],
    b"I": [-(2**31), 2**31 - 1], b"i": [0, 2**32 - 1], b"l": [-(2**63), 2**63 - 1],
}
# Finite only: RabbitMQ itself closes a connection that sends a NaN or infinite float
# in a header table (INTERNAL_ERROR), so they never reach a consumer.
FLOATS = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.0, -0.0, 1e308, 5e-324]))


@dataclass
class Header:
    value: bytes
    #: Why a client cannot decode it: "pika" (a timestamp past year 9999) or "both".
    poison: str | None = None


def _scalar() -> st.SearchStrategy[Header]:
    kinds = []
    for kind, (low, high) in INT_EXTREMES.items():
        pack = FIELD_TYPES[kind]
        kinds.append(st.one_of(st.sampled_from([low, high]), st.integers(low, high)).map(lambda v, p=pack: Header(p(v))))
    kinds += [
        st.booleans().map(lambda v: Header(FIELD_TYPES[b"t"](v))),
        FLOATS.map(lambda v: Header(FIELD_TYPES[b"d"](v))),
        st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda v: Header(FIELD_TYPES[b"f"](v))),
        st.tuples(st.integers(0, 255), st.integers(-(2**31), 2**31 - 1)).map(lambda v: Header(FIELD_TYPES[b"D"](v))),
        st.binary(max_size=40).map(lambda v: Header(FIELD_TYPES[b"S"](v))),
        st.text(max_size=20).map(lambda v: Header(FIELD_TYPES[b"S"](v.encode("utf-8", "surrogatepass")))),
        st.binary(max_size=40).map(lambda v: Header(FIELD_TYPES[b"x"](v))),
        st.just(Header(FIELD_TYPES[b"V"](None))),
        st.one_of(st.integers(0, 2**33), st.sampled_from([0, LAST_DATETIME])).map(lambda v: Header(FIELD_TYPES[b"T"](v))),
        st.sampled_from([LAST_DATETIME + 1, 2**40, 2**63, 2**64 - 1]).map(lambda v: Header(FIELD_TYPES[b"T"](v), "pika")),
        st.just(Header(bytes(nested_table(3000)), "both")),
    ]
    return st.one_of(kinds)


def _worst(headers: list[Header]) -> str | None:
    poisons = {h.poison for h in headers}
    return "both" if "both" in poisons else ("pika" if "pika" in poisons else None)


def _compound(children: st.SearchStrategy[Header]) -> st.SearchStrategy[Header]:
    keys = st.one_of(st.text(max_size=8), st.binary(max_size=8))
    as_table = st.lists(st.tuples(keys, children), max_size=4).map(
        lambda items: Header(bytes(table([(k, h.value) for k, h in items])), _worst([h for _, h in items]))
    )
    as_array = st.lists(children, max_size=4).map(
        lambda items: Header(bytes(array([h.value for h in items])), _worst(items))
    )
    return st.one_of(as_table, as_array)


header_values = st.recursive(_scalar(), _compound, max_leaves=12)
header_tables = st.dictionaries(st.text(min_size=1, max_size=10), header_values, max_size=4)

content_types = st.one_of(
    st.none(),
    st.sampled_from(["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "", "text/plain"]),
    st.text(max_size=30).filter(lambda t: len(t.encode("utf-8", "surrogatepass")) <= 255),
    st.binary(max_size=30),
)
short_strings = st.one_of(st.none(), st.text(max_size=20), st.binary(max_size=20))


# --- bodies -------------------------------------------------------------------------------

NUMBERS = ["1e999", "-1e400", "1e308", "NaN", "Infinity", "-Infinity", "-0.0", "12345678901234567890", "9" * 400, "7"]


def _item_body(nonce: str, n: int, x: float, note: str) -> bytes:
    return codec.encode(HypoItem(n=n, x=x, note=note, id=nonce))


def _envelope_text(nonce: str, data: str, created_at: str = "1700000000") -> bytes:
    return (
        '{"type": "hypo.Item", "id": "%s", "created_at": %s, "correlation_id": null, "data": %s}'
        % (nonce, created_at, data)
    ).encode()


body_makers = st.one_of(
    st.tuples(st.integers(-(2**63), 2**63), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
    .map(lambda v: lambda nonce: _item_body(nonce, *v)),
    st.tuples(st.sampled_from(NUMBERS), st.sampled_from(["n", "x", "created_at"])).map(
        lambda v: lambda nonce: _envelope_text(nonce, '{"n": 1}', v[0]) if v[1] == "created_at"
        else _envelope_text(nonce, '{"n": 1, "%s": %s}' % (v[1], v[0]))
    ),
    st.just(lambda nonce: _envelope_text(nonce, '{"n": 1, "n": 2}')),
    st.sampled_from([10, 62, 63, 100, 5000]).map(
        lambda depth: lambda nonce: _envelope_text(nonce, '{"n": 1, "extra": %s}' % ("[" * depth + "]" * depth))
    ),
    st.just(lambda nonce: _envelope_text(nonce, '{"n": "one"}')),
    st.just(lambda nonce: _envelope_text(nonce, "{}")),
    st.binary(max_size=60).map(lambda b: lambda nonce: nonce.encode() + b),
)


@dataclass
class Case:
    body: bytes
    content_type: Any
    headers: dict[str, Header]
    others: dict[str, Any]
    message_id: str

    def poisoned_for(self, client: str) -> bool:
        worst = _worst(list(self.headers.values()))
        return worst == "both" or (worst == "pika" and client == "pika")

    def content_type_accepted(self) -> bool:
        value = self.content_type
        if isinstance(value, bytes):  # what both clients make of a short string
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                return False
        return (value or "").split(";")[0].strip().lower() in ("", codec.CONTENT_TYPE)

    def expected(self, client: str) -> str:
        """The reason code it must be set aside with, or "handled"."""
        if self.poisoned_for(client):
            return "bad-properties"
        if not self.content_type_accepted():
            return "content-type"
        try:
            message = codec.decode(self.body)
        except DecodeError as e:
            return e.reason
        return "handled" if isinstance(message, HypoItem) else "set aside"

    def __repr__(self) -> str:
        return (f"Case(body={self.body[:120]!r}, content_type={self.content_type!r}, "
                f"headers={ {k: (h.value[:40], h.poison) for k, h in self.headers.items()} }, others={self.others!r})")


def generate_cases(count: int) -> list[Case]:
    cases: list[Case] = []

    @settings(max_examples=count, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(body_makers, content_types, header_tables,
           st.fixed_dictionaries({}, optional={
               "type": short_strings, "correlation_id": short_strings, "app_id": short_strings,
               "priority": st.integers(0, 255), "timestamp": st.sampled_from([0, 2**63 - 1, 2**64 - 1]),
               "delivery_mode": st.sampled_from([1, 2]),
           }))
    def collect(make_body, content_type, headers, others):
        nonce = uuid.uuid4().hex
        cases.append(Case(make_body(nonce), content_type, headers, others, nonce))

    collect()
    return cases


@pytest.mark.usefixtures("rabbit_for_class")
class DeliveryPathProperties(unittest.TestCase):
    """Through pika."""

    timeout = 240
    client = "pika"

    def vhost_url(self) -> str:
        return fresh_vhost(self, f"hypothesis-{self.client}")

    async def test_every_delivery_is_handled_or_set_aside_and_the_bus_stays_up(self):
        failures = []

        def watch(event):
            if event.get("log_failure") is not None:  # something raised where it was not expected
                failures.append(formatEvent(event) or repr(event.get("log_failure")))

        globalLogPublisher.addObserver(watch)
        self.addCleanup(globalLogPublisher.removeObserver, watch)
        url = self.vhost_url()
        transport = make_amqp_transport(self, url, client=self.client)
        bus = MainMessageBus("hypothesis", transport, grace_period=5)
        handled: list[str] = []
        subscriptions = {HypoItem: lambda item: handled.append(item.id)}
        bus.add_app("hypo", ApplicationMessageBus("hypo", subscriptions), subscriptions, max_in_flight=10)
        bus.startService()
        self.addCleanup(bus.stopService)
        await connected(transport)
        await eventually(lambda: all(a.ready for a in bus._apps.values()))

        cases = generate_cases(EXAMPLES)
        producer = HostileProducer(url)
        self.addCleanup(producer.close)
        exchange = producer.declare_type(HypoItem.wire_name)
        for case in cases:
            properties = {k: v for k, v in case.others.items() if v is not None}
            producer.publish(
                exchange, case.body, content_type=case.content_type, message_id=case.message_id,
                headers={k: Raw(h.value) for k, h in case.headers.items()} or None, **properties,
            )
        expected = {case.message_id: case.expected(self.client) for case in cases}
        to_handle = {i for i, outcome in expected.items() if outcome == "handled"}
        to_set_aside = len(cases) - len(to_handle)

        async def dead():
            return [e for e in await transport.set_aside("dead") if e.app_name == "hypo"]

        async def settled():
            return to_handle <= set(handled) and len(await dead()) >= to_set_aside

        await eventually(settled, timeout=90)
        by_body = {}
        for entry in await dead():
            by_body.setdefault(entry.body, []).append(entry)
        wrong = []
        for case in cases:
            want = expected[case.message_id]
            entries = by_body.get(case.body, [])
            got = "handled" if case.message_id in handled else None
            if entries:
                got = entries[0].code if got is None and len(entries) == 1 else f"{got} + {[e.code for e in entries]}"
            ok = got == want or (want == "set aside" and got in REASONS)
            if not ok or handled.count(case.message_id) > 1:
                wrong.append(f"expected {want}, got {got}: {case!r}")
        self.assertEqual(wrong, [])
        self.assertEqual(transport.connections, 1)
        [status] = await bus.status()
        self.assertEqual((status.in_flight, status.queued), (0, 0))
        self.assertEqual(status.acked, len(to_handle))
        self.assertEqual(failures, [])


class TxAMQPDeliveryPathProperties(DeliveryPathProperties):
    """Through txAMQP."""

    client = "txamqp"
