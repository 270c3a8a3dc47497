"""
The result path at and past every wire limit, against a real node, with both clients:
ids and correlation ids up to and past 255 UTF-8 bytes (multibyte characters too),
created_at at the ends of the AMQP timestamp range, header tables near frame_max, and
results a handler spoiled after building them. Each delivery is handled or set aside
exactly once (never delivered again and again), the connection stays up, and in flight
returns to 0.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor, task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from scbus.appbus import ApplicationMessageBus
from scbus.mainbus import MainMessageBus
from scbus.message import AppErrorOccurredMessage, Message

from ..contract.test_amqp_contract import connected, make_amqp_transport
from ..rabbit import RabbitNode, available
from .amqp_client import eventually, fresh_vhost
from .hostile import HostileProducer

#: The node's frame_max (RabbitMQ's default; tests/rabbit.py keeps it): a frame's payload
#: is at most this less 8.
FRAME_MAX = 131_072
MAX_PAYLOAD = FRAME_MAX - 8

#: Cases per client in the property test.
EXAMPLES = 40

#: The largest float below 2**64 (created_at is a float).
LAST_TIMESTAMP = 2.0**64 - 2048


class LimitItem(Message, wire_name="limits.Item"):
    case: str
    #: How the handler spoils its result after building it (a key of SPOILS), if at all.
    spoil: str = ""
    #: Sent back in the result: a body as large as wanted.
    pad: str = ""


class LimitDone(Message, wire_name="limits.Done"):
    case: str
    pad: str = ""


#: What a handler may do to the message it returns, past what the wire carries.
SPOILS: dict[str, Any] = {
    "created_at=-1": lambda m: setattr(m, "created_at", -1.0),
    "created_at=2**64": lambda m: setattr(m, "created_at", 2.0**64),
    "correlation_id of 256 bytes": lambda m: setattr(m, "correlation_id", "é" * 128),
    "id of 300 bytes": lambda m: setattr(m, "id", "x" * 300),
    "id with a lone surrogate": lambda m: setattr(m, "id", "a\udc80"),
}


def utf8_size(text: str) -> int | None:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def fits_short_string(text: Any) -> bool:
    size = utf8_size(text)
    return size is not None and size <= 255


def body(case: str, message_id: str, created_at: Any, correlation_id: Any, spoil: str = "", pad: str = "") -> bytes:
    """An envelope as JSON text (created_at as written: an integer stays one)."""
    envelope = {
        "type": LimitItem.wire_name, "id": message_id, "created_at": 0, "correlation_id": correlation_id,
        "data": {"case": case, "spoil": spoil, "pad": pad},
    }
    text = json.dumps(envelope, ensure_ascii=True)  # (a lone surrogate as its escape)
    return text.replace('"created_at": 0', f'"created_at": {created_at!r}', 1).encode("utf-8")


def header_payload(properties: dict[str, Any]) -> int:
    """The content header frame's payload pika writes for these properties."""
    return 12 + len(b"".join(pika.BasicProperties(**properties).encode()))


