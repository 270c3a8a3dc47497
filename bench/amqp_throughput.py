"""
The bus over RabbitMQ against a raw pika-Twisted loop doing the same work on the same
broker in the same run. Not a test: compare the ratios, not the absolute numbers.

    python -m bench.amqp_throughput [--messages 20000] [--prefetch 10,200] [--backlog 200000]
        [--loops raw,bus] [--samples 0]

Starts its own private RabbitMQ node (as the tests do) unless --url is given.

1. throughput: N messages preloaded into a queue; each is consumed, answered by one
   published message (publisher confirms), and acknowledged after the confirm.
     raw          pika's TwistedProtocolConnection, the body passed through as bytes
     raw+json     the same, also decoding the JSON and encoding an answer
     bus          MainMessageBus + AMQPTransport (pika), the handler returns one message
     raw txamqp   the raw loop on txAMQP (its own publish and ack; scbus's confirm handling)
     bus txamqp   the bus with client = "txamqp"
   Timed from the first message handled to the last, at each prefetch given (10 and 200
   by default), the loops interleaved round by round so that a busy machine slows them
   alike. Client CPU per message is this process's alone (the broker runs apart).
   Goals printed with the ratios: bus/raw >= 0.8 at every prefetch, bus txamqp / raw
   txamqp >= 0.9 (best of the rounds against best), then the median of the ratios taken
   round by round, which one lucky run of either loop does not set.
2. latency: one message at a time through a two-app chain (ping -> pong), p50/p99.
   Goal: p99 <= 5 ms.
3. memory: the bus's peak RSS (a real twistd process) while --backlog messages wait in
   its queue, against the same process with an empty queue. Goal: <= 100 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import pika
from pika.adapters.twisted_connection import TwistedProtocolConnection
from twisted.internet import defer, reactor, task, threads
from twisted.internet.protocol import ClientCreator

from bench.broker import envelope, preload, queue_count, start_node, wait_count
from scbus.appbus import ApplicationMessageBus
from scbus.mainbus import MainMessageBus
from scbus.message import Message
from scbus.transports.amqp import AMQPTransport, parse_amqp_settings
from scbus.transports.amqp import topology

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: CPU seconds per message of the last loop run (this process only; the broker is apart).
CPU: list[float] = []
#: Acknowledgements per basic.ack frame the bus wrote in its last loop (coalescing).
ACKS_PER_FRAME: list[float] = []


class BenchIn(Message, wire_name="bench.In"):
    n: int


class BenchOut(Message, wire_name="bench.Out"):
    n: int


class Ping(Message, wire_name="bench.Ping"):
    n: int


class Pong(Message, wire_name="bench.Pong"):
    n: int
    sent_at: float


def blocking(url, fn):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return fn(connection.channel())
    finally:
        connection.close()


async def connect(url):
    params = pika.URLParameters(url)
    connection = await ClientCreator(reactor, TwistedProtocolConnection, params).connectTCP(params.host, params.port)
    connection.transport.setTcpNoDelay(True)  # as the transport does
    await connection.ready
    return connection


def _declare_raw(ch):
    ch.queue_declare("bench.raw.in", durable=True)
    ch.queue_purge("bench.raw.in")
    ch.exchange_declare("bench.raw.out", "fanout", durable=True)
    ch.queue_declare("bench.raw.sink", durable=True)
    ch.queue_bind("bench.raw.sink", "bench.raw.out")
    ch.queue_purge("bench.raw.sink")


async def preload_raw(url, n):
    """The raw loops' queues, with n messages waiting."""
    await threads.deferToThread(blocking, url, _declare_raw)
    bodies = [envelope("bench.In", i) for i in range(n)]
    await threads.deferToThread(preload, url, "", "bench.raw.in", bodies)
    await threads.deferToThread(wait_count, url, "bench.raw.in", n)


async def raw_loop_txamqp(url, n, prefetch):
    """
    The same raw loop on txAMQP: its own basic_publish and basic_ack, one per message,
    with only what publisher confirms need at all taken from scbus's client (txAMQP has
    no handler for the broker's confirms).
    """
    from txamqp.content import Content

    from scbus.transports.amqp.txamqp_client import TxConnection, load_spec

    await preload_raw(url, n)
    settings = parse_amqp_settings({"url": url, "client": "txamqp"})
    params = pika.URLParameters(url)
    connection = await ClientCreator(reactor, TxConnection, settings, reactor, load_spec()).connectTCP(params.host, params.port)
    await connection.ready
    ch_in = await connection.channel()
    await ch_in.qos(prefetch)
    ch_out = await connection.channel()
    await ch_out.confirm()
    consumer = await ch_in.consume("bench.raw.in")
    tx_in, tx_out = ch_in._channel, ch_out._channel  # txAMQP's own channels
    done = defer.Deferred()
    state = {"count": 0, "first": None}

    def on_message(raw):
        if state["first"] is None:
            state["first"] = time.perf_counter()
            state["cpu"] = time.process_time()

        def confirmed(_):
            tx_in.basic_ack(delivery_tag=raw.delivery_tag)
            state["count"] += 1
            if state["count"] == n:
                CPU.append((time.process_time() - state["cpu"]) / n)
                done.callback(time.perf_counter())

        content = Content(raw.body, properties={"content-type": "application/json", "delivery-mode": 2})
        tx_out.basic_publish(exchange="bench.raw.out", routing_key="", content=content)
        ch_out._confirms.expect().addCallback(confirmed)
        consumer.get().addCallback(on_message).addErrback(lambda f: None)

    for _ in range(prefetch):
        consumer.get().addCallback(on_message).addErrback(lambda f: None)
    end = await done
    connection.close()
    return n / (end - state["first"])


