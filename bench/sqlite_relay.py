"""
The relay on one SQLite file: the bus on its SQLite transport beside a raw sqlite3 loop
doing the same durable work and the embedded peers (persist-queue, huey, litequeue), in
the same run. Not a test: compare the ratios, not the absolute numbers.

    python -m bench.sqlite_relay [--messages 20000] [--prefetch 10,200] [--repeat 3]
        [--loops raw,bus,huey,...] [--latency 300] [--backlog 1000000] [--dir DIR]

The relay: N messages of about 220 bytes (a bus envelope of bench.relay.In) preloaded
into a queue in a fresh file before the clock starts; each is taken, answered by one
output stored durably in the same file, and removed (or acknowledged). Contenders:

  raw batch        sqlite3, WAL, synchronous NORMAL: claim a batch of max_in_flight
                   (UPDATE ... RETURNING), insert the outputs, delete the inputs, one
                   transaction per batch
  raw batch FULL   the same with synchronous FULL
  raw batch+json   raw batch, each output a new envelope from the decoded input (the
                   JSON work the bus does too)
  raw each         one transaction per message (claim one, insert, delete), NORMAL
  raw each FULL    the same with synchronous FULL
  bus              MainMessageBus on transport.type = "sqlite", durability "process",
                   built from a config file by the project's own build path, the relay
                   app at apps.relay.max_in_flight = the prefetch; the inputs preloaded
                   through the transport's own send
  bus power        the same with durability = "power"
  persist-queue    SQLiteAckQueue: get, put the output into a second queue, ack
  huey             huey.storage.SqliteStorage: dequeue, enqueue the output (its own
                   primitives, no huey consumer)
  litequeue        LiteQueue: pop, put the output into a second queue, done
The peers run with their own defaults (persist-queue and huey leave SQLite's synchronous
FULL, litequeue sets NORMAL) and never pickle (bodies are stored as the bytes they are).
They have no batch size, so they run once a round rather than at each prefetch. A peer
whose library is missing is skipped, saying so (pip install -e '.[bench]' brings them);
so is the bus while transport.type = "sqlite" is not known.

Every contender runs in this process, the rounds interleaved (every contender once per
round) so that a busy machine slows them alike; the bus is timed from its first handler
call to its last acknowledgement, which this transport commits with the handler's output
(the outputs go to a queue bound in the file that no app consumes, counted after). CPU
time (this process, all its threads, so the transport's writer too) is printed beside
wall time: the fsync-bound runs (FULL, and the peers) wait more than they compute. Goals, from the medians of
the per-round ratios, with the same ratio from CPU time beside:
  bus / raw batch >= 0.5 at each prefetch (moonshot 0.7)
  bus power / raw batch FULL >= 0.5
  bus / huey >= 20
--latency N: one Ping at a time through a two-app chain (ping -> pong) on the SQLite
transport, p50/p99; goal p99 <= 5 ms. --backlog N: the peak RSS of a real twistd bus
process whose file holds N queued messages, against the same process on an empty file;
goal: flat (at most 1.2 times the empty file's, and <= 100 MiB).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer, reactor, task

from bench.relay import LATENCIES, PAYLOAD, STARTED, In, Out, Ping
from scbus import codec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: (wall seconds, CPU seconds) of one run of a contender.
Timing = tuple[float, float]


def bodies(n: int) -> list[bytes]:
    """The bus's own envelopes of n inputs, the bytes every contender stores."""
    return [codec.encode(In(n=i, payload=PAYLOAD)) for i in range(n)]


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> Timing:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


# --- raw sqlite3 ------------------------------------------------------------------------

RAW_SCHEMA = (
    "CREATE TABLE messages (id INTEGER PRIMARY KEY, queue INTEGER NOT NULL, "
    "claimed INTEGER NOT NULL DEFAULT 0, body BLOB NOT NULL)",
    "CREATE INDEX messages_ready ON messages (queue, claimed, id)",
)
IN_QUEUE, OUT_QUEUE = 0, 1


