"""The HTTP endpoints, rendered against a real bus on the in-memory transport and a fake clock."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.web.test.requesthelper import DummyRequest

from scbus.message import Message
from scbus.testing import BusHarness
from scbus.web import BusWeb, read_token
from scbus.web.history import History

from .shop_apps import Order, Shipped, make_mailroom, make_shop

TOKEN = "t0ken-for-tests"


class Nobody(Message, wire_name="test.web.Nobody"):
    n: int


class Site:
    """A started bus with the shop apps, and its HTTP resource."""

    def __init__(self, token: str | None = TOKEN, token_env: str | None = "SHOP_TOKEN", start: bool = True) -> None:
        self.harness = BusHarness()
        self.harness.add_app("shop", make_shop)
        self.harness.add_app("mailroom", make_mailroom)
        self.history = History(self.harness.bus)
        self.web = BusWeb(
            self.harness.bus, token=token, token_env=token_env, max_message_size=2000,
            expected={"shop": 1, "mailroom": 1}, history=self.history,
        )
        if start:
            self.harness.start()

    def request(self, method: str, path: str, body: bytes = b"", token: str | None = None) -> tuple[int, Any, DummyRequest]:
        path, _, query = path.partition("?")
        request = DummyRequest([p.encode() for p in path.strip("/").split("/")] if path != "/" else [b""])
        request.args = {k.encode(): [v.encode() for v in vs] for k, vs in parse_qs(query).items()}
        request.method = method.encode()
        request.content = __import__("io").BytesIO(body)
        if token is not None:
            request.requestHeaders.addRawHeader(b"authorization", f"Bearer {token}".encode())
        self.web.render(request)
        self.harness.flush()
        assert request.finished, f"{method} {path} did not answer"
        raw = b"".join(request.written)
        content_type = request.responseHeaders.getRawHeaders(b"content-type")[0]
        parsed = json.loads(raw) if content_type == b"application/json" else raw
        return request.responseCode or 200, parsed, request

    def get(self, path: str) -> tuple[int, Any]:
        code, body, _ = self.request("GET", path)
        return code, body

    def post(self, path: str, body: Any = b"", token: str | None = TOKEN) -> tuple[int, Any]:
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        code, answer, _ = self.request("POST", path, body, token)
        return code, answer


@pytest.fixture
def site():
    return Site()


def metrics(site: Site) -> dict[tuple[str, tuple], float]:
    code, text = site.get("/metrics")
    assert code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


# --- health -------------------------------------------------------------------------------


def test_live(site):
    assert site.get("/live") == (200, {"live": True})


def test_ready_names_what_is_not_ready():
    site = Site(start=False)
    code, body = site.get("/ready")
    assert code == 503
    assert "transport: not connected" in body["not_ready"]
    assert "app shop: stopping" in body["not_ready"]
    site.harness.start()
    assert site.get("/ready") == (200, {"ready": True, "not_ready": [], "paused": []})


def test_ready_while_an_app_is_set_up_then_after_the_transport_stops(site):
    site.harness.bus.pause("mailroom")
    code, body = site.get("/ready")
    assert code == 200 and body["paused"] == ["mailroom"]  # pausing is the operator's choice
    site.harness.transport.stopService()
    code, body = site.get("/ready")
    assert code == 503 and body["not_ready"] == ["transport: not connected"]


def test_status_json_is_the_control_planes_answer(site):
    site.harness.send(Order(item="tea", quantity=1))
    code, body = site.get("/status.json")
    assert code == 200 and body["healthy"] is True
    (process,) = body["processes"]
    assert process["apps"] == ["mailroom", "shop"]
    by_app = {s["name"]: s for s in process["app_status"]}
    assert by_app["shop"]["handled"] == 1 and by_app["mailroom"]["handled"] == 1
    assert body["queues"]["shop"] == {"ready": 0, "consumers": None}


# --- metrics ------------------------------------------------------------------------------


def test_metrics_after_known_traffic(site):
    clock = site.harness.clock
    for item in ("tea", "bad", "cake"):
        # made on the bus's clock: they wait three seconds in the queue
        site.harness.transport.send(Order(item=item, quantity=1, created_at=clock.seconds()))
    clock.advance(3)
    site.harness.flush()
    site.harness.send(Nobody(n=1))
    m = metrics(site)
    assert m[("scbus_messages_handled_total", (("app", "shop"),))] == 3
    assert m[("scbus_handler_errors_total", (("app", "shop"),))] == 1
    assert m[("scbus_messages_handled_total", (("app", "mailroom"),))] == 2
    assert m[("scbus_message_handling_seconds_count", (("app", "shop"),))] == 3
    assert m[("scbus_message_queued_seconds_count", (("app", "shop"),))] == 3
    assert m[("scbus_message_queued_seconds_sum", (("app", "shop"),))] == pytest.approx(9, abs=0.01)
    assert m[("scbus_message_queued_seconds_bucket", (("app", "shop"), ("le", "2.5")))] == 0
    assert m[("scbus_message_queued_seconds_bucket", (("app", "shop"), ("le", "5.0")))] == 3
    assert m[("scbus_messages_in_flight", (("app", "shop"),))] == 0
    assert m[("scbus_transport_connected", ())] == 1
    unrouted = ("scbus_messages_set_aside_total", (("app", ""), ("kind", "unrouted"), ("reason", "unrouted")))
    assert m[unrouted] == 2  # Nobody, and the error report no app here subscribes to
    assert [e.type_name for e in site.harness.transport.unrouted] == ["scbus.AppErrorOccurred", "test.web.Nobody"]
    assert metrics(site)[unrouted] == 2  # listed again, counted once


def test_each_bus_has_its_own_registry():
    first, second = Site(), Site()
    first.harness.send(Order(item="tea", quantity=1))
    assert metrics(first)[("scbus_messages_handled_total", (("app", "shop"),))] == 1
    assert metrics(second)[("scbus_messages_handled_total", (("app", "shop"),))] == 0


# --- publishing ---------------------------------------------------------------------------


def test_publish_the_short_form(site):
    code, body = site.post("/messages", {"type": "test.shop.Order", "data": {"item": "tea", "quantity": 2}})
    assert code == 202 and body["type"] == "test.shop.Order"
    (order,) = [m for m in site.harness.sent_of(Order)]
    assert order.id == body["id"] and order.quantity == 2
    assert [s.item for s in site.harness.sent_of(Shipped)] == ["tea"]


def test_publish_an_envelope_keeps_its_id(site):
    envelope = {"type": "test.shop.Order", "id": "order-1", "created_at": 1.5, "correlation_id": "c-1",
                "data": {"item": "tea", "quantity": 1}}
    assert site.post("/messages", envelope) == (202, {"id": "order-1", "type": "test.shop.Order"})
    (order,) = site.harness.sent_of(Order)
    assert (order.id, order.created_at, order.correlation_id) == ("order-1", 1.5, "c-1")


@pytest.mark.parametrize("body, names", [
    ({"type": "test.shop.Order", "data": {"item": "tea", "quantity": "2"}}, "'quantity'"),
    ({"type": "test.shop.Order", "data": {"quantity": 1}}, "item"),
    ({"type": "test.shop.Nope", "data": {}}, "'test.shop.Nope'"),
    ({"data": {}}, "'type'"),
    ({"type": "test.shop.Order", "id": "x", "data": {"item": "tea", "quantity": 1}}, "'created_at'"),
    (b"{not json", "not JSON"),
    (b'{"type": "test.shop.Order", "data": {"item": "tea", "quantity": NaN}}', "NaN"),
    # what the bus's own decoder refuses is refused at this door too
    (b'{"type": "test.shop.Order", "data": {"item": "tea", "quantity": 1, "quantity": 2}}', "duplicate key 'quantity'"),
    (b'{"type": "test.shop.Order", "data": {"item": "tea", "quantity": 1}, "type": "test.shop.Nope"}', "duplicate key 'type'"),
    (b'{"type": "test.shop.Order", "created_at": 1e999, "id": "x", "data": {"item": "tea", "quantity": 1}}', "out of range"),
    (b'{"type": "test.shop.Order", "data": {"item": "' + b"x" * 3000 + b'", "quantity": 1}}', "limit of 2000"),
])
def test_a_bad_message_is_refused_naming_the_field_and_nothing_is_sent(site, body, names):
    code, answer = site.post("/messages", body)
    assert code == 400
    assert names in answer["error"]
    assert site.harness.sent == []


def test_a_stopping_bus_refuses_to_publish_with_503(site):
    # Accepted now, it could not be handled before the process ends.
    site.harness.bus.stopService()
    code, answer = site.post("/messages", {"type": "test.shop.Order", "data": {"item": "tea", "quantity": 1}})
    assert code == 503 and "stopping" in answer["error"]
    assert site.harness.sent == []


def test_writing_needs_the_token(site):
    order = {"type": "test.shop.Order", "data": {"item": "tea", "quantity": 1}}
    assert site.post("/messages", order, token=None)[0] == 401
    assert site.post("/messages", order, token="t0ken-for-test")[0] == 401
    assert site.post("/apps/shop/pause", token="wrong")[0] == 401
    assert site.harness.sent == [] and site.harness.bus.readiness()["shop"] == "consuming"


@pytest.mark.parametrize("token_env, says", [(None, "token_env is not configured"), ("SHOP_TOKEN", "SHOP_TOKEN is not set")])
def test_without_a_token_writing_is_off(token_env, says):
    site = Site(token=None, token_env=token_env)
    code, body = site.post("/messages", {"type": "test.shop.Order", "data": {"item": "tea", "quantity": 1}})
    assert code == 403 and "writing endpoints are off" in body["error"] and says in body["error"]
    assert site.harness.sent == []


def test_read_token(monkeypatch):
    monkeypatch.setenv("SHOP_TOKEN", " abc \n")
    assert read_token("SHOP_TOKEN") == "abc"
    monkeypatch.setenv("SHOP_TOKEN", "")
    assert read_token("SHOP_TOKEN") is None
    assert read_token(None) is None


# --- operating ----------------------------------------------------------------------------


def test_pause_and_resume(site):
    assert site.post("/apps/shop/pause") == (200, {"app": "shop", "paused": True})
    site.harness.send(Order(item="tea", quantity=1))
    assert site.harness.sent_of(Shipped) == []
    assert site.post("/apps/shop/resume") == (200, {"app": "shop", "paused": False})
    site.harness.flush()
    assert [s.item for s in site.harness.sent_of(Shipped)] == ["tea"]
    assert site.post("/apps/nope/pause")[0] == 404


def test_replay_an_unrouted_message(site):
    site.harness.send(Nobody(n=7))
    (entry,) = site.harness.transport.unrouted
    code, page = site.get("/page.json")
    assert [e["id"] for e in page["set_aside"]["unrouted"]] == [entry.id]
    site.harness.add_app("collector", lambda n, r, c: {Nobody: lambda m: None})
    site.harness.flush()
    assert site.post(f"/set-aside/unrouted/{entry.id}/replay") == (200, {"replayed": entry.id})
    assert list(site.harness.transport.unrouted) == []
    assert site.harness.status()[-1].handled == 1
    assert site.post(f"/set-aside/unrouted/{entry.id}/replay")[0] == 404
    assert site.post(f"/set-aside/elsewhere/{entry.id}/replay")[0] == 404


def test_a_replay_that_would_only_set_it_aside_again_is_refused_unless_forced(site):
    site.harness.send(Nobody(n=7))
    (entry,) = site.harness.transport.unrouted
    code, answer = site.post(f"/set-aside/unrouted/{entry.id}/replay")
    assert (code, answer["error"]) == (409, f"not replayed: no app subscribes to {Nobody.wire_name} yet; {entry.id} stays in unrouted")
    assert [e.id for e in site.harness.transport.unrouted] == [entry.id]
    assert site.post(f"/set-aside/unrouted/{entry.id}/replay?force=1") == (200, {"replayed": entry.id})
    assert [e.id for e in site.harness.transport.unrouted] == [entry.id]  # nobody still: kept, same id


def test_set_aside_stores_are_listed_at_most_every_few_seconds(site, monkeypatch):
    listed = []
    real = site.harness.transport.set_aside
    monkeypatch.setattr(site.harness.transport, "set_aside", lambda kind: listed.append(kind) or real(kind))
    site.harness.send(Nobody(n=1))
    site.get("/page.json")
    site.get("/metrics")
    assert listed == ["unrouted", "dead"]
    site.harness.send(Nobody(n=2))
    site.harness.clock.advance(5)
    code, page = site.get("/page.json")
    assert listed == ["unrouted", "dead"] * 2 and page["set_aside_total"]["unrouted"] == 2
    entry_id = page["set_aside"]["unrouted"][0]["id"]
    site.harness.add_app("collector", lambda n, r, c: {Nobody: lambda m: None})
    assert site.post(f"/set-aside/unrouted/{entry_id}/replay")[0] == 200
    code, page = site.get("/page.json")  # a replay makes the next poll list again
    assert len(listed) == 6 and entry_id not in [e["id"] for e in page["set_aside"]["unrouted"]]


def test_page_json_has_samples_and_errors(site):
    site.history.start()
    for n in range(5):
        site.harness.send(Order(item="tea" if n != 3 else "bad", quantity=1))
        site.harness.advance(2)
    code, page = site.get("/page.json")
    assert code == 200 and page["writable"] is True and page["token_env"] == "SHOP_TOKEN"
    assert Site(token=None, token_env=None).get("/page.json")[1]["token_env"] is None
    rows = page["series"]["shop"]
    assert len(rows) == 6 and rows[-1][1] == pytest.approx(0.5)  # one order every 2 s
    assert rows[-1][4] == pytest.approx(0.1)  # one failed in the last 10 s
    (error,) = page["errors"]
    assert error["app"] == "shop" and error["error"] == "no such item"
    assert error["traceback"][-1]["function"] == "on_order"
    assert error["message"]["data"]["item"] == "bad"


def test_the_page_and_its_files(site):
    code, html, request = site.request("GET", "/")
    assert code == 200 and b'<script src="/static/app.js"' in html
    csp = request.responseHeaders.getRawHeaders(b"content-security-policy")[0]
    assert b"default-src 'none'" in csp
    for name in ("app.js", "style.css", "favicon.svg"):
        assert site.get(f"/static/{name}")[0] == 200
    assert site.get("/static/../setup.py")[0] == 404
    assert site.get("/nope") == (404, {"error": "no such endpoint: /nope"})
    assert site.post("/metrics")[0] == 405


def test_idle_runs_are_counted_apart_from_handled(site):
    from datetime import timedelta

    site.harness.add_app("clock", lambda n, r, c: {timedelta(seconds=1): lambda: None})
    site.harness.advance(3)
    [clock] = [s for s in site.harness.status() if s.name == "clock"]
    assert (clock.idle_runs, clock.handled) == (3, 0)
    assert metrics(site)[("scbus_idle_runs_total", (("app", "clock"),))] == 3
    code, page = site.get("/page.json")
    assert [a["idle_runs"] for a in page["apps"] if a["name"] == "clock"] == [3]
