"""
Failure as a first-class input. Each case pushes numbered messages through a real bus
process on a real RabbitMQ, applies one fault, and reports sent / confirmed / handled /
lost / duplicated. Lost is always 0; duplicates only come from deliveries in flight at
the fault (at most the prefetch per fault).

    python -m pytest tests/faults -s      # the table is printed at the end
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid

import pika
import pytest

from ..broker.amqp_client import Collector, Producer, report
from ..broker.test_processes import wait_in_log
from ..e2e.conftest import Twistd
from ..rabbit import RabbitNode, available, free_port
from .proxy import FaultProxy

IN_FLIGHT = 20
CONFIG = """
[bus]
name = "{label}"
grace_period = {grace}

[transport]
type = "amqp"
client = "{client}"
{urls}
heartbeat = {heartbeat}
reconnect_max_delay = 1
queue_type = "{queue_type}"
{delivery_limit}

[apps.{app}]
builder = "tests.noloss_app:make_numbers"
max_in_flight = {in_flight}
threads = {threads}
stuck_after = {stuck_after}
config = {{ poison = {poison} }}
"""


class Bus:
    """Starts (and restarts) twistd bus processes for one app and one case."""

    def __init__(self, tmp_path, app, urls, **options):
        self.tmp_path = tmp_path
        self.app = app
        self.urls = urls
        self.options = {"heartbeat": 5, "queue_type": "classic", "in_flight": IN_FLIGHT, "threads": 0, "poison": [], "grace": 5, "client": "pika", "stuck_after": 300, **options}
        self.runs: list[Twistd] = []

    def start(self) -> Twistd:
        label = f"{self.app}-{len(self.runs)}"
        workdir = self.tmp_path / label
        workdir.mkdir()
        urls = f'url = "{self.urls[0]}"' if len(self.urls) == 1 else f"urls = {json.dumps(self.urls)}"
        config = workdir / "scbus.toml"
        limit = "delivery_limit = 2" if self.options["queue_type"] == "quorum" else ""  # quorum only
        config.write_text(CONFIG.format(label=label, app=self.app, urls=urls, delivery_limit=limit, **self.options))
        bus = Twistd(str(workdir), str(config))
        self.runs.append(bus)
        wait_in_log(bus, f"{self.app}: consuming", 90)
        return bus

    @property
    def current(self) -> Twistd:
        return self.runs[-1]

    def stop_all(self) -> None:
        for bus in self.runs:
            bus.kill()


@pytest.fixture
def bus_factory(tmp_path):
    made: list[Bus] = []

    def make(app, urls, **options):
        bus = Bus(tmp_path, f"{app}_{uuid.uuid4().hex[:6]}", urls, **options)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        bus.stop_all()


def publish(producer, numbers, wire="noloss.Numbered", **extra):
    for n in numbers:
        producer.publish(wire, {"n": n, **extra})


def handled_at_least(collector, count, timeout=60):
    deadline = time.monotonic() + timeout
    while len(collector.counts) < count and time.monotonic() < deadline:
        collector.drain(0.2)
    assert len(collector.counts) >= count, f"only {len(collector.counts)} handled"


def finish(name, producer, collector, expected, timeout=180, **extra):
    collector.wait_for(expected, timeout)
    figures = report(name, producer.sent, producer.confirmed, collector.counts, expected)
    figures.update(extra)
    RESULTS.append(figures)
    return figures


RESULTS: list[dict] = []


def test_bus_killed_several_times(rabbit, bus_factory):
    total, kills = 4000, 3
    bus = bus_factory("kill3", [rabbit.url])
    collector = Collector(rabbit.url, "noloss.Handled", f"faults.kill3.{bus.app}")
    bus.start()
    producer = Producer(rabbit.url)
    producer.declare_type("noloss.Numbered")
    publish(producer, range(total))
    for k in range(kills):
        handled_at_least(collector, 600 * (k + 1))
        os.kill(bus.current.process.pid, signal.SIGKILL)
        bus.current.process.wait(10)
        bus.start()
    figures = finish("bus SIGKILL x3", producer, collector, set(range(total)))
    assert figures["lost"] == 0 and figures["duplicated"] <= kills * IN_FLIGHT


def test_broker_restarted(rabbit, bus_factory):
    total = 4000
    bus = bus_factory("restart", [rabbit.url])
    collector = Collector(rabbit.url, "noloss.Handled", f"faults.restart.{bus.app}")
    bus.start()
    producer = Producer(rabbit.url)
    producer.declare_type("noloss.Numbered")
    publish(producer, range(2000))
    handled_at_least(collector, 300)
    sent, confirmed = producer.sent, producer.confirmed
    producer.close()
    collector.close()
    mark = len(bus.current.log())
    rabbit.restart()
    wait_in_log(bus.current, f"{bus.app}: consuming", 60, after=mark)
    producer = Producer(rabbit.url)
    producer.sent, producer.confirmed = sent, confirmed
    collector.reconnect()
    publish(producer, range(2000, total))
    figures = finish("broker restart", producer, collector, set(range(total)))
    assert figures["lost"] == 0 and figures["duplicated"] <= IN_FLIGHT


def test_connection_reset(rabbit, bus_factory):
    total = 4000
    proxy = FaultProxy(rabbit.port)
    try:
        bus = bus_factory("reset", [f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F"])
        collector = Collector(rabbit.url, "noloss.Handled", f"faults.reset.{bus.app}")
        bus.start()
        producer = Producer(rabbit.url)
        producer.declare_type("noloss.Numbered")
        publish(producer, range(total))
        handled_at_least(collector, 500)
        assert proxy.reset() >= 1
        figures = finish("TCP connection reset", producer, collector, set(range(total)))
        assert "AMQP connection lost" in bus.current.log()
        assert figures["lost"] == 0 and figures["duplicated"] <= IN_FLIGHT
    finally:
        proxy.close()


def test_connection_blackholed_is_detected_by_heartbeats(rabbit, bus_factory):
    total, heartbeat = 4000, 2
    proxy = FaultProxy(rabbit.port)
    try:
        bus = bus_factory("blackhole", [f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F"], heartbeat=heartbeat)
        collector = Collector(rabbit.url, "noloss.Handled", f"faults.blackhole.{bus.app}")
        bus.start()
        producer = Producer(rabbit.url)
        producer.declare_type("noloss.Numbered")
        publish(producer, range(total))
        handled_at_least(collector, 500)
        mark = len(bus.current.log())
        started = time.monotonic()
        assert proxy.blackhole() >= 1
        wait_in_log(bus.current, "the connection is dead", 4 * heartbeat + 5, after=mark)
        detected = time.monotonic() - started
        figures = finish("TCP blackhole", producer, collector, set(range(total)),
                         detected_s=round(detected, 2))
        print(f"blackhole detected after {detected:.2f}s (heartbeat {heartbeat}s)")
        assert detected <= 2 * heartbeat
        assert figures["lost"] == 0 and figures["duplicated"] <= IN_FLIGHT
    finally:
        proxy.close()


def test_a_handler_blocking_longer_than_the_heartbeat_keeps_the_connection(rabbit, bus_factory):
    heartbeat = 2
    bus = bus_factory("blocking", [rabbit.url], heartbeat=heartbeat, threads=2, in_flight=4)
    collector = Collector(rabbit.url, "noloss.Handled", f"faults.blocking.{bus.app}")
    bus.start()
    producer = Producer(rabbit.url)
    producer.declare_type("noloss.Slow")
    slow = range(0, 6)
    for n in slow:
        producer.publish("noloss.Slow", {"n": n, "seconds": 2.5 * heartbeat})
    producer.declare_type("noloss.Numbered")
    publish(producer, range(6, 506))
    figures = finish("handler blocks its thread > heartbeat", producer, collector, set(range(506)), timeout=120)
    log = bus.current.log()
    assert "AMQP connection lost" not in log and "connection is dead" not in log
    assert figures["lost"] == 0 and figures["duplicated"] == 0


@pytest.mark.parametrize("client", ["pika", "txamqp"])
def test_sigterm_lets_in_flight_handlers_send_and_acknowledge(rabbit, bus_factory, client):
    """
    Handlers that finish inside the grace period send their results and acknowledge
    their deliveries: the transport stops only after the bus drained.
    """
    slow = 4
    bus = bus_factory(f"sigterm_{client}", [rabbit.url], threads=4, in_flight=4, grace=10, client=client)
    collector = Collector(rabbit.url, "noloss.Handled", f"faults.sigterm.{bus.app}")
    bus.start()
    producer = Producer(rabbit.url)
    producer.declare_type("noloss.Slow")
    for n in range(slow):
        producer.publish("noloss.Slow", {"n": n, "seconds": 3})
    time.sleep(1.0)
    code = bus.current.terminate(timeout=30)
    log = bus.current.log()
    assert code == -signal.SIGTERM, log
    collector.drain(1.0)
    assert dict(collector.counts) == {n: 1 for n in range(slow)}  # every output was sent
    assert rabbit.queue_depth(f"scbus.app.{bus.app}") == 0  # every input acknowledged
    assert "stopping: 4 delivery(ies) in flight" in log, log
    assert "of 4 delivery(ies) in flight at stop, 4 acknowledged, 0 not sent" in log, log
    assert "grace period over" not in log
    # A new process finds nothing to do again.
    again = bus.start()
    time.sleep(2.0)
    collector.drain(1.0)
    assert dict(collector.counts) == {n: 1 for n in range(slow)}
    assert again.process.poll() is None and rabbit.queue_depth(f"scbus.app.{bus.app}") == 0
    RESULTS.append(report(f"SIGTERM, {slow} in flight ({client})", producer.sent,
                          producer.confirmed, collector.counts, set(range(slow))))


def test_sigterm_finishes_in_flight_and_leaves_the_rest_queued(rabbit, bus_factory):
    total = 60
    bus = bus_factory("sigterm", [rabbit.url], threads=4, in_flight=4, grace=10)
    collector = Collector(rabbit.url, "noloss.Handled", f"faults.sigterm.{bus.app}")
    bus.start()
    producer = Producer(rabbit.url)
    producer.declare_type("noloss.Slow")
    for n in range(total):
        producer.publish("noloss.Slow", {"n": n, "seconds": 0.4})
    handled_at_least(collector, 8)
    code = bus.current.terminate(timeout=30)
    assert code == -signal.SIGTERM
    collector.drain(1.0)
    handled = set(collector.counts)
    waiting = rabbit.queue_depth(f"scbus.app.{bus.app}")
    log = bus.current.log()
    assert "grace period over" not in log
    assert len(handled) + waiting == total, (len(handled), waiting)
    assert all(count == 1 for count in collector.counts.values())
    bus.start()
    figures = finish("SIGTERM mid-stream", producer, collector, set(range(total)),
                     handled_before_stop=len(handled), queued_at_stop=waiting)
    assert figures["lost"] == 0 and figures["duplicated"] == 0


def test_a_handler_that_never_returns_makes_status_unhealthy(rabbit, bus_factory):
    bus = bus_factory("wedged", [rabbit.url], threads=1, in_flight=1, stuck_after=2)
    bus.start()
    producer = Producer(rabbit.url)
    producer.declare_type("noloss.Slow")
    producer.publish("noloss.Slow", {"n": 1, "seconds": 600})
    config = os.path.join(bus.current.workdir, "scbus.toml")
    wait_in_log(bus.current, f"{bus.app}: stuck: noloss.Slow", 30)
    status = _scbus_status(config)
    assert status.returncode == 1, status.stdout + status.stderr
    [problem] = [line for line in status.stdout.splitlines() if line.startswith("PROBLEM:")]
    pid = bus.current.process.pid
    assert problem.startswith(f"PROBLEM: app {bus.app} in {bus.app}-0@") and f":{pid}: stuck" in problem
    time.sleep(3)
    assert bus.current.log().count(f"{bus.app}: stuck:") == 1  # once per episode


def _scbus_status(config):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "scbus.cli", "status", "--config", config, "--timeout", "2"],
                          capture_output=True, text=True, timeout=60)


def test_a_poison_message_is_quarantined_and_the_rest_handled(rabbit, bus_factory):
    total, poison = 300, 137
    # Prefetch 1: every message delivered with the poison one when it kills the process
    # has its delivery count raised too; with a larger prefetch, bystanders reach the
    # limit and are set aside with it (not lost: they are in scbus.dead and reported).
    bus = bus_factory("poison", [rabbit.url], queue_type="quorum", poison=[poison], in_flight=1)
    collector = Collector(rabbit.url, "noloss.Handled", f"faults.poison.{bus.app}")
    errors_queue = f"faults.poison.errors.{bus.app}"
    connection = pika.BlockingConnection(pika.URLParameters(rabbit.url))
    channel = connection.channel()
    channel.exchange_declare("scbus.type.scbus.AppErrorOccurred", "fanout", durable=True,
                             arguments={"alternate-exchange": "scbus.unrouted"})
    channel.queue_declare(errors_queue, durable=True)
    channel.queue_bind(errors_queue, "scbus.type.scbus.AppErrorOccurred")
    bus.start()
    producer = Producer(rabbit.url)
    producer.declare_type("noloss.Numbered")
    publish(producer, range(total))
    restarts = 0
    deadline = time.monotonic() + 150
    expected = set(range(total)) - {poison}
    while time.monotonic() < deadline:
        collector.drain(0.3)
        if bus.current.process.poll() is not None:
            restarts += 1
            assert restarts <= 6, "the poison message was never set aside"
            bus.start()
        if expected <= set(collector.counts) and bus.current.process.poll() is None:
            break
    figures = finish("poison message among good ones", producer, collector, expected,
                     consumer_deaths=restarts)
    assert restarts == 3  # the first delivery and delivery_limit (2) more, then set aside
    report_found = None
    for _ in range(100):
        method, _props, body = channel.basic_get(errors_queue, auto_ack=True)
        if method is None:
            time.sleep(0.1)
            continue
        data = json.loads(body)["data"]
        if data["error_type"] == "scbus.Quarantined" and data["message"]["data"]["n"] == poison:
            report_found = data
            break
    connection.close()
    assert report_found is not None and report_found["app_name"] == bus.app
    assert "quarantined" in report_found["error"]
    assert figures["lost"] == 0 and figures["duplicated"] <= restarts


def _bad_bodies(count, rng):
    makers = [
        lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40))),
        lambda: b"{not json",
        lambda: json.dumps({"type": "noloss.Numbered", "id": "x", "created_at": 1, "data": {"n": "seven"}}).encode(),
        lambda: json.dumps({"type": "noloss.Numbered", "id": "x", "created_at": 1, "data": {}}).encode(),
        lambda: json.dumps({"type": "noloss.NoSuchType", "id": "x", "created_at": 1, "data": {}}).encode(),
        lambda: "{\"type\": \"noloss.Numbered\", \"n\": \"é\"}".encode("latin-1"),
        lambda: b"[]",
    ]
    too_large = b"x" * (1024 * 1024 + 10)
    return [too_large if i % 100 == 99 else makers[i % len(makers)]() for i in range(count)]


def test_a_flood_of_malformed_bodies_among_good_ones(rabbit, bus_factory):
    good, bad = 1000, 1000
    bus = bus_factory("flood", [rabbit.url])
    collector = Collector(rabbit.url, "noloss.Handled", f"faults.flood.{bus.app}")
    bus.start()
    producer = Producer(rabbit.url)
    producer.declare_type("noloss.Numbered")
    rng = random.Random(7)
    bodies = _bad_bodies(bad, rng)
    dead_before = rabbit.queue_depth("scbus.dead") or 0
    exchange = "scbus.type.noloss.Numbered"
    for n in range(good):
        producer.publish("noloss.Numbered", {"n": n})
        body = bodies[n]
        content_type = "text/plain" if n % 10 == 9 else "application/json"
        producer.channel.basic_publish(exchange, "", body, pika.BasicProperties(content_type=content_type, delivery_mode=2))
        producer.sent += 1
        producer.confirmed += 1
    figures = finish("malformed flood mixed with good", producer, collector, set(range(good)))
    deadline = time.monotonic() + 30
    while (rabbit.queue_depth("scbus.dead") or 0) - dead_before < bad and time.monotonic() < deadline:
        time.sleep(0.2)
    dead = (rabbit.queue_depth("scbus.dead") or 0) - dead_before
    figures["dead_lettered"] = dead
    figures["lost"] = figures["lost"] + (bad - dead)
    assert figures["lost"] == 0 and dead == bad
    assert bus.current.process.poll() is None


@pytest.fixture(scope="module")
def cluster():
    reason = available()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    cookie = uuid.uuid4().hex.upper()
    nodes = [RabbitNode(name=f"scbus-c{i}-{free_port()}", cookie=cookie) for i in range(3)]
    try:
        for node in nodes:
            node.start()
        for node in nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", nodes[0].name)
            node.ctl("start_app")
        yield nodes
    finally:
        for node in nodes:
            node.cleanup()


def test_failover_across_a_three_node_cluster(cluster, bus_factory):
    total = 3000
    first, _second, third = cluster
    urls = [n.url for n in cluster]
    bus = bus_factory("cluster", urls, queue_type="quorum", heartbeat=2)
    collector = Collector(third.url, "noloss.Handled", "faults.cluster.handled")
    bus.start()
    producer = Producer(third.url)
    producer.declare_type("noloss.Numbered")
    publish(producer, range(total))
    handled_at_least(collector, 400)
    mark = len(bus.current.log())
    first.stop()  # the node the bus is connected to (the first address)
    wait_in_log(bus.current, f"{bus.app}: consuming", 90, after=mark)
    figures = finish("node of a 3-node cluster stopped", producer, collector, set(range(total)))
    assert figures["lost"] == 0 and figures["duplicated"] <= IN_FLIGHT