def answer(body: bytes) -> bytes:
    """What a relay handler's output costs in JSON: the input decoded, an output envelope encoded."""
    data = json.loads(body)
    return json.dumps(
        {"type": "bench.relay.Out", "id": data["id"][::-1], "created_at": time.time(),
         "correlation_id": None, "data": data["data"]},
        separators=(",", ":"),
    ).encode()


def raw_loop(path: str, payloads: list[bytes], batch: int, synchronous: str, with_json: bool = False) -> Timing:
    """
    Claim up to C{batch} inputs, store their outputs, delete them: one transaction each
    time. With C{with_json}, each output is a new envelope made from the decoded input.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for statement in RAW_SCHEMA:
        conn.execute(statement)
    with conn:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO messages (queue, body) VALUES (?, ?)", ((IN_QUEUE, b) for b in payloads))
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    claim = (
        "UPDATE messages SET claimed = 1 WHERE id IN (SELECT id FROM messages "
        "WHERE queue = ? AND claimed = 0 ORDER BY id LIMIT ?) RETURNING id, body"
    )
    gc.collect()
    start = _clock()
    while True:
        conn.execute("BEGIN IMMEDIATE")
        claimed = conn.execute(claim, (IN_QUEUE, batch)).fetchall()
        if not claimed:
            conn.execute("COMMIT")
            break
        if with_json:
            outputs = [(OUT_QUEUE, answer(body)) for _, body in claimed]
        else:
            outputs = [(OUT_QUEUE, body) for _, body in claimed]
        conn.executemany("INSERT INTO messages (queue, body) VALUES (?, ?)", outputs)
        conn.executemany("DELETE FROM messages WHERE id = ?", ((rowid,) for rowid, _ in claimed))
        conn.execute("COMMIT")
    timing = _since(start)
    counts = dict(conn.execute("SELECT queue, count(*) FROM messages GROUP BY queue").fetchall())
    conn.close()
    _expect(counts.get(OUT_QUEUE, 0), len(payloads), counts.get(IN_QUEUE, 0))
    return timing


def _expect(outputs: int, n: int, left: int = 0) -> None:
    if outputs != n or left:
        raise RuntimeError(f"the relay made {outputs} outputs of {n}, {left} inputs left")


# --- peers --------------------------------------------------------------------------------

#: persist-queue's serializer slot, filled with the identity: bytes stored as they are.
AS_BYTES = types.SimpleNamespace(dumps=lambda b: b, loads=lambda b: b)


def _quick_preload(conn: sqlite3.Connection, put: Callable[[], None]) -> None:
    """A peer's own puts, fast: without syncs, the library's setting restored after."""
    before = conn.execute("PRAGMA synchronous").fetchone()[0]
    conn.execute("PRAGMA synchronous=OFF")
    put()
    conn.execute(f"PRAGMA synchronous={before}")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _peer_relay(
    n: int, conn: sqlite3.Connection, preload: Callable[[], object], step: Callable[[], bool],
    counts: Callable[[], tuple[int, int]], queues: tuple[Any, Any],
) -> Timing:
    """Preload, then C{step} (relay one message) until it finds none; checks every output was made."""
    _quick_preload(conn, preload)
    gc.collect()
    start = _clock()
    while step():
        pass
    timing = _since(start)
    outputs, left = counts()
    _expect(outputs, n, left)
    for queue in queues:
        queue.close()
    return timing


def persist_queue_loop(path: str, payloads: list[bytes]) -> Timing:
    from persistqueue import Empty, SQLiteAckQueue

    inputs = SQLiteAckQueue(path, name="in", serializer=AS_BYTES, auto_resume=False)
    outputs = SQLiteAckQueue(path, name="out", serializer=AS_BYTES, auto_resume=False)

    def step() -> bool:
        try:
            item = inputs.get(block=False, raw=True)
        except Empty:
            return False
        outputs.put(item["data"])
        inputs.ack(id=item["pqid"])
        return True

    return _peer_relay(
        len(payloads), inputs._putter, lambda: [inputs.put(b) for b in payloads], step,
        lambda: (outputs.qsize(), inputs.qsize()), (inputs, outputs),
    )


def huey_loop(path: str, payloads: list[bytes]) -> Timing:
    from huey.storage import SqliteStorage

    filename = os.path.join(path, "huey.db")
    inputs = SqliteStorage(name="in", filename=filename)
    outputs = SqliteStorage(name="out", filename=filename)

    def step() -> bool:
        data = inputs.dequeue()  # deleted as it is taken: at most once, by its design
        if data is None:
            return False
        outputs.enqueue(data)
        return True

    return _peer_relay(
        len(payloads), inputs.conn, lambda: [inputs.enqueue(b) for b in payloads], step,
        lambda: (outputs.queue_size(), inputs.queue_size()), (inputs, outputs),
    )


def litequeue_loop(path: str, payloads: list[bytes]) -> Timing:
    from litequeue import LiteQueue

    filename = os.path.join(path, "litequeue.db")
    inputs = LiteQueue(filename, queue_name="inputs")
    outputs = LiteQueue(filename, queue_name="outputs")
    # Its data column is TEXT: the envelopes go in as the JSON text they are.
    texts = [b.decode() for b in payloads]

    def step() -> bool:
        message = inputs.pop()
        if message is None:
            return False
        outputs.put(message.data)
        inputs.done(message.message_id)
        return True

    return _peer_relay(
        len(payloads), inputs.conn, lambda: [inputs.put(t) for t in texts], step,
        lambda: (outputs.qsize(), inputs.qsize()), (inputs, outputs),
    )


def missing_peers() -> dict[str, str]:
    """Peer contenders whose library is not installed, with the line that says so."""
    missing = {}
    for loop, module in (("persist-queue", "persistqueue"), ("huey", "huey"), ("litequeue", "litequeue")):
        try:
            __import__(module)
        except ImportError:
            missing[loop] = f"{loop}: skipped ({module} is not installed; pip install -e '.[bench]')"
    return missing


# --- the bus ------------------------------------------------------------------------------

BUS_CONFIG = """
[bus]
name = "relay"
log_level = "warn"
grace_period = 5.0

