"""
End to end: a real `twistd -n scbus` HTTP port refuses a request whose Host header names
another domain (as a DNS-rebinding page's would) and answers its own names.
"""

from __future__ import annotations

import http.client
import json
import uuid

from ..e2e.conftest import free_port
from .http_client import BusHTTP

TOKEN = "host-e2e-" + uuid.uuid4().hex

CONFIG = """
[bus]
name = "host-e2e"
grace_period = 1

[http]
port = {port}
token_env = "SCBUS_TEST_HTTP_TOKEN"
allowed_hosts = ["scbus.test"]

[apps.shop]
builder = "tests.web.shop_apps:make_shop"
"""


def call(port: int, method: str, path: str, host: str, body: bytes | None = None) -> tuple[int, dict | str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Host": host, "Authorization": f"Bearer {TOKEN}"}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        kind = response.getheader("content-type")
        return response.status, json.loads(raw) if kind == "application/json" else raw.decode()
    finally:
        connection.close()


def test_a_forged_host_is_refused_and_the_bus_names_answered(tmp_path, run_twistd, monkeypatch):
    monkeypatch.setenv("SCBUS_TEST_HTTP_TOKEN", TOKEN)
    port = free_port()
    config = tmp_path / "bus.toml"
    config.write_text(CONFIG.format(port=port))
    bus = run_twistd(str(tmp_path), str(config))
    BusHTTP(port).wait("/ready", 200)
    order = json.dumps({"type": "test.shop.Order", "data": {"item": "tea"}}).encode()

    forged = f"attacker.example:{port}"
    for method, path in [("GET", "/page.json"), ("GET", "/status.json"), ("GET", "/metrics"),
                         ("GET", "/ready"), ("GET", "/live"), ("GET", "/")]:
        code, body = call(port, method, path, forged)
        assert code == 421, (path, body)
        assert isinstance(body, dict) and body["error"].startswith(f"Host '{forged}' is not a name of this bus")
    assert call(port, "POST", "/messages", forged, order)[0] == 421

    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost:9999", f"scbus.test:{port}"):
        code, page = call(port, "GET", "/page.json", host)
        assert code == 200 and isinstance(page, dict) and page["bus"] == "host-e2e", (host, page)
    code, sent = call(port, "POST", "/messages", f"127.0.0.1:{port}", order)
    assert code == 202, sent
    # Only the one posted under the bus's own name was handled.
    handled = ("scbus_messages_handled_total", (("app", "shop"),))
    assert BusHTTP(port).wait_for_metric(handled, 1, timeout=20)[handled] == 1
    code, status = call(port, "GET", "/status.json", f"localhost:{port}")
    assert code == 200 and isinstance(status, dict)
    assert [s["handled"] for s in status["processes"][0]["app_status"]] == [1]
    assert bus.terminate() in (0, -15, 143)
    log = bus.log()
    assert log.count(f"http: refused GET /page.json: Host '{forged}'") == 1, log
    assert "http: refused GET /status.json" not in log  # once per Host
