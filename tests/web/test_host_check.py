"""
Only the bus's own names are answered: a request whose Host names another domain (a page
that rebound its name to 127.0.0.1) is refused on every endpoint before anything runs;
IP addresses, localhost on any port, and the names of http.allowed_hosts are answered.
"""

from __future__ import annotations

import io
import json

import pytest
from twisted.logger import globalLogPublisher
from twisted.web.test.requesthelper import DummyRequest

from scbus.config import parse_config
from scbus.errors import ConfigError
from scbus.web import BusWeb
from scbus.web.hosts import HostCheck, host_name

from .shop_apps import Order
from .test_resources import TOKEN, Site

FORGED = b"attacker.example:8080"

#: Every endpoint, as (method, path), with what a token holder may send.
ENDPOINTS = [
    ("GET", "/"), ("GET", "/live"), ("GET", "/ready"), ("GET", "/status.json"), ("GET", "/metrics"),
    ("GET", "/page.json"), ("GET", "/static/app.js"), ("HEAD", "/ready"), ("GET", "/no-such-endpoint"),
    ("POST", "/messages"), ("POST", "/apps/shop/pause"), ("POST", "/set-aside/dead/x/replay"),
]


class HostSite(Site):
    def __init__(self, allowed_hosts=()):
        super().__init__()
        self.web = BusWeb(
            self.harness.bus, token=TOKEN, token_env="SHOP_TOKEN", max_message_size=2000,
            expected={"shop": 1, "mailroom": 1}, history=self.history, allowed_hosts=allowed_hosts,
        )

    def call(self, method, path, hosts, body=b""):
        request = DummyRequest([p.encode() for p in path.strip("/").split("/")] if path != "/" else [b""])
        request.method = method.encode()
        request.content = io.BytesIO(body)
        request.requestHeaders.addRawHeader(b"authorization", f"Bearer {TOKEN}".encode())
        for host in hosts:
            request.requestHeaders.addRawHeader(b"host", host)
        self.web.render(request)
        self.harness.flush()
        assert request.finished, f"{method} {path} did not answer"
        raw = b"".join(request.written)
        kind = request.responseHeaders.getRawHeaders(b"content-type")[0]
        return request.responseCode or 200, json.loads(raw) if kind == b"application/json" else raw


ORDER = json.dumps({"type": "test.shop.Order", "data": {"item": "tea"}}).encode()


@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_a_forged_host_is_refused_on_every_endpoint(method, path):
    site = HostSite()
    code, body = site.call(method, path, [FORGED], ORDER if path == "/messages" else b"")
    assert code == 421
    assert body["error"].startswith("Host 'attacker.example:8080' is not a name of this bus")
    assert "http.allowed_hosts" in body["error"]


def test_nothing_a_refused_request_asks_for_is_done():
    site = HostSite()
    for _ in range(3):
        assert site.call("POST", "/messages", [FORGED], ORDER)[0] == 421
    assert site.call("POST", "/apps/shop/pause", [FORGED])[0] == 421
    assert site.harness.sent_of(Order) == []
    assert not any(s.paused for s in site.harness.status())
    # The same requests under the bus's own name are done.
    assert site.call("POST", "/messages", [b"127.0.0.1:8080"], ORDER)[0] == 202
    assert site.call("POST", "/apps/shop/pause", [b"127.0.0.1:8080"])[0] == 200
    assert [o.item for o in site.harness.sent_of(Order)] == ["tea"]


@pytest.mark.parametrize("host", [
    b"127.0.0.1:8080", b"127.0.0.1", b"127.5.6.7:8080", b"localhost:8080", b"LocalHost", b"localhost.:8080",
    b"localhost:9000",  # an SSH tunnel or kubectl port-forward to another local port
    b"[::1]:8080", b"[::1]", b"10.1.2.3:8080",  # a health check or scrape by pod IP
    b"0.0.0.0:8080", b"[2001:db8::5]:8080",
])
def test_addresses_and_localhost_are_answered_on_any_port(host):
    site = HostSite()
    code, body = site.call("GET", "/page.json", [host])
    assert code == 200 and body["bus"] == "test"