[transport]
type = "sqlite"
path = {path}
durability = "{durability}"
"""

RELAY_APP = """
[apps.relay]
builder = "bench.relay:make_relay"
max_in_flight = {prefetch}
"""


def sqlite_transport_missing() -> str | None:
    """Why the bus cannot run on SQLite here (None when it can)."""
    from scbus import config

    if "sqlite" not in config.TRANSPORTS:
        return 'bus: skipped (transport.type = "sqlite" is not known to this scbus)'
    return None


def write_config(work: str, durability: str, apps: str, name: str = "scbus.toml") -> str:
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(BUS_CONFIG.format(path=json.dumps(os.path.join(work, "bus.db")), durability=durability))
        f.write(apps)
    return path


def build(config_path: str) -> Any:
    """The service tree twistd would run for this file, on the running reactor."""
    from scbus.config import load_and_build
    from scbus.tap import make_bus_service

    loaded = load_and_build(config_path)
    return make_bus_service(loaded.config, loaded.subscriptions, reactor)


#: The queue the relay's outputs go to: bound in the file, consumed by no app, counted.
SINK = "sink"


async def preload_bus(config_path: str, messages: Iterable[In], chunk: int = 2000) -> int:
    """
    Queue the inputs through the transport's own send, with every app's queue bound (and
    the sink's, for the outputs) but the bus not started; then stop, leaving them in the
    file, where the routes stay too.
    """
    tree = build(config_path)
    transport = tree.transport
    await defer.maybeDeferred(transport.startService)
    await transport.setup(SINK, [Out])
    for name, app in tree.bus.apps.items():
        await transport.setup(name, app.message_types)
    sent = 0
    batch: list[defer.Deferred[None]] = []
    for message in messages:
        batch.append(transport.send(message))
        sent += 1
        if len(batch) >= chunk:
            await defer.gatherResults(batch, consumeErrors=True)
            batch = []
    if batch:
        await defer.gatherResults(batch, consumeErrors=True)
    await defer.maybeDeferred(transport.stopService)
    return sent


def _queued(db_path: str, queue: str) -> int:
    """Rows of one queue committed in the transport's file (its documented schema), read beside the bus."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return int(conn.execute(
            "SELECT count(*) FROM messages WHERE queue = (SELECT id FROM queues WHERE name = ?)", (queue,)
        ).fetchone()[0])
    finally:
        conn.close()


