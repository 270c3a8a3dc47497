"""
The bus as a user runs it, against a raw pika-Twisted loop, each in a process of its own,
on the same private broker, in the same run. Not a test: compare the ratios.

    python -m bench.twistd_relay [--messages 20000] [--prefetch 10,200] [--repeat 3]
        [--loops raw,bus,bus-txamqp] [--profile DIR] [--url URL]

Each run: N persistent envelopes of perf.In{n, payload of 200 characters} are preloaded
with plain pika into the input queue; then one process is started and relays each into
one output, published with confirms; the output is routed to a sink queue, and the
throughput is timed there, from 10% to 90% of the outputs (so that process start and
the last prefetch's drain are outside the window). Contenders:

  raw          python -m bench.relay_worker pika: basic_consume with the prefetch, each
               body published as it came (confirms), acked once confirmed, one by one
  raw-txamqp   the same loop on txAMQP (python -m bench.relay_worker txamqp)
  bus          twistd -n scbus --config=perf.toml: transport.type = "amqp", client =
               "pika", bus.log_level = "warn", one app (bench.perf_app:make_relay) at
               max_in_flight = the prefetch, its queue scbus.app.relay preloaded, the
               sink bound to scbus.type.perf.Out
  bus-txamqp   the same with client = "txamqp"
  bus-http     the bus with [http] on (port 0): the metrics observers
  bus-plain    the same config's service tree in a plain Python process, without twistd
               (python -m bench.relay_worker bus): what twistd itself adds
The contenders run in turn, round by round (every contender at every prefetch once per
round), so a busy machine slows them alike; each figure is the median of its rounds,
and each ratio the median of the ratios taken round by round. Beside the rate: the CPU
time per message in the window of the relaying process and of the broker (from /proc),
and how long the process took from its start to its first output.

Goals (median of per-round ratios): bus/raw >= 0.9 at prefetch 200 and >= 0.85 at
prefetch 10 (moonshot 1.0); bus-txamqp/raw >= 0.6.

--profile DIR: after the timed rounds, each bus contender once more at each prefetch
under py-spy (pip install py-spy), attached from 10% to 90% of the outputs; the collapsed
stacks go to DIR/<contender>-<prefetch>.txt (py-spy's raw format, --idle: time waiting
in the reactor's poll shows as such). --strace DIR: the same with strace -c, the system
calls made in that window. Such runs are not in the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import pika

from bench.broker import preload, start_node, wait_count
from bench.perf_app import PAYLOAD, In
from scbus import codec
from scbus.transports.amqp import topology

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
TICK = os.sysconf("SC_CLK_TCK")

APP = "relay"
IN_TYPE, OUT_TYPE = "perf.In", "perf.Out"
BUS_SINK = "bench.perf.sink"
RAW_IN, RAW_OUT, RAW_SINK = "bench.perf.raw.in", "bench.perf.raw.out", "bench.perf.raw.sink"

GOALS = {10: 0.85, 200: 0.9}
DEFAULT_GOAL = 0.9
TXAMQP_GOAL = 0.6
MOONSHOT = 1.0

CONFIG = """\
[bus]
name = "perf"
log_level = "warn"

[transport]
type = "amqp"
url = "{url}"
client = "{client}"

