"""
Every `scbus` verb against a real `twistd -n scbus` on the in-memory transport: those
that can work reach the bus through its HTTP endpoint and print what their broker
versions print; the others say in one line why not and what to use instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from scbus.cli.reach import REACH, reach
from scbus.config import parse_config

from ..web.http_client import BusHTTP
from .conftest import ROOT, free_port, wait_for_log

TOKEN = "cli-token-" + uuid.uuid4().hex
CONFIG = """
[bus]
name = "cli-local"
grace_period = 1

[http]
port = {port}
token_env = "SCBUS_TEST_CLI_TOKEN"

[apps.shop]
builder = "tests.console_app:make_shop"
"""


def scbus(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("SCBUS_TEST_CLI_TOKEN", None)
    if token is not None:
        env["SCBUS_TEST_CLI_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "scbus.cli", *args], capture_output=True, text=True, timeout=60, env=env,
        stdin=subprocess.DEVNULL,
    )


def one_line(out: subprocess.CompletedProcess, code: int, *parts: str) -> str:
    assert out.returncode == code and out.stdout == "", (out.returncode, out.stdout, out.stderr)
    [line] = out.stderr.splitlines()
    assert all(p in line for p in parts), line
    return line


def test_every_verb_on_the_in_memory_bus(tmp_path, run_twistd, monkeypatch):
    monkeypatch.setenv("SCBUS_TEST_CLI_TOKEN", TOKEN)
    port = free_port()
    config = tmp_path / "scbus.toml"
    config.write_text(CONFIG.format(port=port))
    bus = run_twistd(str(tmp_path), str(config))
    wait_for_log(bus, "shop: subscribed")
    http = BusHTTP(port)
    http.wait("/ready", 200)
    c = str(config)

    out = scbus("status", "--config", c)
    assert out.returncode == 0, out.stderr
    assert "cli-local@" in out.stdout and f":{bus.process.pid}" in out.stdout and out.stdout.rstrip().endswith("healthy")
    status = json.loads(scbus("status", "--config", c, "--json").stdout)
    assert status["healthy"] and [p["pid"] for p in status["processes"]] == [bus.process.pid]
    assert [a["name"] for a in status["processes"][0]["app_status"]] == ["shop"]

    out = scbus("ping", "--config", c, "--app", "shop")
    assert out.returncode == 0 and out.stdout.startswith("cli-local@") and "(apps: shop)" in out.stdout, out
    one_line(scbus("ping", "--config", c, "--app", "nosuch"), 2, "no app 'nosuch'")

    out = scbus("pause", "shop", "--config", c)
    assert out.returncode == 0 and out.stdout.startswith("shop: paused in 1 process(es)"), out
    assert http.get("/ready")[1]["paused"] == ["shop"]
    assert scbus("resume", "shop", "--config", c).returncode == 0
    assert http.get("/ready")[1]["paused"] == []
    one_line(scbus("pause", "shop", "--config", c, token=None), 2, "SCBUS_TEST_CLI_TOKEN")

    # An Orphan nobody takes: listed, refused, forced (and kept again under its id).
    publish = scbus("publish", "--config", c, "console.Orphan", '{"n": 3}')
    assert publish.returncode == 0, publish.stderr
    message_id = publish.stdout.strip()
    listed = [json.loads(line) for line in scbus("set-aside", "--config", c, "list", "unrouted", "--json").stdout.splitlines()]
    [entry] = [e for e in listed if message_id in e["body"]]
    text = scbus("set-aside", "--config", c, "list", "unrouted").stdout
    assert f"{entry['id']}  " in text and "unrouted  type=console.Orphan" in text and "1 unrouted message(s)" in text
    one_line(
        scbus("set-aside", "--config", c, "replay", "unrouted", entry["id"]), 1,
        f"not replayed: no app subscribes to console.Orphan yet; {entry['id']} stays in unrouted (--force",
    )
    out = scbus("set-aside", "--config", c, "replay", "unrouted", entry["id"], "--force")
    assert (out.returncode, out.stdout) == (0, f"replayed {entry['id']}\n"), out.stderr
    one_line(scbus("set-aside", "--config", c, "replay", "unrouted", "nosuch"), 1, "no unrouted message with id nosuch")

    # What cannot work in memory says why, and what to use.
    one_line(scbus("consume", "--config", c, "console.Order"), 2, "consume does not work on the in-memory bus",
             "subscribe an app")
    one_line(scbus("set-aside", "--config", c, "purge", "unrouted", "--yes"), 2, "purge", "restarting it empties them")
    assert "Traceback" not in bus.log()


def test_without_http_the_refusal_names_the_key(tmp_path):
    config = tmp_path / "scbus.toml"
    config.write_text('[apps.shop]\nbuilder = "tests.console_app:make_shop"\n')
    for verb in (["status"], ["ping"], ["pause", "shop"], ["set-aside", "list", "dead"]):
        args = [verb[0], "--config", str(config), *verb[1:]] if verb[0] != "pause" else [*verb, "--config", str(config)]
        one_line(scbus(*args), 2, "through its HTTP endpoint: set [http] port in")


def test_every_verb_says_how_it_reaches_each_transport():
    config = parse_config({"apps": {}}, "x.toml")
    for verb, ways in REACH.items():
        assert set(ways) == {"local", "amqp", "sqlite"}, verb
    config.transport.type = "pigeon"  # a transport the table has no column for
    try:
        reach(config, "status")
    except Exception as e:
        assert str(e) == "status cannot reach a bus on the pigeon transport yet (x.toml)"
    else:
        raise AssertionError("reach() accepted a transport it does not know")
