"""
Heartbeats that answer now: two real bus processes with a backlogged app, asked by the
real `scbus status` and `scbus ping` commands over the control plane.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

from ..e2e.conftest import Twistd
from .amqp_client import Collector, Producer
from .test_processes import wait_in_log

APP = "busy"
CONFIG = """
[bus]
name = "{name}"
grace_period = 2

[transport]
type = "amqp"
url = "{url}"
heartbeat = 5
reconnect_max_delay = 2

[apps.busy]
builder = "tests.noloss_app:make_numbers"
threads = 1
max_in_flight = 4
expected_processes = 2
"""


def scbus(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scbus.cli", *args], capture_output=True, text=True, timeout=timeout)


def ready_in_rabbitmqctl(rabbit, queue: str, vhost: str = "/") -> int:
    out = rabbit.ctl("list_queues", "-p", vhost, "-q", "--no-table-headers", "name", "messages_ready")
    for line in out.splitlines():
        name, _, count = line.partition("\t")
        if name.strip() == queue:
            return int(count)
    raise AssertionError(f"{queue} not in {out!r}")


def test_status_answers_now_from_busy_processes_and_sees_deaths(rabbit, tmp_path):
    # A vhost of its own: the outputs of its 10,000 messages land in scbus.unrouted, which
    # would otherwise be the one every later test on this node lists.
    url = fresh_vhost(rabbit, "status-busy")
    config = tmp_path / "scbus.toml"
    buses = []
    try:
        for label in ("status-1", "status-2"):
            workdir = tmp_path / label
            workdir.mkdir()
            text = CONFIG.format(name=label, url=url)
            (workdir / "scbus.toml").write_text(text)
            config.write_text(text)
            bus = Twistd(str(workdir), str(workdir / "scbus.toml"))
            buses.append(bus)
        for bus in buses:
            wait_in_log(bus, "busy: consuming", 60)
        producer = Producer(url)
        producer.channel.queue_purge("scbus.app.busy")
        for n in range(10_000):
            producer.publish("noloss.Slow", {"n": n, "seconds": 0.05})

        # Out of band: both answer at once although each has thousands waiting.
        ping = scbus("ping", "--config", str(config), "--timeout", "1.5")
        assert ping.returncode == 0, ping.stderr
        times = [float(t) for t in re.findall(r"answered in ([0-9.]+) ms", ping.stdout)]
        print("\nping round trips (ms):", times)
        assert len(times) == 2 and max(times) < 500

        asked = time.monotonic()
        status = scbus("status", "--config", str(config), "--json", "--timeout", "1.5")
        ctl_ready = ready_in_rabbitmqctl(rabbit, "scbus.app.busy", "status-busy")
        between = time.monotonic() - asked
        report = json.loads(status.stdout)
        assert status.returncode == 0, status.stdout + status.stderr
        assert report["healthy"] and len(report["processes"]) == 2
        seen = [s["queued"] for p in report["processes"] for s in p["app_status"] if s["name"] == APP]
        print("backlog: status says", seen, report["queues"][APP], "rabbitmqctl says", ctl_ready)
        # 2 processes drain about 40 messages a second (50 ms each, one thread each):
        # allow for the seconds between the readings.
        tolerance = 40 * between + 20
        for queued in [*seen, report["queues"][APP]["ready"]]:
            assert queued > 5000 and abs(queued - ctl_ready) <= tolerance, (queued, ctl_ready, tolerance)
        assert report["queues"][APP]["consumers"] == 2
        for process in report["processes"]:
            [busy] = [s for s in process["app_status"] if s["name"] == APP]
            assert busy["in_flight"] >= 1 and busy["oldest_in_flight_age"] is not None

        # In band: a heartbeat waits its turn behind a short backlog; the answer says how long.
        producer.channel.queue_purge("scbus.app.busy")
        collector = Collector(url, "scbus.HeartbeatResponse", "test.heartbeats")
        for n in range(40):
            producer.publish("noloss.Slow", {"n": n, "seconds": 0.05})
        producer.publish("scbus.Heartbeat", {"app_name": APP})
        deadline = time.monotonic() + 30
        responses = []
        while not responses and time.monotonic() < deadline:
            method, _p, body = collector.channel.basic_get("test.heartbeats", auto_ack=True)
            if method is None:
                time.sleep(0.1)
                continue
            responses.append(json.loads(body)["data"])
        [response] = responses
        print("heartbeat:", response)
        assert response["app_name"] == APP
        assert response["queued_seconds"] + response["handling_seconds"] > 0.3
        collector.close()

        # A wedged process (reactor stopped) holds its consumer but does not answer.
        os.kill(buses[1].process.pid, signal.SIGSTOP)
        try:
            status = scbus("status", "--config", str(config), "--timeout", "1.5")
            print(status.stdout)
            assert status.returncode == 1
            assert "is not answering" in status.stdout
            assert "answered: status-1@" in status.stdout  # which one still answers
        finally:
            os.kill(buses[1].process.pid, signal.SIGCONT)

        # A dead process disappears: status reports the app short of processes.
        os.kill(buses[1].process.pid, signal.SIGKILL)
        buses[1].process.wait(10)
        time.sleep(1.0)
        status = scbus("status", "--config", str(config), "--timeout", "1.5")
        print(status.stdout)
        assert status.returncode == 1
        assert "app busy: 1 live process(es) answered, 2 expected" in status.stdout
        producer.channel.queue_purge("scbus.app.busy")
        producer.close()
    finally:
        for bus in buses:
            bus.kill()


def test_status_needs_the_broker_or_the_http_endpoint(tmp_path):
    config = tmp_path / "local.toml"
    config.write_text('[apps.x]\nbuilder = "apps.clock:make_clock"\n')
    out = scbus("status", "--config", str(config))
    assert out.returncode == 2 and "through its HTTP endpoint: set [http] port" in out.stderr
    config.write_text('[transport]\ntype = "amqp"\nurl = "amqp://guest:guest@127.0.0.1:1/"\n[apps.x]\nbuilder = "apps.clock:make_clock"\n')
    out = scbus("status", "--config", str(config))
    assert out.returncode == 3 and "cannot reach the broker" in out.stderr
    assert "guest:guest" not in out.stderr


def fresh_vhost(rabbit, name: str) -> str:
    rabbit.ctl("add_vhost", name)
    rabbit.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return rabbit.url.rsplit("/", 1)[0] + "/" + name


def test_a_bus_log_holds_no_pika_chatter(rabbit, tmp_path):
    """On a fresh vhost, with status asked twice: no NOT_FOUND warnings, no pika info lines."""
    url = fresh_vhost(rabbit, "quiet-log")
    config = tmp_path / "scbus.toml"
    config.write_text(CONFIG.format(name="quiet", url=url).replace("expected_processes = 2", "expected_processes = 1"))
    bus = Twistd(str(tmp_path), str(config))
    try:
        wait_in_log(bus, "busy: consuming", 60)
        for _ in range(2):
            status = scbus("status", "--config", str(config), "--timeout", "1.5")
            assert status.returncode == 0, status.stdout + status.stderr
        time.sleep(0.5)  # the bus logs a status call's channel closing after it answered
        assert bus.terminate() == -signal.SIGTERM
        log = bus.log()
    finally:
        bus.kill()
    assert "busy: consuming" in log and "Server Shut Down" in log
    assert "NOT_FOUND" not in log
    assert re.findall(r"\[pika[\w.]*#\w+\]", log) == []
    assert log.count("Received SIGTERM, shutting down.") == 1


def test_status_and_ping_return_once_every_expected_process_answered(rabbit, tmp_path):
    config = tmp_path / "scbus.toml"
    config.write_text(CONFIG.format(name="prompt", url=rabbit.url).replace("expected_processes = 2", "expected_processes = 1"))
    bus = Twistd(str(tmp_path), str(config))
    try:
        wait_in_log(bus, "busy: consuming", 60)
        # --timeout 120 with the command itself bounded at 60 s: waiting the timeout out fails.
        for command in (["status"], ["status", "--json"], ["ping"], ["ping", "--app", "busy"], ["ping", "--process", "prompt"]):
            out = scbus(*command, "--config", str(config), "--timeout", "120", timeout=60)
            assert out.returncode == 0, (command, out.stdout, out.stderr)
        assert "prompt@" in out.stdout

        # `scbus status --json | head`: the reader leaves early; no traceback.
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            out = subprocess.run(
                [sys.executable, "-m", "scbus.cli", "status", "--json", "--config", str(config)],
                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
            )
        finally:
            os.close(write_end)
        assert out.returncode == 1 and out.stderr == ""
    finally:
        bus.kill()


def test_an_unreachable_broker_says_why(rabbit, tmp_path):
    config = tmp_path / "scbus.toml"
    port = rabbit.url.split("@", 1)[1].split("/", 1)[0]
    for url, reason in [
        (f"amqp://guest:wrong@{port}/", "the broker refused the credentials of user 'guest'"),
        (f"amqps://guest:guest@{port}/", "TLS failed"),
    ]:
        config.write_text(CONFIG.format(name="unreachable", url=url))
        out = scbus("status", "--config", str(config), "--timeout", "5")
        assert out.returncode == 3 and reason in out.stderr, out.stderr
        assert out.stderr.count("\n") == 1 and "wrong" not in out.stderr