[apps.relay]
builder = "bench.perf_app:make_relay"
max_in_flight = {prefetch}
{extra}"""

HTTP = """
[http]
port = 0
"""


# --- the broker's side ----------------------------------------------------------------------


def blocking(url: str, fn: Callable[[Any], Any]) -> Any:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return fn(connection.channel())
    finally:
        connection.close()


def declare_bus(ch: Any) -> None:
    """What the bus declares itself for its app, declared first so that the preload has a queue."""
    ch.exchange_declare(topology.UNROUTED_EXCHANGE, "fanout", durable=True)
    for wire in (IN_TYPE, OUT_TYPE):
        ch.exchange_declare(topology.type_exchange(wire), "fanout", durable=True, arguments=topology.exchange_arguments())
    queue = topology.app_queue(APP)
    ch.queue_declare(queue, durable=True, arguments=topology.queue_arguments("classic", None))
    ch.queue_bind(queue, topology.type_exchange(IN_TYPE))
    ch.queue_purge(queue)
    ch.queue_declare(BUS_SINK, durable=True)
    ch.queue_bind(BUS_SINK, topology.type_exchange(OUT_TYPE))
    ch.queue_purge(BUS_SINK)


def declare_raw(ch: Any) -> None:
    ch.queue_declare(RAW_IN, durable=True)
    ch.queue_purge(RAW_IN)
    ch.exchange_declare(RAW_OUT, "fanout", durable=True)
    ch.queue_declare(RAW_SINK, durable=True)
    ch.queue_bind(RAW_SINK, RAW_OUT)
    ch.queue_purge(RAW_SINK)


def bodies(n: int) -> list[bytes]:
    """The bus's own envelopes of n inputs: the bytes every contender relays."""
    return [codec.encode(In(n=i, payload=PAYLOAD)) for i in range(n)]


def beam_pid(node: Any) -> int | None:
    """The broker's Erlang VM, a descendant of the node's start script."""
    if node is None or node.process is None:
        return None
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
        names[int(entry)] = name
    for pid, name in names.items():
        if not name.startswith("beam"):
            continue
        up = pid
        while up > 1:
            up = parents.get(up, 1)
            if up == node.process.pid:
                return pid
    return None


def cpu_seconds(pid: int | None) -> float:
    """User and system CPU of a process so far (0 once it is gone)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


# --- one run --------------------------------------------------------------------------------


def contender_command(kind: str, url: str, prefetch: int, work: str) -> tuple[list[str], str]:
    """The command line of a contender and the sink it is timed at."""
    if kind in ("raw", "raw-txamqp"):
        client = "pika" if kind == "raw" else "txamqp"
        return [
            sys.executable, "-m", "bench.relay_worker", client, "--url", url, "--prefetch", str(prefetch),
            "--queue", RAW_IN, "--exchange", RAW_OUT,
        ], RAW_SINK
    client = "txamqp" if kind == "bus-txamqp" else "pika"
    extra = HTTP if kind == "bus-http" else ""
    with open(os.path.join(work, "perf.toml"), "w") as f:
        f.write(CONFIG.format(url=url, client=client, prefetch=prefetch, extra=extra))
    if kind == "bus-plain":
        return [sys.executable, "-m", "bench.relay_worker", "bus", "--config", "perf.toml"], BUS_SINK
    return [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "scbus", "--config=perf.toml"], BUS_SINK


def crossing(samples: list[tuple[float, int, float, float]], target: float) -> tuple[float, float, float]:
    """(time, process CPU, broker CPU) where the sink's count reached C{target}, interpolated."""
    previous = samples[0]
    for sample in samples:
        if sample[1] >= target:
            span = sample[1] - previous[1]
            share = (target - previous[1]) / span if span else 1.0
            return tuple(p + share * (s - p) for p, s in zip((previous[0], previous[2], previous[3]), (sample[0], sample[2], sample[3])))  # type: ignore[return-value]
        previous = sample
    raise ValueError("never reached")


