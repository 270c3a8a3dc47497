"""
LocalTransport throughput: handled messages per second through the real bus (real
reactor, in-memory transport), against plain loops calling the same handlers in the same
run. Not a test: numbers vary by machine; the ratios are what to compare.

    python -m bench.local_throughput [--messages 50000] [--repeat 3] [--with-http]

--with-http attaches what the HTTP endpoints hook into the bus (the Prometheus
histograms and the status page's sampler), to show what they cost per message.

Cases:
  noop   one app whose handler returns None
  chain  three apps: A answers each Job with a Step, B answers each Step with a Done,
         C consumes Done (three handler calls, two sends per input message)
Baselines, in the same process:
  plain        a loop calling the same handlers directly
  plain+json   the same loop, also encoding and decoding every message as the bus does
Goals, printed last: noop >= 100,000 msg/s through the bus; chain >= 0.7 of plain+json.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time

from twisted.internet import reactor

from scbus import codec
from scbus.appbus import ApplicationMessageBus
from scbus.mainbus import MainMessageBus
from scbus.message import Message
from scbus.transports.local import LocalTransport


class Job(Message, wire_name="bench.Job"):
    n: int


class Step(Message, wire_name="bench.Step"):
    n: int


class Done(Message, wire_name="bench.Done"):
    n: int


def noop_handlers():
    return {"noop": {Job: lambda m: None}}


def chain_handlers():
    return {
        "a": {Job: lambda m: Step(n=m.n)},
        "b": {Step: lambda m: Done(n=m.n)},
        "c": {Done: lambda m: None},
    }


def plain(handlers, messages, with_json):
    """Call the handlers directly, following what each returns."""
    by_type = {}
    for subs in handlers.values():
        by_type.update(subs)
    start, cpu = time.perf_counter(), time.process_time()
    pending = list(messages)
    count = 0
    while pending:
        message = pending.pop()
        if with_json:
            message = codec.decode(codec.encode(message))
        count += 1
        out = by_type[type(message)](message)
        if out is not None:
            pending.append(out)
    return time.perf_counter() - start, time.process_time() - cpu, count


def through_the_bus(handlers, messages, expected_calls, with_http=False):
    """Queue everything, start the bus, stop the clock when every handler call is acked."""
    transport = LocalTransport(reactor)
    bus = MainMessageBus("bench", transport, reactor=reactor)
    if with_http:
        from scbus.web.history import History
        from scbus.web.metrics import BusMetrics

        BusMetrics(bus)
        History(bus)
    apps = {}
    for name, subs in handlers.items():
        apps[name] = ApplicationMessageBus(name, subs, reactor=reactor)
        bus.add_app(name, apps[name], subs, max_in_flight=10)
        transport.setup(name, apps[name].message_types)
    for m in messages:
        transport.send(m)
    done = {}

    def check():
        acked = sum(app.counters.acked for app in bus.apps.values())
        if acked >= expected_calls:
            done["t"], done["cpu"] = time.perf_counter(), time.process_time()
            reactor.crash()
        else:
            reactor.callLater(0.001, check)

    start, cpu = time.perf_counter(), time.process_time()
    transport.startService()
    bus.startService()
    reactor.callLater(0, check)
    reactor.run()
    elapsed, cpu = done["t"] - start, done["cpu"] - cpu
    bus.stopService()
    transport.stopService()
    return elapsed, cpu, sum(app.handled for app in apps.values())


def run(messages_per_case: int, repeat: int, with_http: bool = False) -> dict:
    results = {}
    for case, make, calls_per_message in (("noop", noop_handlers, 1), ("chain", chain_handlers, 3)):
        figures = {"bus": [], "plain": [], "plain+json": []}
        cpu = {"bus": [], "plain": [], "plain+json": []}
        for _ in range(repeat):
            messages = [Job(n=i) for i in range(messages_per_case)]
            gc.collect()
            t, c, count = plain(make(), messages, False)
            assert count == messages_per_case * calls_per_message
            figures["plain"].append(t)
            cpu["plain"].append(c)
            t, c, count = plain(make(), messages, True)
            figures["plain+json"].append(t)
            cpu["plain+json"].append(c)
            gc.collect()
            t, c, count = through_the_bus(make(), messages, messages_per_case * calls_per_message, with_http)
            assert count == messages_per_case * calls_per_message, count
            figures["bus"].append(t)
            cpu["bus"].append(c)
        best = {k: min(v) for k, v in figures.items()}
        n = messages_per_case
        results[case] = {
            "messages": n,
            "handler_calls": n * calls_per_message,
            "bus_msgs_per_s": round(n / best["bus"]),
            "plain_msgs_per_s": round(n / best["plain"]),
            "plain_json_msgs_per_s": round(n / best["plain+json"]),
            "bus_vs_plain": round(best["plain"] / best["bus"], 4),
            "bus_vs_plain_json": round(best["plain+json"] / best["bus"], 3),
            "overhead_us_per_handler_call": round(
                (best["bus"] - best["plain"]) / (n * calls_per_message) * 1e6, 2
            ),
            # CPU time of this process: less disturbed than wall time on a shared machine.
            "cpu_us_per_message": {k: round(min(v) / n * 1e6, 2) for k, v in cpu.items()},
            "bus_vs_plain_json_cpu": round(min(cpu["plain+json"]) / min(cpu["bus"]), 3),
            "bus_spread_s": [round(min(figures["bus"]), 3), round(statistics.median(figures["bus"]), 3)],
        }
    return results


GOALS = {"noop_msgs_per_s": 100_000, "chain_vs_plain_json": 0.7}


def summary(results: dict) -> list[str]:
    noop, chain = results["noop"]["bus_msgs_per_s"], results["chain"]["bus_vs_plain_json"]
    # The same figures from CPU time, which other work on a shared machine disturbs less.
    noop_cpu = round(1e6 / results["noop"]["cpu_us_per_message"]["bus"])
    chain_cpu = results["chain"]["bus_vs_plain_json_cpu"]
    return [
        f"noop bus msg/s {noop:>10,} (goal >= {GOALS['noop_msgs_per_s']:,}: "
        f"{'met' if noop >= GOALS['noop_msgs_per_s'] else 'NOT met'}; from CPU time {noop_cpu:,})",
        f"chain bus/plain+json {chain:>6} (goal >= {GOALS['chain_vs_plain_json']}: "
        f"{'met' if chain >= GOALS['chain_vs_plain_json'] else 'NOT met'}; from CPU time {chain_cpu})",
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--with-http", action="store_true", help="attach the HTTP endpoints' observers")
    args = parser.parse_args(argv)
    results = run(args.messages, args.repeat, args.with_http)
    print(json.dumps(results, indent=2))
    for case, r in results.items():
        print(
            f"{case:6} bus {r['bus_msgs_per_s']:>9,} msg/s | plain {r['plain_msgs_per_s']:>10,} | "
            f"plain+json {r['plain_json_msgs_per_s']:>9,} | bus/plain+json {r['bus_vs_plain_json']:.2f} | "
            f"overhead {r['overhead_us_per_handler_call']} us per handler call",
            file=sys.stderr,
        )
    print("\n".join(summary(results)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