async def bus_loop(work: str, n: int, prefetch: int, durability: str) -> Timing:
    config_path = write_config(work, durability, RELAY_APP.format(prefetch=prefetch))
    await preload_bus(config_path, (In(n=i, payload=PAYLOAD) for i in range(n)))
    db_path = os.path.join(work, "bus.db")
    _expect(_queued(db_path, "relay"), n)
    tree = build(config_path)
    counters = tree.bus.apps["relay"].counters
    del STARTED[:]
    gc.collect()
    tree.startService()
    # Over this transport an acknowledgement is counted once its transaction, which
    # holds the handler's output too, is committed.
    while counters.acked < n:
        await task.deferLater(reactor, 0.002, lambda: None)
    timing = _since(STARTED[0])
    await tree.stopService()
    _expect(_queued(db_path, SINK), n, _queued(db_path, "relay"))
    return timing


# --- rounds -------------------------------------------------------------------------------

#: Contenders whose work depends on max_in_flight, run at each prefetch.
BATCHED = ("raw batch", "raw batch FULL", "raw batch+json", "bus", "bus power")
#: Contenders with no batch size, run once a round.
UNBATCHED = ("raw each", "raw each FULL", "persist-queue", "huey", "litequeue")


def contenders(payloads: list[bytes], n: int) -> dict[str, Callable[[str, int], Any]]:
    """name -> run(fresh directory, prefetch): a Timing, or a Deferred of one."""
    return {
        "raw batch": lambda d, p: raw_loop(os.path.join(d, "raw.db"), payloads, p, "NORMAL"),
        "raw batch FULL": lambda d, p: raw_loop(os.path.join(d, "raw.db"), payloads, p, "FULL"),
        "raw batch+json": lambda d, p: raw_loop(os.path.join(d, "raw.db"), payloads, p, "NORMAL", True),
        "raw each": lambda d, p: raw_loop(os.path.join(d, "raw.db"), payloads, 1, "NORMAL"),
        "raw each FULL": lambda d, p: raw_loop(os.path.join(d, "raw.db"), payloads, 1, "FULL"),
        "bus": lambda d, p: defer.Deferred.fromCoroutine(bus_loop(d, n, p, "process")),
        "bus power": lambda d, p: defer.Deferred.fromCoroutine(bus_loop(d, n, p, "power")),
        "persist-queue": lambda d, p: persist_queue_loop(d, payloads),
        "huey": lambda d, p: huey_loop(d, payloads),
        "litequeue": lambda d, p: litequeue_loop(d, payloads),
    }


async def run_one(base: str, run: Callable[[str, int], Any], prefetch: int) -> Timing:
    work = tempfile.mkdtemp(prefix="relay-", dir=base)
    try:
        return await defer.maybeDeferred(run, work, prefetch)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def throughput(args: argparse.Namespace, skipped: dict[str, str]) -> dict[str, Any]:
    payloads = bodies(args.messages)
    runs = contenders(payloads, args.messages)
    chosen = [k for k in runs if (not args.loops or k in args.loops or k.split()[0] in args.loops) and k not in skipped]
    # (name, prefetch) -> [Timing per round]; prefetch None for the unbatched ones.
    timings: dict[tuple[str, int | None], list[Timing]] = {}
    for round_no in range(args.repeat):
        for prefetch in args.prefetch:
            for name in chosen:
                if name in BATCHED:
                    timings.setdefault((name, prefetch), []).append(await run_one(args.dir, runs[name], prefetch))
                    _progress(round_no, name, prefetch, timings[(name, prefetch)][-1], args.messages)
        for name in chosen:
            if name in UNBATCHED:
                timings.setdefault((name, None), []).append(await run_one(args.dir, runs[name], 1))
                _progress(round_no, name, None, timings[(name, None)][-1], args.messages)
    return figures(timings, args.messages, args.prefetch)