async def raw_loop(url, n, prefetch, with_json):
    await preload_raw(url, n)
    connection = await connect(url)
    ch_in = await connection.channel()
    await ch_in.basic_qos(prefetch_count=prefetch)
    ch_out = await connection.channel()
    await ch_out.confirm_delivery()
    queue, _tag = await ch_in.basic_consume("bench.raw.in", auto_ack=False)
    out_props = pika.BasicProperties(content_type="application/json", delivery_mode=2)
    done = defer.Deferred()
    state = {"count": 0, "first": None}

    def on_message(item):
        channel, method, _props, body = item
        if state["first"] is None:
            state["first"] = time.perf_counter()
            state["cpu"] = time.process_time()
        if with_json:
            data = json.loads(body)
            body = json.dumps({**data, "type": "bench.Out", "id": data["id"][::-1]}).encode()

        def confirmed(_):
            channel.basic_ack(method.delivery_tag)
            state["count"] += 1
            if state["count"] == n:
                CPU.append((time.process_time() - state["cpu"]) / n)
                done.callback(time.perf_counter())

        ch_out.basic_publish("bench.raw.out", "", body, out_props).addCallback(confirmed)
        queue.get().addCallback(on_message).addErrback(lambda f: None)

    for _ in range(prefetch):
        queue.get().addCallback(on_message).addErrback(lambda f: None)
    end = await done
    connection.close()
    return n / (end - state["first"])


def declare_bus_topology(url, app, in_type, out_type, sink):
    def declare(ch):
        ch.exchange_declare(topology.UNROUTED_EXCHANGE, "fanout", durable=True)
        for wire in (in_type, out_type):
            ch.exchange_declare(topology.type_exchange(wire), "fanout", durable=True, arguments=topology.exchange_arguments())
        queue = topology.app_queue(app)
        ch.queue_declare(queue, durable=True, arguments=topology.queue_arguments("classic", 20))
        ch.queue_purge(queue)
        ch.queue_bind(queue, topology.type_exchange(in_type))
        ch.queue_declare(sink, durable=True)
        ch.queue_bind(sink, topology.type_exchange(out_type))
        ch.queue_purge(sink)

    blocking(url, declare)


async def bus_loop(url, n, prefetch, client="pika"):
    await threads.deferToThread(declare_bus_topology, url, "bench", "bench.In", "bench.Out", "bench.bus.sink")
    bodies = [envelope("bench.In", i) for i in range(n)]
    await threads.deferToThread(preload, url, topology.type_exchange("bench.In"), "", bodies, "bench.In")
    await threads.deferToThread(wait_count, url, topology.app_queue("bench"), n)
    settings = parse_amqp_settings({"url": url, "client": client})
    settings.app_prefetch = {"bench": prefetch}
    transport = AMQPTransport(settings, bus_name="bench")
    bus = MainMessageBus("bench", transport)
    state = {"first": None}

    def handle(msg):
        if state["first"] is None:
            state["first"] = time.perf_counter()
            state["cpu"] = time.process_time()
        return BenchOut(n=msg.n)

    subs = {BenchIn: handle}
    bus.add_app("bench", ApplicationMessageBus("bench", subs), subs, max_in_flight=prefetch)
    transport.startService()
    bus.startService()
    runner = bus.apps["bench"].counters
    while runner.acked < n:
        await task.deferLater(reactor, 0.005, lambda: None)
    end = time.perf_counter()
    CPU.append((time.process_time() - state["cpu"]) / n)
    acks = getattr(transport._apps["bench"].channel, "acks", None)
    if acks is not None:
        ACKS_PER_FRAME.append(acks.acks / max(1, acks.frames))
    await bus.stopService()
    await transport.stopService()
    return n / (end - state["first"])


