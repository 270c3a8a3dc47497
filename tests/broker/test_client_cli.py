"""
``scbus publish``, ``consume`` and ``set-aside`` as an operator runs them: real commands
in subprocesses, a real ``twistd -n scbus`` and the private RabbitMQ node (a vhost of
this module's own, so the shared holding queues hold only what these tests put there).
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
import uuid

import jsonschema
import pika
import pytest


from ..e2e.conftest import ROOT, Twistd
from .test_processes import wait_in_log

VHOST = "client-cli"
CONFIG = """
[bus]
name = "client-cli"
grace_period = 2

[transport]
type = "amqp"
url = "{url}"
heartbeat = 5
reconnect_max_delay = 1

[apps.shipping]
builder = "tests.client_app:make_shipping"
config = {{ path = "{handled}" }}
"""


@pytest.fixture(scope="module")
def vhost_url(rabbit):
    rabbit.ctl("add_vhost", VHOST)
    rabbit.ctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@127.0.0.1:{rabbit.port}/{VHOST}"
    rabbit.ctl("delete_vhost", VHOST)


@pytest.fixture
def setup(tmp_path, vhost_url):
    """(config path, handled-file path); every bus started is killed at the end."""
    handled = tmp_path / "handled.jsonl"
    config = tmp_path / "scbus.toml"
    config.write_text(CONFIG.format(url=vhost_url, handled=handled))
    started: list[Twistd] = []

    def start_bus() -> Twistd:
        bus = Twistd(str(tmp_path), str(config))
        started.append(bus)
        wait_in_log(bus, "shipping: consuming", 60)
        return bus

    yield str(config), handled, start_bus
    for bus in started:
        bus.kill()


def scbus(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "scbus.cli", *args], input=stdin, capture_output=True, text=True,
        timeout=timeout, env=env, cwd=ROOT, stdin=None if stdin is not None else subprocess.DEVNULL,
    )


class Consumer:
    """``scbus consume`` running in the background, until it exits by itself."""

    def __init__(self, config: str, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scbus.cli", "consume", "--config", config, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env, cwd=ROOT,
        )
        ready = self.process.stderr.readline()  # "consuming ...": its queue is bound
        assert ready.startswith("consuming"), ready + self.process.stderr.read()

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err


def wait_for_lines(path, count: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = [json.loads(line) for line in path.read_text().splitlines() if line]
            if len(lines) >= count:
                return lines
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} handled within {timeout}s")


class Watch:
    """A queue of the test's own bound to a type's exchange: what was really published."""

    def __init__(self, url: str, wire_name: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        exchange = f"scbus.type.{wire_name}"
        self.channel.exchange_declare(exchange, "fanout", durable=True, arguments={"alternate-exchange": "scbus.unrouted"})
        self.queue = f"test.watch.{uuid.uuid4().hex[:8]}"
        self.channel.queue_declare(self.queue, auto_delete=False)
        self.channel.queue_bind(self.queue, exchange)

    def count(self) -> int:
        return self.channel.queue_declare(self.queue, passive=True).method.message_count

    def close(self) -> None:
        self.channel.queue_delete(self.queue)
        self.connection.close()


def test_published_message_is_handled_by_the_bus(setup):
    config, handled, start_bus = setup
    start_bus()
    out = scbus("publish", "--config", config, "client_test.Order", '{"item": "tea", "quantity": 2}')
    assert out.returncode == 0, out.stderr
    message_id = out.stdout.strip()
    assert len(message_id) == 32
    [record] = wait_for_lines(handled, 1)
    assert record == {"id": message_id, "item": "tea", "quantity": 2}


@pytest.mark.parametrize(
    "data, field",
    [
        ('{"item": "tea", "quantity": "two"}', "quantity"),
        ('{"item": "tea", "quantity": true}', "quantity"),
        ('{"item": "tea"}', "quantity"),
        ('{"item": "tea", "quantity": 1, "qantity": 2}', "qantity"),
        ('{"item": 5, "quantity": 1}', "item"),
        ('{"type": "client_test.Order", "created_at": -5, "data": {"item": "tea", "quantity": 1}}', "'created_at' is -5"),
        ('{"type": "client_test.Order", "id": "%s", "data": {"item": "tea", "quantity": 1}}' % ("x" * 300), "'id' is 300 bytes"),
    ],
)
def test_a_bad_value_is_refused_naming_the_field_and_nothing_is_sent(setup, vhost_url, data, field):
    config, _handled, _start = setup
    watch = Watch(vhost_url, "client_test.Order")
    try:
        out = scbus("publish", "--config", config, "client_test.Order", data)
        assert out.returncode == 1
        assert out.stdout == ""
        [line] = out.stderr.splitlines()
        assert field in line
        assert watch.count() == 0
        # The same watch sees a good message: an empty queue above means nothing was sent.
        good = scbus("publish", "--config", config, "client_test.Order", '{"item": "tea", "quantity": 1}')
        assert good.returncode == 0, good.stderr
        assert watch.count() == 1
    finally:
        watch.close()


def test_lines_with_one_bad_line_send_nothing(setup, vhost_url, tmp_path):
    config, _handled, _start = setup
    lines = tmp_path / "orders.jsonl"
    lines.write_text(
        '{"item": "a", "quantity": 1}\n'
        '{"item": "b", "quantity": 2}\n'
        '{"item": "c", "quantity": 3.5}\n'
        '{"item": "d", "quantity": 4}\n'
    )
    watch = Watch(vhost_url, "client_test.Order")
    try:
        out = scbus("publish", "--config", config, "client_test.Order", "--lines", str(lines))
        assert out.returncode == 1
        assert "line 3" in out.stderr and "quantity" in out.stderr
        assert "nothing sent" in out.stderr
        assert watch.count() == 0
        lines.write_text(lines.read_text().replace("3.5", "3"))
        out = scbus("publish", "--config", config, "client_test.Order", "--lines", str(lines))
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "published 4 message(s)"
        assert watch.count() == 4
    finally:
        watch.close()


def test_consume_json_then_publish_lines_round_trip(setup, tmp_path):
    config, handled, start_bus = setup
    start_bus()
    first = Consumer(config, "client_test.Order", "--json", "--limit", "3", "--timeout", "60")
    ids = []
    for n in range(3):
        out = scbus("publish", "--config", config, "client_test.Order", json.dumps({"item": f"i{n}", "quantity": n, "note": "ü"}))
        assert out.returncode == 0, out.stderr
        ids.append(out.stdout.strip())
    status, captured, err = first.finish()
    assert status == 0, err
    envelopes = [json.loads(line) for line in captured.splitlines()]
    assert [e["id"] for e in envelopes] == ids
    printed = scbus("schema", "--config", config)
    assert printed.returncode == 0, printed.stderr
    schema = json.loads(printed.stdout)
    for envelope in envelopes:
        jsonschema.validate(envelope, schema)

    saved = tmp_path / "captured.jsonl"
    saved.write_text(captured)
    second = Consumer(config, "client_test.Order", "--json", "--limit", "3", "--timeout", "60")
    out = scbus("publish", "--config", config, "--lines", str(saved))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "published 3 message(s)"
    status, again, err = second.finish()
    assert status == 0, err
    assert [json.loads(line) for line in again.splitlines()] == envelopes
    # The bus handled both rounds: the same ids twice (a replay keeps its id). Its queue
    # may also hold orders earlier tests published while no bus ran.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ours = sorted(r["id"] for r in wait_for_lines(handled, 1) if r["id"] in ids)
        if len(ours) >= 6:
            break
        time.sleep(0.1)
    assert ours == sorted(ids * 2)


def test_consume_prints_readably_and_stops_at_the_timeout(setup):
    config, _handled, _start = setup
    watcher = Consumer(config, "client_test.Order", "--limit", "2", "--timeout", "20")
    out = scbus("publish", "--config", config, "client_test.Order", '{"item": "jam", "quantity": 7}')
    assert out.returncode == 0, out.stderr
    status, printed, err = watcher.finish()
    assert status == 1  # one of two within the time
    assert "1 of 2" in err
    assert f"client_test.Order  id={out.stdout.strip()}" in printed
    assert '    quantity: 7' in printed and '    item: "jam"' in printed


def test_set_aside_list_replay_and_purge(setup, vhost_url, rabbit):
    config, _handled, start_bus = setup
    bus = start_bus()  # declares scbus.unrouted and scbus.dead on this vhost

    # Unrouted: nobody takes Unwanted.
    ids = []
    for n in range(2):
        out = scbus("publish", "--config", config, "client_test.Unwanted", json.dumps({"n": n}))
        assert out.returncode == 0, out.stderr
        ids.append(out.stdout.strip())
    listed = _wait_listed(config, "unrouted", 2)
    assert {e["id"] for e in listed} == set(ids)
    assert all(e["type"] == "client_test.Unwanted" and e["code"] == "unrouted" for e in listed)

    # No app of the config takes it: refused, and kept.
    out = scbus("set-aside", "--config", config, "replay", "unrouted", ids[0])
    assert out.returncode == 1 and out.stderr.strip() == (
        f"scbus: not replayed: no app subscribes to client_test.Unwanted yet; {ids[0]} stays in unrouted "
        "(--force replays it anyway)"
    ), out.stderr
    # Forced to a subscriber outside the config (a consumer): it leaves the store and arrives.
    watcher = Consumer(config, "client_test.Unwanted", "--json", "--limit", "1", "--timeout", "30")
    out = scbus("set-aside", "--config", config, "replay", "unrouted", ids[0], "--force")
    assert out.returncode == 0, out.stderr
    status, got, err = watcher.finish()
    assert status == 0, err
    assert json.loads(got)["id"] == ids[0]
    assert [e["id"] for e in _wait_listed(config, "unrouted", 1)] == [ids[1]]

    # Dead: a body the bus cannot decode is set aside with its reason.
    connection = pika.BlockingConnection(pika.URLParameters(vhost_url))
    channel = connection.channel()
    bad = {"type": "client_test.Order", "id": uuid.uuid4().hex, "created_at": time.time(), "data": {"item": "x", "quantity": "many"}}
    channel.basic_publish("scbus.type.client_test.Order", "", json.dumps(bad).encode(),
                          pika.BasicProperties(message_id=bad["id"], content_type="application/json"))
    connection.close()
    [dead] = _wait_listed(config, "dead", 1)
    assert dead["id"] == bad["id"] and dead["code"] == "wrong-type" and dead["app"] == "shipping"
    assert "quantity" in dead["reason"]

    # Still undecodable: refused and kept. Forced, with the bus stopped, it waits in the
    # app's queue again.
    bus.terminate()
    assert rabbit_queue_count(vhost_url, "scbus.app.shipping") == 0
    out = scbus("set-aside", "--config", config, "replay", "dead", bad["id"])
    assert out.returncode == 1 and f"not replayed: {bad['id']} still does not decode (wrong-type: " in out.stderr
    assert rabbit_queue_count(vhost_url, "scbus.dead") == 1
    out = scbus("set-aside", "--config", config, "replay", "dead", bad["id"], "--force")
    assert out.returncode == 0, out.stderr
    assert rabbit_queue_count(vhost_url, "scbus.app.shipping") == 1
    assert rabbit_queue_count(vhost_url, "scbus.dead") == 0
    out = scbus("set-aside", "--config", config, "replay", "dead", "no-such-id")
    assert out.returncode == 1 and "no-such-id" in out.stderr

    # Purge asks first: without a terminal and without --yes it refuses and keeps everything.
    kept = rabbit_queue_count(vhost_url, "scbus.unrouted")
    assert kept >= 1
    out = scbus("set-aside", "--config", config, "purge", "unrouted")
    assert out.returncode == 1
    assert len(out.stderr.splitlines()) == 1 and "--yes" in out.stderr
    assert rabbit_queue_count(vhost_url, "scbus.unrouted") == kept
    out = scbus("set-aside", "--config", config, "purge", "unrouted", "--yes")
    assert out.returncode == 0, out.stderr
    assert f"deleted {kept}" in out.stdout
    assert rabbit_queue_count(vhost_url, "scbus.unrouted") == 0


def _wait_listed(config: str, kind: str, count: int, timeout: float = 30) -> list[dict]:
    """The listed messages of the types these tests set aside (the bus's Shipped replies are unrouted too)."""
    deadline = time.monotonic() + timeout
    while True:
        out = scbus("set-aside", "--config", config, "list", kind, "--json")
        assert out.returncode == 0, out.stderr
        entries = [json.loads(line) for line in out.stdout.splitlines()]
        entries = [e for e in entries if e["type"] in ("client_test.Unwanted", "client_test.Order")]
        if len(entries) == count or time.monotonic() > deadline:
            assert len(entries) == count, entries
            return entries
        time.sleep(0.2)


def rabbit_queue_count(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def test_local_transport_without_http_says_what_to_configure(tmp_path):
    config = tmp_path / "local.toml"
    config.write_text('[apps.shipping]\nbuilder = "tests.client_app:make_shipping"\nconfig = { path = "x" }\n')
    out = scbus("publish", "--config", str(config), "client_test.Order", '{"item": "tea", "quantity": 1}')
    assert out.returncode == 2
    [line] = out.stderr.splitlines()
    assert "[http] port" in line
    for args, says in (
        (("consume", "client_test.Order"), "its messages never leave its process"),
        (("set-aside", "list", "dead"), "through its HTTP endpoint: set [http] port"),
    ):
        out = scbus(args[0], "--config", str(config), *args[1:])
        assert out.returncode == 2
        assert len(out.stderr.splitlines()) == 1 and says in out.stderr


def test_unknown_type_is_one_line(setup):
    config, _handled, _start = setup
    out = scbus("publish", "--config", config, "client_test.Nope", "{}")
    assert out.returncode == 1
    [line] = out.stderr.splitlines()
    assert "client_test.Nope" in line and "client_test.Order" in line



def test_purge_on_a_terminal_asks_first(setup, vhost_url):
    config, _handled, start_bus = setup
    bus = start_bus()
    out = scbus("publish", "--config", config, "client_test.Unwanted", '{"n": 1}')
    assert out.returncode == 0, out.stderr
    bus.terminate()  # nothing more lands in scbus.unrouted while we count
    kept = rabbit_queue_count(vhost_url, "scbus.unrouted")
    assert kept >= 1

    def purge_answering(answer: str) -> tuple[int, str]:
        controller, terminal = pty.openpty()
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        process = subprocess.Popen(
            [sys.executable, "-m", "scbus.cli", "set-aside", "--config", config, "purge", "unrouted"],
            stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )
        os.close(terminal)
        os.write(controller, answer.encode() + b"\n")
        out, err = process.communicate(timeout=60)
        os.close(controller)
        assert "[y/N]" in out, out + err
        return process.returncode, out

    status, out = purge_answering("n")
    assert status == 1 and "nothing deleted" in out
    assert rabbit_queue_count(vhost_url, "scbus.unrouted") == kept
    status, out = purge_answering("y")
    assert status == 0 and f"deleted {kept}" in out
    assert rabbit_queue_count(vhost_url, "scbus.unrouted") == 0