def _progress(round_no: int, name: str, prefetch: int | None, timing: Timing, n: int) -> None:
    at = f" at {prefetch}" if prefetch is not None else ""
    print(f"  round {round_no + 1}: {name}{at}: {n / timing[0]:,.0f} msg/s, "
          f"{timing[1] / n * 1e6:.1f} us CPU/msg", file=sys.stderr, flush=True)


def figures(timings: dict[tuple[str, int | None], list[Timing]], n: int, prefetches: list[int]) -> dict[str, Any]:
    def rates(key: tuple[str, int | None], cpu: bool = False) -> list[float] | None:
        if key not in timings:
            return None
        return [n / (t[1] if cpu else t[0]) for t in timings[key]]

    def median_round_ratio(a: tuple[str, int | None], b: tuple[str, int | None], cpu: bool = False) -> float | None:
        # Both ran in the same round: a ratio per round pairs like with like, and its
        # median is not set by one lucky run of either.
        ra, rb = rates(a, cpu), rates(b, cpu)
        if ra is None or rb is None:
            return None
        return round(statistics.median(x / y for x, y in zip(ra, rb)), 3)

    rows = []
    for prefetch in prefetches:
        keys = [(name, prefetch) for name in BATCHED] + [(name, None) for name in UNBATCHED]
        present = [k for k in keys if k in timings]
        rows.append({
            "prefetch": prefetch,
            "msgs_per_s": {k[0]: round(statistics.median(rates(k) or [0])) for k in present},
            "all_runs": {k[0]: [round(x) for x in rates(k) or []] for k in present},
            "cpu_us_per_msg": {k[0]: round(statistics.median(t[1] for t in timings[k]) / n * 1e6, 1) for k in present},
            "bus_vs_raw_batch": median_round_ratio(("bus", prefetch), ("raw batch", prefetch)),
            "bus_vs_raw_batch_cpu": median_round_ratio(("bus", prefetch), ("raw batch", prefetch), True),
            "bus_vs_raw_batch_json": median_round_ratio(("bus", prefetch), ("raw batch+json", prefetch)),
            "bus_vs_raw_batch_json_cpu": median_round_ratio(("bus", prefetch), ("raw batch+json", prefetch), True),
            "bus_power_vs_raw_batch_full": median_round_ratio(("bus power", prefetch), ("raw batch FULL", prefetch)),
            "bus_power_vs_raw_batch_full_cpu": median_round_ratio(
                ("bus power", prefetch), ("raw batch FULL", prefetch), True),
            "bus_vs_huey": median_round_ratio(("bus", prefetch), ("huey", None)),
            "bus_vs_huey_cpu": median_round_ratio(("bus", prefetch), ("huey", None), True),
        })
    return {"messages": n, "rounds": len(next(iter(timings.values()), [])), "by_prefetch": rows}


# --- latency and memory -------------------------------------------------------------------

CHAIN_APPS = """
[apps.lat_ping]
builder = "bench.relay:make_ping"

[apps.lat_pong]
builder = "bench.relay:make_pong"
"""


async def latency(base: str, samples: int) -> dict[str, Any]:
    """One Ping at a time through ping -> pong on the SQLite transport."""
    work = tempfile.mkdtemp(prefix="latency-", dir=base)
    try:
        tree = build(write_config(work, "process", CHAIN_APPS))
        tree.startService()
        del LATENCIES[:]
        for i in range(samples):
            await tree.transport.send(Ping(n=i))
            await task.deferLater(reactor, 0.02, lambda: None)
        deadline = time.monotonic() + 10
        while len(LATENCIES) < samples and time.monotonic() < deadline:
            await task.deferLater(reactor, 0.05, lambda: None)
        await tree.stopService()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ms = sorted(x * 1000 for x in LATENCIES)
    return {
        "samples": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "max_ms": round(ms[-1], 2),
    }


