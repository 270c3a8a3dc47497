"""
Scale-out: what a second and third bus process add on one app's queue, and whether one
process stays as fast with many apps and many message types. Not a test: read the
ratios; the machine's other load moves the absolute numbers.

    python -m bench.scale_out [--io-messages 6000] [--cpu-messages 2000] [--flat-messages 10000]

Starts its own private RabbitMQ node (as the tests do) unless --url is given.

1. processes: 1, 2 and 3 real twistd processes share one app's queue, preloaded with
   N messages; each message is answered by one message (publisher confirms) and then
   acknowledged. The app starts paused everywhere (``scbus pause``), so every process is
   up before the clock starts at the resume; the clock stops when the last answer
   arrived.
     io    the handler waits --wait seconds (a Deferred), --io-in-flight at once
     cpu   the handler keeps the CPU busy for --burn seconds, --cpu-in-flight at once
   Prints messages per second (the best of --repeat runs) and the ratio to one process.
2. flat: one process (in this one) over the same broker; N messages spread over
   1, 10 and 50 apps (one type each), then over 1, 50 and 500 types of one app;
   handlers return nothing. Prints messages per second and the ratio to the first row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import types as pytypes
from typing import Any

import pika
from twisted.internet import defer, reactor, task, threads

from bench.broker import envelope, preload, queue_count, start_node
from scbus.appbus import ApplicationMessageBus
from scbus.control import CONTROL_EXCHANGE
from scbus.mainbus import MainMessageBus
from scbus.message import Message
from scbus.transports.amqp import AMQPTransport, parse_amqp_settings, topology
from scbus.transports.amqp.pause import marker_arguments, marker_body, marker_queue

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = "bench.scale.Work"
WORKED = "bench.scale.Worked"

CONFIG = """
[bus]
name = "scale-{label}"
grace_period = 1

[transport]
type = "amqp"
url = "{url}"
heartbeat = 30

[apps.{app}]
builder = "bench.scale_app:make_{kind}"
max_in_flight = {in_flight}
idle = "every"

[apps.{app}.config]
wait = {wait}
burn = {burn}
"""


# --- 1. processes -----------------------------------------------------------------------


def mark(url: str, app: str, paused: bool) -> None:
    """Pause or resume an app everywhere, as `scbus pause` / `scbus resume` do."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    queue = marker_queue(app)
    channel.queue_declare(queue, durable=True, arguments=marker_arguments("classic"))
    if paused:
        channel.basic_publish("", queue, marker_body("bench"), pika.BasicProperties(delivery_mode=2))
    else:
        channel.queue_purge(queue)
        channel.exchange_declare(CONTROL_EXCHANGE, "fanout", durable=True)
        replies = channel.queue_declare("", exclusive=True).method.queue  # answers unread
        channel.basic_publish(CONTROL_EXCHANGE, "", json.dumps({"op": "resume", "app": app}).encode(),
                              pika.BasicProperties(reply_to=replies))
    connection.close()