def run_one(kind: str, url: str, n: int, prefetch: int, payloads: list[bytes], broker: int | None,
            attach: list[str] | None = None, timeout: float = 300.0) -> dict[str, Any]:
    """
    One contender's run. C{attach}: a command ("{pid}" for the contender's) run from 10%
    to 90% of the outputs and ended with SIGINT, such as a profiler.
    """
    raw = kind.startswith("raw")
    blocking(url, declare_raw if raw else declare_bus)
    queue = RAW_IN if raw else topology.app_queue(APP)
    preload(url, "", queue, payloads, None if raw else IN_TYPE)
    wait_count(url, queue, n)
    work = tempfile.mkdtemp(prefix="scbus-perf-")
    command, sink = contender_command(kind, url, prefetch, work)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    poll = pika.BlockingConnection(pika.URLParameters(url))
    channel = poll.channel()
    log = open(os.path.join(work, "out.log"), "wb")
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    samples: list[tuple[float, int, float, float]] = []
    spy: subprocess.Popen[bytes] | None = None
    first_output = None
    try:
        deadline = time.monotonic() + timeout
        while True:
            before = time.perf_counter()
            count = channel.queue_declare(sink, passive=True).method.message_count
            at = (before + time.perf_counter()) / 2
            samples.append((at, count, cpu_seconds(process.pid), cpu_seconds(broker)))
            if first_output is None and count:
                first_output = at - started
            if attach and spy is None and count >= 0.1 * n:
                spy = subprocess.Popen(
                    [part.replace("{pid}", str(process.pid)) for part in attach],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            if spy is not None and count >= 0.9 * n and spy.poll() is None:
                spy.send_signal(signal.SIGINT)
            if count >= n:
                break
            if process.poll() is not None:
                raise RuntimeError(f"{kind} exited ({process.returncode}) at {count} of {n}; see {work}/out.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind}: {count} of {n} outputs after {timeout}s")
            time.sleep(0.005)
        left = channel.queue_declare(queue, passive=True).method.message_count
    finally:
        if spy is not None:
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)
            spy.wait(60)
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        poll.close()
    if left:
        raise RuntimeError(f"{kind}: {left} inputs still queued with every output counted")
    t10, cpu10, broker10 = crossing(samples, 0.1 * n)
    t90, cpu90, broker90 = crossing(samples, 0.9 * n)
    window = 0.8 * n
    shutil.rmtree(work, ignore_errors=True)
    return {
        "msgs_per_s": window / (t90 - t10),
        "cpu_us_per_msg": (cpu90 - cpu10) / window * 1e6,
        "broker_cpu_us_per_msg": (broker90 - broker10) / window * 1e6 if broker else None,
        "first_output_s": first_output,
    }


# --- rounds and figures ---------------------------------------------------------------------


def median_ratio(runs: dict[str, list[dict[str, Any]]], a: str, b: str, key: str = "msgs_per_s") -> float | None:
    if not runs.get(a) or not runs.get(b):
        return None
    return round(statistics.median(x[key] / y[key] for x, y in zip(runs[a], runs[b])), 3)