SLOW_APP = """
[apps.slow]
builder = "bench.relay:make_slow"
threads = 2
max_in_flight = 10
"""


async def peak_rss(base: str, backlog: int, seconds: float) -> dict[str, Any]:
    """A twistd bus on a file holding C{backlog} inputs; its peak RSS against an empty file's."""
    out = {"backlog": backlog}
    for label, queued in (("empty_file_kib", 0), ("with_backlog_kib", backlog)):
        work = tempfile.mkdtemp(prefix="rss-", dir=base)
        try:
            config_path = write_config(work, "process", SLOW_APP)
            if queued:
                started = time.perf_counter()
                await preload_bus(config_path, (In(n=i, payload=PAYLOAD) for i in range(queued)))
                out["preload_s"] = round(time.perf_counter() - started, 1)
                out["file_mib"] = round(os.path.getsize(os.path.join(work, "bus.db")) / 2**20, 1)
            out[label] = await _twistd_peak(work, config_path, seconds)
            if queued:  # the bus was working through it, not stuck at start
                out["handled_while_measured"] = queued - _queued(os.path.join(work, "bus.db"), "slow")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    out["ratio"] = round(out["with_backlog_kib"] / out["empty_file_kib"], 3) if out["empty_file_kib"] else None
    return out


async def _twistd_peak(work: str, config_path: str, seconds: float) -> int:
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    process = subprocess.Popen(
        [twistd, "-n", "--pidfile=", "--logfile=" + os.path.join(work, "log"), "scbus", "--config=" + config_path],
        cwd=work, env=env,
    )
    peak = 0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and process.poll() is None:
            await task.deferLater(reactor, 0.25, lambda: None)
            with open(f"/proc/{process.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        if process.poll() is not None:
            with open(os.path.join(work, "log")) as f:
                raise RuntimeError(f"the bus exited with {process.returncode}:\n{f.read()[-2000:]}")
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)
    return peak


# --- report -------------------------------------------------------------------------------

GOALS = {
    "bus_vs_raw_batch": 0.5,
    "bus_vs_raw_batch_moonshot": 0.7,
    "bus_power_vs_raw_batch_full": 0.5,
    "bus_vs_huey": 20.0,
    "p99_ms": 5.0,
    "rss_ratio": 1.2,
    "peak_rss_mib": 100.0,
}