async def latency(url, samples):
    latencies = []
    settings = parse_amqp_settings({"url": url})
    transport = AMQPTransport(settings, bus_name="latency")
    bus = MainMessageBus("latency", transport)
    ping_subs = {Ping: lambda m: Pong(n=m.n, sent_at=m.created_at)}
    pong_subs = {Pong: lambda m: latencies.append(time.time() - m.sent_at)}
    bus.add_app("lat_ping", ApplicationMessageBus("lat_ping", ping_subs), ping_subs)
    bus.add_app("lat_pong", ApplicationMessageBus("lat_pong", pong_subs), pong_subs)
    transport.startService()
    bus.startService()
    while not all(a.ready for a in bus._apps.values()):
        await task.deferLater(reactor, 0.05, lambda: None)
    for i in range(samples):
        await transport.send(Ping(n=i))
        await task.deferLater(reactor, 0.02, lambda: None)
    deadline = time.monotonic() + 10
    while len(latencies) < samples and time.monotonic() < deadline:
        await task.deferLater(reactor, 0.05, lambda: None)
    await bus.stopService()
    await transport.stopService()
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    return {
        "samples": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "max_ms": round(ms[-1], 2),
    }


RSS_APP = '''
import time
from scbus import Message

class Slow(Message, wire_name="bench.Slow"):
    n: int

def make_slow(name, root_config, config):
    def on_slow(msg):
        time.sleep(0.005)
    return {Slow: on_slow}
'''

RSS_CONFIG = '''
[bus]
name = "rss"
[transport]
type = "amqp"
url = "{url}"
[apps.rss]
builder = "rss_app:make_slow"
threads = 2
max_in_flight = {prefetch}
'''