def figures(prefetch: int, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    def med(kind: str, key: str) -> float | None:
        values = [r[key] for r in runs[kind] if r[key] is not None]
        return round(statistics.median(values), 1) if values else None

    out: dict[str, Any] = {
        "prefetch": prefetch,
        "msgs_per_s": {k: round(med(k, "msgs_per_s") or 0) for k in runs},
        "all_runs": {k: [round(r["msgs_per_s"]) for r in v] for k, v in runs.items()},
        "cpu_us_per_msg": {k: med(k, "cpu_us_per_msg") for k in runs},
        "broker_cpu_us_per_msg": {k: med(k, "broker_cpu_us_per_msg") for k in runs},
        "first_output_s": {k: med(k, "first_output_s") for k in runs},
        "ratios": {},
    }
    for kind in runs:
        if kind != "raw":
            out["ratios"][f"{kind}/raw"] = median_ratio(runs, kind, "raw")
    if "raw-txamqp" in runs and "bus-txamqp" in runs:
        out["ratios"]["bus-txamqp/raw-txamqp"] = median_ratio(runs, "bus-txamqp", "raw-txamqp")
    return out


def summary(results: list[dict[str, Any]]) -> list[str]:
    def goal_line(what: str, value: float | None, goal: float) -> str:
        if value is None:
            return f"{what:40} {'-':>7} (not run)"
        verdict = "met" if value >= goal else "NOT met"
        extra = f"; moonshot {MOONSHOT}: {'met' if value >= MOONSHOT else 'not yet'}" if goal != TXAMQP_GOAL else ""
        return f"{what:40} {value:>7} (goal >= {goal}: {verdict}{extra})"

    lines = []
    for t in results:
        p = t["prefetch"]
        lines.append(goal_line(f"prefetch {p}: bus/raw", t["ratios"].get("bus/raw"), GOALS.get(p, DEFAULT_GOAL)))
        lines.append(goal_line(f"prefetch {p}: bus-txamqp/raw", t["ratios"].get("bus-txamqp/raw"), TXAMQP_GOAL))
        for name, value in t["ratios"].items():
            if name not in ("bus/raw", "bus-txamqp/raw"):
                lines.append(f"prefetch {p}: {name} {value}")
        lines.append(f"prefetch {p}: msg/s " + ", ".join(f"{k} {v:,}" for k, v in t["msgs_per_s"].items()))
        lines.append(f"prefetch {p}: CPU us/msg " + ", ".join(f"{k} {v}" for k, v in t["cpu_us_per_msg"].items()))
        if any(v is not None for v in t["broker_cpu_us_per_msg"].values()):
            lines.append(f"prefetch {p}: broker CPU us/msg " + ", ".join(
                f"{k} {v}" for k, v in t["broker_cpu_us_per_msg"].items()))
        lines.append(f"prefetch {p}: first output after s " + ", ".join(
            f"{k} {v}" for k, v in t["first_output_s"].items()))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="use this broker instead of starting a private node")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--prefetch", default="10,200", help="comma-separated, e.g. 10,200")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loops", default="raw,bus,bus-txamqp",
                        help="comma-separated: raw, raw-txamqp, bus, bus-txamqp, bus-http, bus-plain (raw always runs)")
    parser.add_argument("--profile", default=None, metavar="DIR", help="py-spy profiles of the contenders here")
    parser.add_argument("--native", action="store_true", help="with --profile: C frames too (py-spy --native)")
    parser.add_argument("--strace", default=None, metavar="DIR",
                        help="like --profile, strace -c's count of system calls instead (DIR/<contender>-<prefetch>.strace)")
    args = parser.parse_args()
    prefetches = [int(p) for p in args.prefetch.split(",") if p.strip()]
    kinds = ["raw"] + [k.strip() for k in args.loops.split(",") if k.strip() and k.strip() != "raw"]
    node = None
    url = args.url
    if url is None:
        node = start_node()
        url = node.url
    try:
        broker = beam_pid(node)
        payloads = bodies(args.messages)
        runs: dict[int, dict[str, list[dict[str, Any]]]] = {p: {k: [] for k in kinds} for p in prefetches}
        for round_number in range(args.repeat):
            for prefetch in prefetches:
                for kind in kinds:
                    result = run_one(kind, url, args.messages, prefetch, payloads, broker)
                    runs[prefetch][kind].append(result)
                    print(f"round {round_number + 1} prefetch {prefetch} {kind}: {result['msgs_per_s']:,.0f} msg/s, "
                          f"{result['cpu_us_per_msg']:.1f} us/msg", file=sys.stderr)
        results = [figures(p, runs[p]) for p in prefetches]
        for where, suffix in ((args.profile, "txt"), (args.strace, "strace")):
            if not where:
                continue
            os.makedirs(where, exist_ok=True)
            for prefetch in prefetches:
                for kind in kinds:
                    path = os.path.join(os.path.abspath(where), f"{kind}-{prefetch}.{suffix}")
                    if suffix == "txt":
                        attach = [os.path.join(BIN, "py-spy"), "record", "--pid", "{pid}", "--rate", "200",
                                  "--format", "raw", "--idle", "--output", path, *(["--native"] if args.native else [])]
                    else:
                        attach = ["strace", "-c", "-f", "-p", "{pid}", "-o", path]
                    run_one(kind, url, args.messages, prefetch, payloads, broker, attach=attach)
                    print(f"{suffix}: {path}", file=sys.stderr)
    finally:
        if node is not None:
            node.cleanup()
    print(json.dumps({"messages": args.messages, "repeat": args.repeat, "throughput": results}, indent=2))
    print("\n".join(summary(results)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
