"""
Real twistd bus processes on a real RabbitMQ node: nothing acknowledged is lost when the
bus is killed or the broker restarts mid-stream, and two processes share an app's queue.
Each prints its counts: sent, confirmed, handled, lost, duplicated.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from ..e2e.conftest import Twistd
from .amqp_client import Collector, Producer, report

TOTAL = 5000
CONFIG = """
[bus]
name = "{name}"
grace_period = 5

[transport]
type = "amqp"
url = "{url}"
client = "{client}"
heartbeat = 5
reconnect_max_delay = 2

[apps.{app}]
builder = "tests.noloss_app:make_numbers"
max_in_flight = {in_flight}
"""


@pytest.fixture(params=["pika", "txamqp"])
def client(request):
    """Each process test runs with both AMQP clients."""
    return request.param


@pytest.fixture
def bus_processes(tmp_path, client):
    started: list[Twistd] = []

    def start(app: str, url: str, label: str, in_flight: int = 50) -> Twistd:
        workdir = tmp_path / label
        workdir.mkdir(exist_ok=True)
        config = workdir / "scbus.toml"
        config.write_text(CONFIG.format(name=label, url=url, app=f"{app}_{client}", in_flight=in_flight, client=client))
        bus = Twistd(str(workdir), str(config))
        started.append(bus)
        wait_in_log(bus, f"{app}_{client}: consuming", 60)
        return bus

    yield start
    for bus in started:
        bus.kill()


def wait_in_log(bus: Twistd, text: str, timeout: float, after: int = 0) -> None:
    deadline = time.monotonic() + timeout
    while text not in bus.log()[after:]:
        if bus.process.poll() is not None:
            raise AssertionError(f"the bus exited ({bus.process.returncode}):\n{bus.log()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the log within {timeout}s:\n{bus.log()[-3000:]}")
        time.sleep(0.1)


def publish(producer: Producer, numbers: range) -> None:
    for n in numbers:
        producer.publish("noloss.Numbered", {"n": n})


def wait_until_handled(collector: Collector, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(collector.counts) < count and time.monotonic() < deadline:
        collector.drain(0.2)


def test_no_loss_when_the_bus_is_killed_mid_stream(rabbit, bus_processes, client):
    app = "numbers_kill"
    collector = Collector(rabbit.url, "noloss.Handled", f"test.handled.kill.{client}")
    first = bus_processes(app, rabbit.url, "kill-1")
    producer = Producer(rabbit.url)
    producer.declare_type("noloss.Numbered")
    publish(producer, range(0, 2500))
    wait_until_handled(collector, 300, 60)
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(10)
    in_hand = len(collector.counts)
    publish(producer, range(2500, TOTAL))
    bus_processes(app, rabbit.url, "kill-2")
    collector.wait_for(set(range(TOTAL)), 180)
    figures = report(f"bus SIGKILL mid-stream ({client})", producer.sent, producer.confirmed, collector.counts, set(range(TOTAL)))
    producer.close()
    collector.close()
    assert 0 < in_hand < TOTAL, "the kill was not mid-stream"
    assert figures["lost"] == 0
    # Only deliveries in the killed process's hands (at most its prefetch) come twice.
    assert figures["duplicated"] <= 50


def test_no_loss_when_the_broker_restarts_mid_stream(rabbit, bus_processes, client):
    app = "numbers_restart"
    collector = Collector(rabbit.url, "noloss.Handled", f"test.handled.restart.{client}")
    bus = bus_processes(app, rabbit.url, "restart")
    producer = Producer(rabbit.url)
    producer.declare_type("noloss.Numbered")
    publish(producer, range(0, 2500))
    wait_until_handled(collector, 300, 60)
    sent, confirmed = producer.sent, producer.confirmed
    producer.close()
    collector.close()
    log_mark = len(bus.log())
    rabbit.restart()
    wait_in_log(bus, f"{app}_{client}: consuming", 60, after=log_mark)
    producer = Producer(rabbit.url)
    collector.reconnect()
    publish(producer, range(2500, TOTAL))
    collector.wait_for(set(range(TOTAL)), 180)
    figures = report(
        f"broker restart mid-stream ({client})", sent + producer.sent, confirmed + producer.confirmed,
        collector.counts, set(range(TOTAL)),
    )
    producer.close()
    collector.close()
    assert figures["lost"] == 0
    assert bus.process.poll() is None, "the bus must survive the broker restart"


def test_two_processes_share_an_apps_queue(rabbit, bus_processes, client):
    app = "numbers_shared"
    collector = Collector(rabbit.url, "noloss.Handled", f"test.handled.shared.{client}")
    bus_processes(app, rabbit.url, "shared-1", in_flight=10)
    bus_processes(app, rabbit.url, "shared-2", in_flight=10)
    producer = Producer(rabbit.url)
    producer.declare_type("noloss.Numbered")
    total = 2000
    publish(producer, range(total))
    collector.wait_for(set(range(total)), 120)
    figures = report(f"two processes, one queue ({client})", producer.sent, producer.confirmed, collector.counts, set(range(total)))
    print(f"handled per process: {dict(collector.pids)}")
    producer.close()
    collector.close()
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    assert len(collector.pids) == 2
    assert min(collector.pids.values()) >= total // 10, collector.pids