def test_a_request_without_a_host_is_answered():
    # No browser sends one: it cannot be a page reading across sites (HTTP/1.0 checkers).
    site = HostSite()
    assert site.call("GET", "/live", [])[0] == 200


@pytest.mark.parametrize("hosts, says", [
    ([b"127.0.0.1", FORGED], "more than one Host header"),
    ([b"localhost:80:80"], "is not a host name or address"),
    ([b"::1"], "is not a host name or address"),  # an IPv6 address needs brackets
    ([b"[127.0.0.1]"], "is not a host name or address"),
    ([b"local\xffhost"], "is not a host name or address"),
    ([b"user@localhost"], "is not a host name or address"),
    ([b""], "is not a host name or address"),
])
def test_a_malformed_host_is_a_bad_request(hosts, says):
    code, body = HostSite().call("GET", "/page.json", hosts)
    assert code == 400 and says in body["error"]


def test_allowed_hosts_add_names_and_domains():
    site = HostSite(["scbus.internal", ".svc.cluster.local"])
    for host in (b"scbus.internal:8080", b"SCBUS.internal", b"scbus.ns.svc.cluster.local:8080", b"svc.cluster.local"):
        assert site.call("GET", "/metrics", [host])[0] == 200, host
    for host in (b"evil-scbus.internal", b"scbus.internal.attacker.example", b"xsvc.cluster.local", b"internal"):
        assert site.call("GET", "/metrics", [host])[0] == 421, host


def test_the_first_refusal_of_each_host_is_logged_once():
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        site = HostSite()
        for _ in range(3):
            site.call("GET", "/page.json", [FORGED])
        site.call("GET", "/metrics", [b"other.example"])
    finally:
        globalLogPublisher.removeObserver(events.append)
    refused = [e for e in events if e.get("log_format", "").startswith("http: refused")]
    assert [(e["method"], e["path"], e["why"].split(" is not")[0]) for e in refused] == [
        ("GET", "/page.json", "Host 'attacker.example:8080'"), ("GET", "/metrics", "Host 'other.example'"),
    ]


def test_host_name_takes_the_port_and_final_dot_off():
    assert host_name(b"Bus.Example.:8080") == "bus.example"
    assert host_name(b"[::1]:8080") == "::1"
    assert host_name(b"localhost:") == "localhost"
    assert host_name(b"a b") is None
    assert HostCheck(["bus.example."]).allows("bus.example")


# --- the config key ------------------------------------------------------------------------

APPS = {"apps": {"a": {"builder": "apps.clock:make_clock"}}}


def test_allowed_hosts_default_to_none_and_are_kept_in_lower_case():
    assert parse_config({**APPS, "http": {"port": 8080}}).http.allowed_hosts == []
    config = parse_config({**APPS, "http": {"port": 8080, "allowed_hosts": ["Bus.Internal", ".svc.cluster.local"]}})
    assert config.http.allowed_hosts == ["bus.internal", ".svc.cluster.local"]


@pytest.mark.parametrize("value, says", [
    ("bus.internal", "must be a list of host names, got str"),
    (["bus.internal:8080"], "'bus.internal:8080' is not a host name"),
    (["http://bus.internal"], "'http://bus.internal' is not a host name"),
    (["*"], "'*' is not a host name"),
    ([""], "'' is not a host name"),
    (["10.0.0.5"], "'10.0.0.5' is an IP address: every address is answered"),
    (["[::1]"], "is an IP address"),
    ([7], "must be a string, got int 7"),
])
def test_a_bad_allowed_host_names_the_key_and_the_entry(value, says):
    with pytest.raises(ConfigError) as e:
        parse_config({**APPS, "http": {"port": 8080, "allowed_hosts": value}})
    assert "http.allowed_hosts" in str(e.value) and says in str(e.value)