class LimitsBus(unittest.TestCase):
    """A bus with the app under test and a collector of its results (no tests of its own)."""

    timeout = 150
    client = "pika"

    def vhost_url(self) -> str:
        return fresh_vhost(self, f"limits-{self.client}")

    async def start_bus(self, url: str | None = None) -> None:
        """The app under test, "limits", and a collector of what it sends, on a vhost of their own."""
        self.failures: list[str] = []

        def watch(event: dict[str, Any]) -> None:
            if event.get("log_failure") is not None:  # raised where nothing should be
                self.failures.append(formatEvent(event) or repr(event.get("log_failure")))

        globalLogPublisher.addObserver(watch)
        self.addCleanup(globalLogPublisher.removeObserver, watch)
        url = url or self.vhost_url()
        self.transport = transport = make_amqp_transport(self, url, client=self.client)
        self.bus = bus = MainMessageBus("limits", transport, grace_period=5)
        self.calls: Counter[str] = Counter()
        self.done: list[tuple[str, str | None]] = []
        self.pads: list[str] = []
        self.reports: list[AppErrorOccurredMessage] = []

        def handle(item: LimitItem) -> LimitDone:
            self.calls[item.case] += 1
            out = LimitDone(case=item.case, pad=item.pad)
            if item.spoil:
                SPOILS[item.spoil](out)
            return out

        app = {LimitItem: handle}
        bus.add_app("limits", ApplicationMessageBus("limits", app), app, max_in_flight=10)
        seen = {
            LimitDone: lambda done: self.done.append((done.case, done.correlation_id)) or self.pads.append(done.pad),
            AppErrorOccurredMessage: self.reports.append,
        }
        bus.add_app("limits_seen", ApplicationMessageBus("limits_seen", seen), seen, max_in_flight=10)
        bus.startService()
        self.addCleanup(bus.stopService)
        await connected(transport)
        await eventually(lambda: all(a.ready for a in bus._apps.values()))
        self.producer = HostileProducer(url)
        self.addCleanup(self.producer.close)
        self.exchange = self.producer.declare_type(LimitItem.wire_name)

    def publish(self, case: str, data: bytes, **properties: Any) -> None:
        properties.setdefault("content_type", "application/json")
        self.producer.publish(self.exchange, data, message_id=case, **properties)

    def dead_count(self) -> int:
        """Messages in scbus.dead (asked without reading them: they may be large)."""
        return self.producer.channel.queue_declare("scbus.dead", passive=True).method.message_count

    async def dead(self) -> dict[str, list[Any]]:
        """What the app under test set aside, by the producer's message_id (the case)."""
        entries: dict[str, list[Any]] = {}
        for entry in await self.transport.set_aside("dead"):
            if entry.app_name == "limits":
                entries.setdefault(entry.id, []).append(entry)
        return entries

    def reported(self, case: str) -> list[AppErrorOccurredMessage]:
        return [r for r in self.reports if r.app_name == "limits" and (r.message or {}).get("data", {}).get("case") == case]

    async def assert_settled_and_up(self) -> None:
        """The connection it started with, nothing in flight or queued, nothing raised."""
        self.assertEqual(self.transport.connections, 1)
        for status in await self.bus.status():
            self.assertEqual((status.name, status.in_flight, status.queued), (status.name, 0, 0))
        self.assertEqual(self.failures, [])

    async def quiet(self, seconds: float = 1.0) -> None:
        """A moment for anything looping to show itself."""
        await task.deferLater(reactor, seconds, lambda: None)