def peak_rss_kib(url, prefetch, backlog, seconds):
    """Run a twistd bus on the app's queue holding `backlog` messages; its peak RSS."""
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    with tempfile.TemporaryDirectory() as work:
        with open(os.path.join(work, "rss_app.py"), "w") as f:
            f.write(RSS_APP)
        with open(os.path.join(work, "scbus.toml"), "w") as f:
            f.write(RSS_CONFIG.format(url=url, prefetch=prefetch))
        declare_bus_topology(url, "rss", "bench.Slow", "bench.SlowOut", "bench.rss.sink")
        if backlog:
            batch = 20000
            for start in range(0, backlog, batch):
                preload(url, topology.type_exchange("bench.Slow"), "",
                        (envelope("bench.Slow", i) for i in range(start, min(backlog, start + batch))), "bench.Slow")
            wait_count(url, topology.app_queue("rss"), backlog, timeout=300)
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        process = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "--logfile=" + os.path.join(work, "log"), "scbus", "--config=scbus.toml"],
            cwd=work, env=env,
        )
        peak = 0
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(0.25)
                with open(f"/proc/{process.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak = max(peak, int(line.split()[1]))
            waiting = queue_count(url, topology.app_queue("rss"))
        finally:
            process.terminate()
            process.wait(30)
        blocking(url, lambda ch: ch.queue_purge(topology.app_queue("rss")))
        return peak, waiting


GOALS = {"bus_vs_raw": 0.8, "bus_txamqp_vs_raw_txamqp": 0.9, "p99_ms": 5.0, "peak_rss_mib": 100.0}


async def throughput(url, messages, prefetch, repeat, only=None):
    """Every loop at this prefetch, interleaved over C{repeat} rounds; the best of each."""
    loops = {
        "raw": lambda: raw_loop(url, messages, prefetch, False),
        "raw+json": lambda: raw_loop(url, messages, prefetch, True),
        "bus": lambda: bus_loop(url, messages, prefetch),
        "raw txamqp": lambda: raw_loop_txamqp(url, messages, prefetch),
        "bus txamqp": lambda: bus_loop(url, messages, prefetch, "txamqp"),
    }
    if only:
        loops = {k: v for k, v in loops.items() if k in only}
    figures = {k: [] for k in loops}
    cpu = {k: [] for k in loops}
    acks_per_frame = {k: [] for k in loops if k.startswith("bus")}
    for _ in range(repeat):
        for name, loop in loops.items():
            figures[name].append(await loop())
            cpu[name].append(CPU[-1])
            if name in acks_per_frame and ACKS_PER_FRAME:
                acks_per_frame[name].append(ACKS_PER_FRAME.pop())
    best = {k: max(v) for k, v in figures.items()}

    def ratio(a, b):
        return round(best[a] / best[b], 3) if a in best and b in best else None

    def round_ratio(a, b):
        # Each round runs both loops back to back: a ratio per round pairs like with like,
        # and its median is not set by one lucky run of either.
        if a not in figures or b not in figures:
            return None
        return round(statistics.median(x / y for x, y in zip(figures[a], figures[b])), 3)

    return {
        "messages": messages,
        "prefetch": prefetch,
        "msgs_per_s": {k: round(v) for k, v in best.items()},
        "all_runs": {k: [round(x) for x in v] for k, v in figures.items()},
        "client_cpu_us_per_msg": {k: round(min(v) * 1e6, 1) for k, v in cpu.items()},
        "bus_acks_per_ack_frame": {k: round(statistics.median(v), 1) for k, v in acks_per_frame.items() if v},
        "bus_vs_raw": ratio("bus", "raw"),
        "bus_vs_raw_json": ratio("bus", "raw+json"),
        "bus_txamqp_vs_raw_txamqp": ratio("bus txamqp", "raw txamqp"),
        "median_round_bus_vs_raw": round_ratio("bus", "raw"),
        "median_round_bus_txamqp_vs_raw_txamqp": round_ratio("bus txamqp", "raw txamqp"),
    }


def summary(results) -> list[str]:
    """One line per goal: the figure, the goal, and whether it is met."""

    def line(what, value, goal, at_least=True):
        if value is None:
            return f"{what:44} {'-':>8} (not run)"
        met = value >= goal if at_least else value <= goal
        sign = ">=" if at_least else "<="
        return f"{what:44} {value:>8} (goal {sign} {goal}: {'met' if met else 'NOT met'})"

    lines = []
    for t in results["throughput"]:
        p = t["prefetch"]
        cpu = t["client_cpu_us_per_msg"]
        lines.append(line(f"prefetch {p}: bus/raw", t["bus_vs_raw"], GOALS["bus_vs_raw"]))
        lines.append(line(f"prefetch {p}: bus txamqp/raw txamqp", t["bus_txamqp_vs_raw_txamqp"],
                          GOALS["bus_txamqp_vs_raw_txamqp"]))
        lines.append(
            f"prefetch {p}: median of per-round ratios: bus/raw {t['median_round_bus_vs_raw']}, "
            f"bus txamqp/raw txamqp {t['median_round_bus_txamqp_vs_raw_txamqp']}"
        )
        lines.append(
            f"prefetch {p}: msg/s " + ", ".join(f"{k} {v:,}" for k, v in t["msgs_per_s"].items())
        )
        lines.append(
            f"prefetch {p}: client CPU us/msg " + ", ".join(f"{k} {v}" for k, v in cpu.items())
        )
        if t.get("bus_acks_per_ack_frame"):
            lines.append(f"prefetch {p}: acks per ack frame " + ", ".join(
                f"{k} {v}" for k, v in t["bus_acks_per_ack_frame"].items()))
    lat = results.get("latency_two_app_chain")
    if lat:
        lines.append(line("two-app chain p99 ms (low load)", lat["p99_ms"], GOALS["p99_ms"], False))
    rss = results.get("peak_rss")
    if rss:
        mib = round(rss["with_backlog_kib"] / 1024, 1)
        lines.append(line(f"peak RSS MiB, {rss['backlog']:,} queued", mib, GOALS["peak_rss_mib"], False))
    return lines


async def main(args):
    results = {}
    node = None
    url = args.url
    if url is None:
        node = await threads.deferToThread(start_node)
        url = node.url
    try:
        results["throughput"] = [
            await throughput(url, args.messages, prefetch, args.repeat, args.loops) for prefetch in args.prefetch
        ]
        if args.samples:
            results["latency_two_app_chain"] = await latency(url, args.samples)
        if args.backlog:
            prefetch = min(args.prefetch)
            empty, _ = await threads.deferToThread(peak_rss_kib, url, prefetch, 0, args.rss_seconds)
            full, waiting = await threads.deferToThread(peak_rss_kib, url, prefetch, args.backlog, args.rss_seconds)
            results["peak_rss"] = {
                "prefetch": prefetch,
                "empty_queue_kib": empty,
                "backlog": args.backlog,
                "still_waiting_at_end": waiting,
                "with_backlog_kib": full,
                "ratio": round(full / empty, 3) if empty else None,
            }
    finally:
        if node is not None:
            await threads.deferToThread(node.cleanup)
    print(json.dumps(results, indent=2))
    print("\n".join(summary(results)), file=sys.stderr)


def prefetches(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give one or more prefetch counts, e.g. 10,200")
    return values


def run():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="use this broker instead of starting a private node")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--prefetch", type=prefetches, default=[10, 200], help="comma-separated, e.g. 10,200")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--loops", type=lambda t: [x.strip() for x in t.split(",")], default=None,
                        help="only these loops, e.g. raw,bus (default: all five)")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--backlog", type=int, default=200000)
    parser.add_argument("--rss-seconds", type=float, default=15.0)
    args = parser.parse_args()
    outcome = {}

    def go():
        d = defer.Deferred.fromCoroutine(main(args))
        d.addErrback(lambda f: (outcome.setdefault("error", f), f.printTraceback()))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    return 1 if "error" in outcome else 0


if __name__ == "__main__":
    sys.exit(run())
