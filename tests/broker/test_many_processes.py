"""
Three real twistd processes running the same app on a real RabbitMQ node: the app's idle
handler runs in one live process at a time, and another takes over when that one is
killed or stopped; `scbus status` says which process runs it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import pika
import pytest

from ..e2e.conftest import Twistd
from .test_processes import wait_in_log
from .test_status import scbus

HEARTBEAT = 2
EVERY = 1.0
PHASE = 8.0
CONFIG = """
[bus]
name = "{name}"
grace_period = 2

[transport]
type = "amqp"
url = "{url}"
heartbeat = {heartbeat}
reconnect_max_delay = 1

[apps.{app}]
builder = "tests.many_app:make_many"
max_in_flight = {in_flight}
{extra}

[apps.{app}.config]
every = {every}
work = {work}
"""

RUNS = "this process runs the idle handlers"


class Sink:
    """A queue of its own bound to a type's exchange: everything of that type, as dicts."""

    def __init__(self, url: str, wire_name: str, queue: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.queue = queue
        self.channel.exchange_declare(
            f"scbus.type.{wire_name}", "fanout", durable=True, arguments={"alternate-exchange": "scbus.unrouted"}
        )
        self.channel.queue_declare(queue, durable=True)
        self.channel.queue_bind(queue, f"scbus.type.{wire_name}")
        self.channel.queue_purge(queue)
        self.received: list[dict] = []

    def drain(self) -> list[dict]:
        while True:
            method, _props, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                return self.received
            self.received.append(json.loads(body)["data"])

    def close(self) -> None:
        try:
            self.connection.close()
        except Exception:
            pass


@pytest.fixture
def processes(tmp_path, rabbit):
    started: list[Twistd] = []

    def start(app: str, label: str, in_flight: int = 10, work: float = 0.0, extra: str = "") -> Twistd:
        workdir = tmp_path / label
        workdir.mkdir()
        config = workdir / "scbus.toml"
        config.write_text(CONFIG.format(
            name=label, url=rabbit.url, heartbeat=HEARTBEAT, app=app, in_flight=in_flight,
            every=EVERY, work=work, extra=extra,
        ))
        bus = Twistd(str(workdir), str(config))
        bus.config = str(config)  # type: ignore[attr-defined]
        started.append(bus)
        return bus

    yield start
    for bus in started:
        if bus.process.poll() is None:
            os.kill(bus.process.pid, signal.SIGCONT)
        bus.kill()


def wait_for_holder(buses: list[Twistd], marks: dict[int, int], timeout: float) -> tuple[Twistd, float]:
    """The first of C{buses} to log that it runs the idle handlers (after its mark), and when."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for bus in buses:
            if RUNS in bus.log()[marks.get(bus.process.pid, 0):]:
                return bus, time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"no process took the idle handlers over within {timeout}s")


def check_phase(ticks: list[dict], holder: int, start: float, end: float) -> tuple[int, int]:
    """Ticks in [start, end): (from the holder, from any other process)."""
    inside = [t for t in ticks if start <= t["at"] < end]
    mine = sum(1 for t in inside if t["pid"] == holder)
    return mine, len(inside) - mine


def test_idle_handlers_run_in_one_process_and_move_when_it_dies_or_stops(rabbit, processes):
    app = "idle_one"
    sink = Sink(rabbit.url, "many.Ticked", "test.many.ticked")
    try:
        buses = [processes(app, f"idle-{i}") for i in range(3)]
        for bus in buses:
            wait_in_log(bus, f"{app}: consuming", 90)
        first, _ = wait_for_holder(buses, {}, 30)
        phases = []  # (holder pid, from, to) in wall-clock time

        # 1. steady: only the holder ticks
        began = time.time()
        time.sleep(PHASE)
        # 2. SIGKILL of the holder: another takes over at once (its socket closes)
        marks = {b.process.pid: len(b.log()) for b in buses}
        killed_at, killed_wall = time.monotonic(), time.time()
        phases.append((first.process.pid, began, killed_wall))
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        alive = [b for b in buses if b is not first]
        second, took = wait_for_holder(alive, marks, 4 * HEARTBEAT + 10)
        after_kill = took - killed_at
        second_from = time.time()
        time.sleep(PHASE)
        # 3. SIGSTOP of the new holder: the broker's heartbeat check drops it
        marks = {b.process.pid: len(b.log()) for b in alive}
        stopped_at, stopped_wall = time.monotonic(), time.time()
        phases.append((second.process.pid, second_from, stopped_wall))
        os.kill(second.process.pid, signal.SIGSTOP)
        third_bus = next(b for b in alive if b is not second)
        third, took = wait_for_holder([third_bus], marks, 4 * HEARTBEAT + 10)
        after_stop = took - stopped_at
        third_from = time.time()
        time.sleep(PHASE)
        # 4. the stopped process wakes up: it must not run the idle handlers again
        woke_mark = len(second.log())
        os.kill(second.process.pid, signal.SIGCONT)
        wait_in_log(second, "idle handlers given up by this process", 15, after=woke_mark)
        time.sleep(2 * EVERY)
        phases.append((third.process.pid, third_from, time.time()))

        status = scbus("status", "--config", third.config, "--json", "--timeout", "2")
        answers = json.loads(status.stdout)["processes"]
        runners = [a["pid"] for a in answers for s in a["app_status"] if s["name"] == app and s["runs_idle"]]

        time.sleep(1.0)
        ticks = sink.drain()
    finally:
        sink.close()

    print(f"\ntake-over after SIGKILL {after_kill:.2f}s, after SIGSTOP {after_stop:.2f}s (heartbeat {HEARTBEAT}s)")
    print("ticks per process:", dict(Counter(t["pid"] for t in ticks)))
    counts = []
    for holder, start, end in phases:
        mine, others = check_phase(ticks, holder, start, end)
        expected = (end - start) / EVERY
        counts.append((holder, round(expected, 1), mine, others))
    print("per phase (holder, intervals, its ticks, other ticks):", counts)

    assert after_kill <= 2 * HEARTBEAT, after_kill
    assert after_stop <= 2 * HEARTBEAT, after_stop
    assert runners == [third.process.pid], (runners, status.stdout[-2000:])
    # Each interval ran once: the holder ran one tick per interval it held the lease (the
    # first one interval after taking over), and no other process ran one, give or take
    # one around each take-over.
    for _holder, expected, mine, others in counts:
        assert abs(mine - expected) <= 2, counts
        assert others <= 1, counts
    woke = [t for t in ticks if t["pid"] == second.process.pid and t["at"] >= stopped_wall]
    assert len(woke) <= 1, woke
    # Over the whole run, two runs of one interval (ticks closer than half an interval,
    # whoever ran them) happen at most once per take-over.
    times = sorted(t["at"] for t in ticks)
    doubled = sum(1 for a, b in zip(times, times[1:]) if b - a < EVERY / 2)
    assert doubled <= 2, doubled


def queue_row(rabbit, queue: str) -> dict[str, int]:
    """messages_ready, messages_unacknowledged and consumers of C{queue}, as rabbitmqctl says."""
    out = rabbit.ctl("list_queues", "-q", "--no-table-headers", "name", "messages_ready",
                     "messages_unacknowledged", "consumers")
    for line in out.splitlines():
        name, *counts = line.split("\t")
        if name.strip() == queue:
            return dict(zip(("ready", "unacked", "consumers"), map(int, counts)))
    raise AssertionError(f"{queue} not in {out!r}")


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.2)


def paused_processes(config: str, app: str) -> dict[int, bool]:
    status = scbus("status", "--config", config, "--json", "--timeout", "2")
    answers = json.loads(status.stdout)["processes"]
    return {a["pid"]: s["paused"] for a in answers for s in a["app_status"] if s["name"] == app}


def test_pause_everywhere_gives_prefetched_back_and_holds_for_processes_that_start_later(rabbit, processes):
    app = "pause_all"
    total = 400
    queue = f"scbus.app.{app}"
    sink = Sink(rabbit.url, "many.Done", "test.many.done")
    try:
        buses = [processes(app, f"pause-{i}", in_flight=5, work=0.2) for i in range(2)]
        for bus in buses:
            wait_in_log(bus, f"{app}: consuming", 90)
        config = buses[0].config
        producer = pika.BlockingConnection(pika.URLParameters(rabbit.url))
        channel = producer.channel()
        channel.confirm_delivery()
        for n in range(total):
            body = json.dumps({"type": "many.Job", "id": f"job-{n}", "created_at": time.time(),
                               "correlation_id": None, "data": {"n": n}})
            channel.basic_publish("scbus.type.many.Job", "", body.encode(),
                                  pika.BasicProperties(content_type="application/json", delivery_mode=2))
        producer.close()
        wait_until(lambda: len(sink.drain()) >= 20, 60, "handling started")

        paused = scbus("pause", app, "--config", config)
        print("\n" + paused.stdout)
        assert paused.returncode == 0, paused.stderr
        assert f"{app}: paused in 2 process(es)" in paused.stdout
        # In-flight deliveries finish; the prefetched rest goes back: nothing stays held.
        row = wait_until(lambda: (r := queue_row(rabbit, queue))["unacked"] == 0 and r, 15, "prefetched given back")
        assert row["consumers"] == 0, row
        handled_at_pause = len(sink.drain())
        assert handled_at_pause < total
        assert row["ready"] == total - handled_at_pause, (row, handled_at_pause)
        assert paused_processes(config, app) == {b.process.pid: True for b in buses}

        # A process that starts now starts paused: it consumes nothing.
        late = processes(app, "pause-late", in_flight=5, work=0.2)
        wait_in_log(late, f"{app}: paused", 90)
        time.sleep(2.0)
        assert paused_processes(config, app) == {b.process.pid: True for b in [*buses, late]}
        assert queue_row(rabbit, queue) == {"ready": total - handled_at_pause, "unacked": 0, "consumers": 0}
        assert len(sink.drain()) == handled_at_pause

        resumed = scbus("resume", app, "--config", config)
        print(resumed.stdout)
        assert resumed.returncode == 0 and f"{app}: resumed in 3 process(es)" in resumed.stdout
        wait_until(lambda: {d["n"] for d in sink.drain()} >= set(range(total)), 90, "every job handled")
        assert paused_processes(config, app) == {b.process.pid: False for b in [*buses, late]}
        done = sink.drain()
    finally:
        sink.close()
    by_process = Counter(d["pid"] for d in done)
    print("handled per process:", dict(by_process))
    assert {d["n"] for d in done} == set(range(total))
    assert by_process[late.process.pid] > 0  # the late process took work after the resume