@pytest.mark.usefixtures("rabbit_for_class")
class WireLimitTests(LimitsBus):
    """Through pika."""

    # --- dead-letter copies that do not fit one frame -------------------------------------

    async def test_a_dead_letter_copy_too_big_for_one_frame_goes_with_scbus_headers_alone(self):
        await self.start_bus()
        big = {"big": "x" * 130_990}
        self.assertLessEqual(header_payload({"content_type": "application/json", "message_id": "big", "headers": big}),
                             MAX_PAYLOAD)  # the producer's own publish fits
        self.publish("big", b"not json", headers=big)
        self.publish("small", b"not json either", headers={"small": "y" * 1000})
        self.publish("after", body("after", "after-1", 1_700_000_000, None))

        await eventually(lambda: self.calls["after"] == 1 and self.dead_count() >= 2, timeout=20)
        dead = await self.dead()
        self.assertEqual([(e.code, e.body) for e in dead["big"]], [("malformed", b"not json")])
        self.assertEqual([e.code for e in dead["small"]], ["malformed"])
        copies = {}
        for _ in range(2):  # the copies as they are in scbus.dead, with their headers
            method, properties, _ = self.producer.channel.basic_get("scbus.dead")
            copies[properties.message_id] = properties.headers
        # Too big with theirs: scbus's own headers alone. Small enough: both.
        self.assertEqual(set(copies["big"]), {"x-scbus-reason", "x-scbus-error", "x-scbus-app", "x-scbus-set-aside-at"})
        self.assertEqual(copies["big"]["x-scbus-reason"], "malformed")
        self.assertEqual(copies["small"]["small"], "y" * 1000)
        self.assertEqual(copies["small"]["x-scbus-reason"], "malformed")
        await self.quiet()
        self.assertEqual(self.calls, Counter({"after": 1}))
        await self.assert_settled_and_up()

    # --- ids and times past the limits, from the wire --------------------------------------

    async def test_ids_and_times_past_the_limits_are_set_aside_once_not_looped(self):
        await self.start_bus()
        bad = {
            "id of 300 bytes": body("id300", "x" * 300, 1_700_000_000, None),
            "id of 128 two-byte characters": body("id256", "é" * 128, 1_700_000_000, None),
            "id with a lone surrogate": body("idsur", "a\udc80", 1_700_000_000, None),
            "correlation_id of 256 bytes": body("corr256", "c-256", 1_700_000_000, "☃" * 85 + "x"),
            "created_at -5": body("neg", "neg-1", -5, None),
            "created_at 2**64": body("huge", "huge-1", 2**64, None),
            "created_at 1e20": body("e20", "e20-1", 1e20, None),
        }
        good = {
            "id of 255 bytes": ("id255", "x" * 255, 1_700_000_000, None),
            "id of 255 bytes, two-byte characters": ("id255e", "é" * 127 + "x", 1_700_000_000, None),
            "id of 255 bytes, four-byte characters": ("id255f", "😀" * 63 + "xyz", 1_700_000_000, None),
            "correlation_id of 255 bytes": ("corr255", "c-255", 1_700_000_000, "☃" * 85),
            "created_at 0": ("zero", "zero-1", 0, None),
            "created_at -0.0": ("negzero", "negzero-1", -0.0, None),
            "created_at the last float below 2**64": ("last", "last-1", LAST_TIMESTAMP, None),
        }
        for name, data in bad.items():
            self.publish(name, data)
        for name, (case, message_id, created_at, correlation_id) in good.items():
            self.publish(name, body(case, message_id, created_at, correlation_id))
        expected_done = sorted((case, correlation_id or message_id) for case, message_id, _, correlation_id in good.values())

        await eventually(lambda: sorted(self.done) == expected_done and self.dead_count() >= len(bad), timeout=30)
        await self.quiet()
        dead = await self.dead()
        for name in bad:
            [entry] = dead[name]
            self.assertEqual(entry.code, "malformed", name)
        self.assertIn("'id' is 300 bytes of UTF-8, over the limit of 255", dead["id of 300 bytes"][0].reason)
        self.assertIn("'id' is 256 bytes", dead["id of 128 two-byte characters"][0].reason)
        self.assertIn("'id' is not UTF-8 text", dead["id with a lone surrogate"][0].reason)
        self.assertIn("'correlation_id' is 256 bytes", dead["correlation_id of 256 bytes"][0].reason)
        for name in ("created_at -5", "created_at 2**64", "created_at 1e20"):
            self.assertIn("'created_at' is", dead[name][0].reason)
            self.assertIn("below 2**64", dead[name][0].reason)
        self.assertEqual(self.calls, Counter({case: 1 for case, *_ in good.values()}))
        self.assertEqual(sorted(self.done), expected_done)
        self.assertEqual(self.reports, [])
        await self.assert_settled_and_up()

    # --- results a handler spoiled -------------------------------------------------------------

    async def test_a_result_that_cannot_be_encoded_is_reported_once_not_redelivered(self):
        await self.start_bus()
        for spoil in SPOILS:
            self.publish(spoil, body(spoil, f"in-{uuid.uuid4().hex}", 1_700_000_000, None, spoil))
        self.publish("fine", body("fine", "fine-1", 1_700_000_000, None))
        await eventually(lambda: self.done and all(self.reported(s) for s in SPOILS), timeout=30)
        await self.quiet()
        self.assertEqual(self.calls, Counter({**{s: 1 for s in SPOILS}, "fine": 1}))
        self.assertEqual(self.done, [("fine", "fine-1")])
        for spoil in SPOILS:
            [report] = self.reported(spoil)
            self.assertEqual(report.error_type, "scbus.errors.EncodeError")
            field = spoil.split("=")[0].split(" ")[0]
            self.assertIn(f"'{field}'", report.error)
            # under the input's conversation, whatever the result's correlation id was
            self.assertEqual(report.correlation_id, report.message["id"])
        self.assertEqual(await self.dead(), {})
        await self.assert_settled_and_up()

    # --- everything at once, generated ----------------------------------------------------------

    async def test_every_message_at_and_past_the_wire_limits_is_handled_or_set_aside_once(self):
        await self.start_bus()
        cases = generate_cases(EXAMPLES)
        for case in cases:
            self.publish(case.case, case.body(), **case.properties())
        expected = {case.case: case.expected() for case in cases}
        to_handle = {c for c, outcome in expected.items() if outcome in ("done", "reported")}
        to_set_aside = {c for c, outcome in expected.items() if outcome == "set aside"}

        def settled() -> bool:
            return (
                to_handle <= set(self.calls)
                and {c for c in to_handle if expected[c] == "done"} <= {d for d, _ in self.done}
                and all(self.reported(c) for c in to_handle if expected[c] == "reported")
                and self.dead_count() >= len(to_set_aside)
            )

        await eventually(settled, timeout=60)
        await self.quiet()
        dead = await self.dead()
        wrong = []
        for case in cases:
            c = case.case
            # the output, or the report, under the input's conversation
            conversation = case.correlation_id or case.message_id
            done = [correlation == conversation for d, correlation in self.done if d == c]
            reports = [r.correlation_id == conversation for r in self.reported(c)]
            got = (self.calls[c], done, reports, [e.code for e in dead.get(c, [])])
            want = {
                "done": (1, [True], [], []), "reported": (1, [], [True], []), "set aside": (0, [], [], ["malformed"]),
            }[expected[c]]
            if got != want:
                wrong.append(f"expected {expected[c]} {want}, got {got}: {case!r}")
        self.assertEqual(wrong, [])
        await self.assert_settled_and_up()