def summary(results: dict[str, Any], skipped: dict[str, str]) -> list[str]:
    """One line per goal: the figure, the goal, and whether it is met; the figures after."""

    def line(what: str, value: float | None, goal: float, at_least: bool = True, cpu: float | None = None) -> str:
        if value is None:
            return f"{what:44} {'-':>8} (not run)"
        met = value >= goal if at_least else value <= goal
        sign = ">=" if at_least else "<="
        beside = f"; from CPU time {cpu}" if cpu is not None else ""
        return f"{what:44} {value:>8} (goal {sign} {goal}: {'met' if met else 'NOT met'}{beside})"

    lines = list(skipped.values())
    for row in results.get("throughput", {}).get("by_prefetch", []):
        p = row["prefetch"]
        ratio = row["bus_vs_raw_batch"]
        lines.append(line(f"max_in_flight {p}: bus/raw batch", ratio, GOALS["bus_vs_raw_batch"],
                          cpu=row["bus_vs_raw_batch_cpu"]))
        lines.append(line(f"max_in_flight {p}: bus/raw batch (moonshot)", ratio,
                          GOALS["bus_vs_raw_batch_moonshot"], cpu=row["bus_vs_raw_batch_cpu"]))
        if row["bus_vs_raw_batch_json"] is not None:
            lines.append(
                f"{f'max_in_flight {p}: bus/raw batch+json':44} {row['bus_vs_raw_batch_json']:>8} "
                f"(no goal; from CPU time {row['bus_vs_raw_batch_json_cpu']})"
            )
        lines.append(line(f"max_in_flight {p}: bus power/raw batch FULL", row["bus_power_vs_raw_batch_full"],
                          GOALS["bus_power_vs_raw_batch_full"], cpu=row["bus_power_vs_raw_batch_full_cpu"]))
        lines.append(line(f"max_in_flight {p}: bus/huey", row["bus_vs_huey"], GOALS["bus_vs_huey"],
                          cpu=row["bus_vs_huey_cpu"]))
    for row in results.get("throughput", {}).get("by_prefetch", []):
        p = row["prefetch"]
        lines.append(f"max_in_flight {p}: msg/s (median of rounds) " + ", ".join(
            f"{k} {v:,}" for k, v in row["msgs_per_s"].items()))
        lines.append(f"max_in_flight {p}: CPU us/msg " + ", ".join(
            f"{k} {v}" for k, v in row["cpu_us_per_msg"].items()))
    lat = results.get("latency_two_app_chain")
    if lat:
        lines.append(line("two-app chain p99 ms (low load)", lat["p99_ms"], GOALS["p99_ms"], False))
    rss = results.get("peak_rss")
    if rss:
        mib = round(rss["with_backlog_kib"] / 1024, 1)
        lines.append(line(f"peak RSS MiB, {rss['backlog']:,} queued", mib, GOALS["peak_rss_mib"], False))
        lines.append(
            f"  (empty file {round(rss['empty_file_kib'] / 1024, 1)} MiB; file {rss['file_mib']} MiB; "
            f"{rss['handled_while_measured']:,} handled while measured)"
        )
        lines.append(line("peak RSS with backlog / empty file", rss["ratio"], GOALS["rss_ratio"], False))
    return lines


async def main(args: argparse.Namespace) -> None:
    skipped = {name: reason for name, reason in missing_peers().items() if not args.loops or name in args.loops}
    bus_missing = sqlite_transport_missing()
    if bus_missing:
        skipped["bus"] = bus_missing
        skipped["bus power"] = bus_missing
    results: dict[str, Any] = {}
    if args.repeat:
        results["throughput"] = await throughput(args, skipped)
    if args.latency and not bus_missing:
        results["latency_two_app_chain"] = await latency(args.dir, args.latency)
    if args.backlog and not bus_missing:
        results["peak_rss"] = await peak_rss(args.dir, args.backlog, args.rss_seconds)
    print(json.dumps(results, indent=2))
    lines = summary(results, {k: v for k, v in skipped.items() if k != "bus power"})
    print("\n".join(lines), file=sys.stderr)


def prefetches(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give one or more max_in_flight values, e.g. 10,200")
    return values


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--prefetch", type=prefetches, default=[10, 200], help="max_in_flight values, e.g. 10,200")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (0: throughput not run)")
    parser.add_argument("--loops", type=lambda t: [x.strip() for x in t.split(",")], default=None,
                        help="only these contenders, e.g. raw,bus,huey ('raw' and 'bus' take their variants)")
    parser.add_argument("--latency", type=int, default=0, metavar="SAMPLES", help="two-app chain p99 (e.g. 300)")
    parser.add_argument("--backlog", type=int, default=0, help="peak RSS with this many queued (e.g. 1000000)")
    parser.add_argument("--rss-seconds", type=float, default=15.0)
    parser.add_argument("--dir", default=None, help="where the files go (default: a temporary directory)")
    args = parser.parse_args()
    own_dir = args.dir is None
    if own_dir:
        args.dir = tempfile.mkdtemp(prefix="scbus-sqlite-bench-")
    outcome: dict[str, Any] = {}

    def go() -> None:
        d = defer.Deferred.fromCoroutine(main(args))
        d.addErrback(lambda f: (outcome.setdefault("error", f), f.printTraceback()))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    if own_dir:
        shutil.rmtree(args.dir, ignore_errors=True)
    return 1 if "error" in outcome else 0


if __name__ == "__main__":
    sys.exit(run())
