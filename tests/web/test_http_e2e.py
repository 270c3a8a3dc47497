"""
End to end: a real `twistd -n scbus` process serving HTTP, on the in-memory transport
and over a private RabbitMQ node; messages published with POST /messages, then the
health checks and a Prometheus scrape checked against that known traffic.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid

import pytest

from ..e2e.conftest import ROOT, free_port, twistd_command
from .http_client import BusHTTP

TOKEN = "e2e-token-" + uuid.uuid4().hex

CONFIG = """
[bus]
name = "{name}"
grace_period = 5
log_format = "json"
{transport}

[http]
port = {port}
token_env = "SCBUS_TEST_HTTP_TOKEN"

[apps.{shop}]
builder = "tests.web.shop_apps:make_shop"

[apps.{mailroom}]
builder = "tests.web.shop_apps:make_mailroom"
"""

AMQP = """
[transport]
type = "amqp"
url = "{url}"
heartbeat = 5
reconnect_max_delay = 1
"""


@pytest.fixture
def start_bus(tmp_path, run_twistd, monkeypatch):
    monkeypatch.setenv("SCBUS_TEST_HTTP_TOKEN", TOKEN)

    def start(transport: str = "", suffix: str = "") -> tuple[object, BusHTTP, str, str]:
        port = free_port()
        shop, mailroom = f"shop{suffix}", f"mailroom{suffix}"
        config = tmp_path / "bus.toml"
        config.write_text(CONFIG.format(name="http-e2e", transport=transport, port=port, shop=shop, mailroom=mailroom))
        bus = run_twistd(str(tmp_path), str(config))
        return bus, BusHTTP(port, TOKEN), shop, mailroom

    return start


def publish_known_traffic(http: BusHTTP) -> list[str]:
    ids = []
    for item in ("tea", "cake", "bad", "jam", "bread"):
        code, body = http.post("/messages", {"type": "test.shop.Order", "data": {"item": item}})
        assert code == 202, body
        ids.append(body["id"])
    code, body = http.post("/messages", {"type": "test.shop.Order", "data": {"item": 3}})
    assert code == 400 and "'item'" in body["error"]
    return ids


def check_metrics(http: BusHTTP, shop: str, mailroom: str) -> dict:
    handled = ("scbus_messages_handled_total", (("app", mailroom),))
    m = http.wait_for_metric(handled, 4)
    assert m[handled] == 4
    assert m[("scbus_messages_handled_total", (("app", shop),))] == 5
    assert m[("scbus_handler_errors_total", (("app", shop),))] == 1
    assert m[("scbus_handler_errors_total", (("app", mailroom),))] == 0
    assert m[("scbus_message_handling_seconds_count", (("app", shop),))] == 5
    assert m[("scbus_message_queued_seconds_count", (("app", mailroom),))] == 4
    assert m[("scbus_messages_in_flight", (("app", shop),))] == 0
    assert m[("scbus_transport_connected", ())] == 1
    return m


def test_in_memory_bus_over_http(start_bus):
    bus, http, shop, mailroom = start_bus()
    http.wait("/ready", 200)
    assert http.get("/live") == (200, {"live": True})
    assert http.call("HEAD", "/ready")[0] == 200  # health checkers that only look at the status
    ids = publish_known_traffic(http)
    m = check_metrics(http, shop, mailroom)
    # the error report of "bad" has no subscriber here: it is unrouted, and counted once
    unrouted = ("scbus_messages_set_aside_total", (("app", ""), ("kind", "unrouted"), ("reason", "unrouted")))
    assert m[unrouted] == 1 and http.metrics()[unrouted] == 1
    code, status = http.get("/status.json")
    assert code == 200 and status["healthy"]
    (process,) = status["processes"]
    assert {s["name"]: s["handled"] for s in process["app_status"]} == {shop: 5, mailroom: 4}
    code, page = http.get("/page.json")
    (error,) = page["errors"]
    assert error["message"]["id"] == ids[2] and error["traceback"][-1]["function"] == "on_order"
    assert http.post(f"/apps/{shop}/pause")[0] == 200
    assert http.get("/ready") == (200, {"ready": True, "not_ready": [], "paused": [shop]})
    # An upload far over the message size limit is dropped as it arrives, not kept.
    code, answer = http.post("/messages", {"type": "x", "data": {"s": "x" * (3 * 1024 * 1024)}})
    assert code == 413 and "request body over" in answer["error"]
    assert http.get("/live") == (200, {"live": True})
    assert bus.terminate() in (0, -15, 143)
    lines = [json.loads(line) for line in bus.log().splitlines() if line.startswith("{")]
    assert any(line.get("message", "").startswith(f"{shop}: handler") for line in lines)
    assert TOKEN not in bus.log()


def test_ready_says_what_is_missing_while_the_broker_is_unreachable(start_bus):
    bus, http, shop, mailroom = start_bus(AMQP.format(url=f"amqp://guest:guest@127.0.0.1:{free_port()}/"))
    body = http.wait("/ready", 503)
    assert body["ready"] is False and "transport: not connected to the broker" in body["not_ready"]
    assert f"app {shop}: setting up" in body["not_ready"]
    m = http.metrics()
    assert m[("scbus_transport_connected", ())] == 0
    code, answer = http.post("/messages", {"type": "test.shop.Order", "data": {"item": "tea"}, "id": "x"})
    assert code == 400  # checked before anything is sent, connected or not
    code, answer = http.post("/messages", {"type": "test.shop.Order", "data": {"item": "tea"}})
    assert code == 503 and "not connected" in answer["error"]
    assert http.metrics()[("scbus_send_buffer_messages", ())] == 0


def test_rabbitmq_bus_over_http(rabbit, start_bus):
    suffix = "_" + uuid.uuid4().hex[:8]
    bus, http, shop, mailroom = start_bus(AMQP.format(url=rabbit.url), suffix)
    body = http.wait("/ready", 200, timeout=90)
    assert body == {"ready": True, "not_ready": [], "paused": []}
    publish_known_traffic(http)
    m = check_metrics(http, shop, mailroom)
    assert m[("scbus_messages_queued", (("app", shop),))] == 0
    assert rabbit.queue_depth(f"scbus.app.{shop}") == 0
    # the page lists the broker's holding queue (shared with other tests: at least the
    # error report of "bad", which no app here subscribes to)
    code, page = http.get("/page.json")
    assert code == 200 and page["set_aside_errors"] == {} and page["connected"] is True
    assert page["set_aside_total"]["unrouted"] >= 1
    (error,) = page["errors"]
    assert error["app"] == shop and error["message"]["data"]["item"] == "bad"


def test_a_port_in_use_is_one_line_and_exit_status_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "bus.toml"
        config.write_text(CONFIG.format(name="busy", transport="", port=port, shop="shop", mailroom="mailroom").replace('log_format = "json"\n', ""))
        out = subprocess.run(
            [*twistd_command(), "-n", "--pidfile=", "--logfile=-", "scbus", f"--config={config}"],
            capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
        )
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert f"scbus: http.port: cannot listen on 127.0.0.1 port {port}: Address already in use" in text
    assert "Traceback" not in text and "CannotListenError" not in text