class TxAMQPWireLimitTests(WireLimitTests):
    """Through txAMQP."""

    client = "txamqp"


# --- generated cases ---------------------------------------------------------------------------

#: Characters of each UTF-8 size, and one UTF-8 cannot carry.
CHARACTERS = ["x", "é", "☃", "😀", "\udc80"]

#: created_at at the ends of its range and past them, as written in the JSON.
TIMESTAMPS = [0, -0.0, 1, 1_700_000_000.25, LAST_TIMESTAMP, 2**63, -1, -1e-300, -5, 2**64, 2**64 - 1, 1e20]


@dataclass
class Case:
    case: str
    message_id: str
    created_at: Any
    correlation_id: str | None
    spoil: str
    #: a header table of about this many bytes (0: none), and the body undecodable
    header_bytes: int
    undecodable: bool

    def body(self) -> bytes:
        if self.undecodable:
            return b"{not json " + self.case.encode()
        return body(self.case, self.message_id, self.created_at, self.correlation_id, self.spoil)

    def properties(self) -> dict[str, Any]:
        if not self.header_bytes:
            return {}
        base = {"content_type": "application/json", "message_id": self.case, "headers": {"pad": ""}}
        room = self.header_bytes - header_payload(base)
        return {"headers": {"pad": "p" * max(0, room)}}

    def expected(self) -> str:
        """Worked out from the limits, not from scbus: "done", "reported" or "set aside"."""
        if self.undecodable:
            return "set aside"
        seconds = float(self.created_at)
        if not (
            fits_short_string(self.message_id)
            and (self.correlation_id is None or fits_short_string(self.correlation_id))
            and 0 <= seconds and int(seconds) < 2**64
        ):
            return "set aside"
        return "reported" if self.spoil else "done"

    def __repr__(self) -> str:
        return (
            f"Case(id={self.message_id[:20]!r}... ({utf8_size(self.message_id)} bytes), "
            f"created_at={self.created_at!r}, correlation_id={(self.correlation_id or '')[:20]!r} "
            f"({utf8_size(self.correlation_id or '')} bytes), spoil={self.spoil!r}, "
            f"header_bytes={self.header_bytes}, undecodable={self.undecodable})"
        )