class Sink:
    """Every answer of the run, consumed as it comes; the time the last one arrived."""

    def __init__(self, url: str, queue: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(
            topology.type_exchange(WORKED), "fanout", durable=True, arguments=topology.exchange_arguments()
        )
        self.channel.queue_declare(queue, exclusive=True)
        self.channel.queue_bind(queue, topology.type_exchange(WORKED))
        self.channel.basic_qos(prefetch_count=2000)
        self.count = 0
        self.last = 0.0
        self.channel.basic_consume(queue, self._one, auto_ack=True)

    def _one(self, *_: Any) -> None:
        self.count += 1
        self.last = time.perf_counter()

    def wait_for(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {self.count} of {n} answers within {timeout}s")
            self.connection.process_data_events(time_limit=0.1)

    def close(self) -> None:
        self.connection.close()


def wait_in_log(path: str, text: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                if text in f.read():
                    return
        if process.poll() is not None or time.monotonic() > deadline:
            with open(path, encoding="utf-8", errors="replace") as f:
                raise SystemExit(f"a bus process did not get ready:\n{f.read()[-2000:]}")
        time.sleep(0.1)


def processes_run(url: str, kind: str, count: int, n: int, args: argparse.Namespace) -> float:
    app = f"scale_{kind}_{count}"
    in_flight = args.io_in_flight if kind == "io" else args.cpu_in_flight
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    mark(url, app, True)
    sink = Sink(url, f"bench.scale.sink.{app}")
    started = []
    with tempfile.TemporaryDirectory() as work:
        try:
            for i in range(count):
                config = os.path.join(work, f"{i}.toml")
                with open(config, "w") as f:
                    f.write(CONFIG.format(label=i, url=url, app=app, kind=kind, in_flight=in_flight,
                                          wait=args.wait, burn=args.burn))
                log = os.path.join(work, f"{i}.log")
                process = subprocess.Popen(
                    [twistd, "-n", "--pidfile=", f"--logfile={log}", "scbus", f"--config={config}"],
                    cwd=work, env=env,
                )
                started.append((process, log))
            for process, log in started:
                wait_in_log(log, f"{app}: paused", process)
            queue = topology.app_queue(app)
            preload(url, topology.type_exchange(WORK), "", (envelope(WORK, i) for i in range(n)), WORK)
            while queue_count(url, queue) < n:
                time.sleep(0.2)
            begin = time.perf_counter()
            mark(url, app, False)
            sink.wait_for(n, timeout=600)
            return n / (sink.last - begin)
        finally:
            sink.close()
            for process, _ in started:
                process.terminate()
            for process, _ in started:
                process.wait(30)


def scale_out(url: str, args: argparse.Namespace) -> None:
    cases = (
        ("io", args.io_messages, f"waits {args.wait * 1000:g} ms, {args.io_in_flight} in flight"),
        ("cpu", args.cpu_messages, f"burns {args.burn * 1000:g} ms CPU, {args.cpu_in_flight} in flight"),
    )
    for kind, n, what in cases:
        print(f"\n{kind}-bound handler ({what}), {n} messages, each answered and acknowledged")
        print(f"{'processes':>9}  {'msg/s':>8}  {'x one':>6}")
        one = None
        for count in (1, 2, 3):
            rate = max(processes_run(url, kind, count, n, args) for _ in range(args.repeat))
            one = one or rate
            print(f"{count:>9}  {rate:>8.0f}  {rate / one:>6.2f}", flush=True)


# --- 2. flat in apps and types ------------------------------------------------------------


def message_types(prefix: str, count: int) -> list[type[Message]]:
    return [
        pytypes.new_class(
            f"T{i}", (Message,), {"wire_name": f"{prefix}.T{i}"},
            lambda ns: ns.update({"__annotations__": {"n": int}, "__module__": __name__}),
        )
        for i in range(count)
    ]


async def flat_run(url: str, apps: int, type_count: int, n: int, attempt: int) -> float:
    prefix = f"bench.flat.a{apps}t{type_count}r{attempt}"
    classes = message_types(prefix, type_count)
    settings = parse_amqp_settings({"url": url, "heartbeat": 60})
    transport = AMQPTransport(settings, bus_name="flat")
    bus = MainMessageBus("flat", transport)
    names = [f"flat_a{apps}t{type_count}r{attempt}_{i}" for i in range(apps)]
    for i, name in enumerate(names):
        subs = {cls: (lambda msg: None) for cls in classes[i::apps]}
        bus.add_app(name, ApplicationMessageBus(name, subs), subs, max_in_flight=20)
    transport.startService()
    bus.startService()
    while not all(bus._apps[name].ready for name in names):
        await task.deferLater(reactor, 0.05, lambda: None)
    for name in names:
        bus.pause(name)  # consumers cancelled: the backlog waits in the queues
    await task.deferLater(reactor, 0.5, lambda: None)
    for offset in range(type_count):
        wire = classes[offset].wire_name
        bodies = [envelope(wire, i) for i in range(offset, n, type_count)]
        await threads.deferToThread(preload, url, topology.type_exchange(wire), "", bodies, wire)

    def total() -> int:
        return sum(queue_count(url, topology.app_queue(name)) for name in names)

    while await threads.deferToThread(total) < n:
        await task.deferLater(reactor, 0.2, lambda: None)
    begin = time.perf_counter()
    for name in names:
        bus.resume(name)
    while sum(bus._apps[name].counters.acked for name in names) < n:
        await task.deferLater(reactor, 0.005, lambda: None)
    rate = n / (time.perf_counter() - begin)
    await bus.stopService()
    await transport.stopService()
    return rate


async def flat(url: str, n: int, repeat: int) -> None:
    for label, cases in (("apps", [(1, 1), (10, 10), (50, 50)]), ("types", [(1, 1), (1, 50), (1, 500)])):
        print(f"\none process, {n} messages over 1 to many {label} (handlers return nothing)")
        print(f"{'apps':>5}  {'types':>5}  {'msg/s':>8}  {'x first':>7}")
        first = None
        for apps, type_count in cases:
            rate = max([await flat_run(url, apps, type_count, n, attempt) for attempt in range(repeat)])
            first = first or rate
            print(f"{apps:>5}  {type_count:>5}  {rate:>8.0f}  {rate / first:>7.2f}", flush=True)


# --- running ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="an existing broker (default: start a private node)")
    parser.add_argument("--io-messages", type=int, default=6000)
    parser.add_argument("--cpu-messages", type=int, default=2000)
    parser.add_argument("--flat-messages", type=int, default=10000)
    parser.add_argument("--wait", type=float, default=0.005, help="seconds an I/O-bound handler waits")
    parser.add_argument("--io-in-flight", type=int, default=10)
    parser.add_argument("--burn", type=float, default=0.001, help="CPU seconds a CPU-bound handler burns")
    parser.add_argument("--cpu-in-flight", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each case; the best is printed")
    parser.add_argument("--skip-processes", action="store_true")
    parser.add_argument("--skip-flat", action="store_true")
    args = parser.parse_args()
    node = None
    url = args.url
    if url is None:
        node = start_node()
        url = node.url
    print(f"scbus scale-out benchmark; {os.cpu_count()} CPUs (shared with the broker and anything else running)")
    try:
        if not args.skip_processes:
            scale_out(url, args)
        if not args.skip_flat:
            task.react(lambda _: defer.ensureDeferred(flat(url, args.flat_messages, args.repeat)))
    finally:
        if node is not None:
            node.cleanup()


if __name__ == "__main__":
    main()