def near_limit_text(unique: str) -> st.SearchStrategy[str]:
    """Text of one kind of character, near 255 bytes of UTF-8 with C{unique} in front."""
    return st.tuples(st.sampled_from(CHARACTERS), st.integers(-8, 8), st.sampled_from(["", "x", "xy", "xyz"])).map(
        lambda t: unique + t[0] * max(0, (255 - len(unique)) // max(1, utf8_size(t[0]) or 1) + t[1]) + t[2]
    )


def generate_cases(count: int) -> list[Case]:
    cases: list[Case] = []

    @settings(max_examples=count, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def collect(data: Any) -> None:
        case = uuid.uuid4().hex
        message_id = data.draw(st.one_of(st.just(case), near_limit_text(case)))
        correlation_id = data.draw(st.one_of(st.none(), st.just("c" + case), near_limit_text("c" + case)))
        created_at = data.draw(st.one_of(st.sampled_from(TIMESTAMPS), st.floats(0, LAST_TIMESTAMP)))
        spoil = data.draw(st.sampled_from(["", "", *SPOILS]))
        header_bytes = data.draw(st.sampled_from([0, 0, 1000, MAX_PAYLOAD - 900, MAX_PAYLOAD - 40, MAX_PAYLOAD]))
        undecodable = bool(header_bytes) and data.draw(st.booleans())
        cases.append(Case(case, message_id, created_at, correlation_id, spoil, header_bytes, undecodable))

    collect()
    return cases


# --- a broker that offers no frame size limit ---------------------------------------------------


@pytest.fixture(scope="module")
def unlimited_rabbit():
    """A node of its own whose frame_max is 0, which AMQP reads as no limit."""
    reason = available()
    if reason is not None:
        pytest.skip(reason)
    node = RabbitNode()
    node.add_config("frame_max = 0")
    node.start()
    assert node.ctl("eval", "application:get_env(rabbit, frame_max).").strip() == "{ok,0}"
    yield node
    node.cleanup()


@pytest.fixture
def unlimited_for_class(request, unlimited_rabbit):
    request.cls.rabbit = unlimited_rabbit


@pytest.mark.usefixtures("unlimited_for_class")
class NoFrameLimitTests(LimitsBus):
    """
    frame_max = 0 offered: each client asks for 131,072 and splits bodies by it, so bodies
    of many frames (in and out) and a dead-letter copy with a header table travel.
    """

    client = "pika"

    async def test_bodies_of_many_frames_and_header_tables_travel(self):
        await self.start_bus()
        pad = "z" * (3 * FRAME_MAX)
        self.publish("large", body("large", "large-1", 1_700_000_000, None, pad=pad))
        self.publish("dead", b"not json", headers={"t": "y" * 1000})
        # the result, as large, is published by the bus itself
        await eventually(lambda: self.done and self.dead_count() == 1, timeout=20)
        self.assertEqual((self.done, self.pads), ([("large", "large-1")], [pad]))
        self.assertEqual([e.code for e in (await self.dead())["dead"]], ["malformed"])
        await self.assert_settled_and_up()


class TxAMQPNoFrameLimitTests(NoFrameLimitTests):
    client = "txamqp"
