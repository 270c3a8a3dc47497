"""
The clients' own CPU per relayed message, over real AMQP bytes with no broker: the
broker's side is scripted in memory (tests/unit/scripted_broker.py), so what is timed is
the client process's work alone, the frames it reads and writes included, without the
machine's load or the broker's pace in it. Not a test: a tool to weigh a change to the
hot path before bench/twistd_relay.py measures it for real.

    python -m bench.wire_overhead [--messages 20000] [--prefetch 10,200] [--repeat 3]
        [--loops raw,bus,raw-txamqp,bus-txamqp] [--read-size 65536]

Each loop relays N envelopes of perf.In (bench/perf_app.py) from a queue, one output
each, published with confirms, acknowledged after the confirm, as bench/twistd_relay.py
does: raw (pika's TwistedProtocolConnection, one ack per message), bus (MainMessageBus
over AMQPTransport, client pika), and their txAMQP forms. The scripted broker confirms
what one read brought with one multiple ack and hands the client at most --read-size
bytes per read. Printed: the client's CPU microseconds per message (the best of the
rounds, which run interleaved) and the bus's over the raw loop's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import pika
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.perf_app import PAYLOAD, In, make_relay  # noqa: E402
from bench.relay_worker import relay_pika, relay_txamqp  # noqa: E402
from scbus import codec  # noqa: E402
from scbus.appbus import ApplicationMessageBus  # noqa: E402
from scbus.mainbus import MainMessageBus  # noqa: E402
from scbus.transports.amqp import AMQPTransport, parse_amqp_settings, topology  # noqa: E402
from tests.unit.scripted_broker import ScriptedBroker  # noqa: E402

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
QUEUE, SINK, RAW_OUT = "bench.in", "bench.sink", "bench.out"


def _broker(read_size: int) -> tuple[Clock, ScriptedBroker]:
    clock = Clock()
    broker = ScriptedBroker(clock, read_size=read_size)
    broker.queue(SINK)
    return clock, broker


def _settle(broker: ScriptedBroker, d: Deferred[Any]) -> Any:
    result: list[Any] = []
    d.addBoth(result.append)
    broker.pump()
    if not result:
        raise RuntimeError("set-up did not finish")
    if hasattr(result[0], "raiseException"):
        result[0].raiseException()
    return result[0]


def _timed(broker: ScriptedBroker, queue: str, messages: int) -> float:
    """Fill the queue the client consumes (set up and idle by now), then relay it all."""
    props = pika.BasicProperties(content_type="application/json", delivery_mode=2, type="perf.In")
    for i in range(messages):
        broker.put(queue, codec.encode(In(n=i, payload=PAYLOAD)), props)
    broker.client_seconds = 0.0
    broker.pump(10**8)
    if len(broker.queue(SINK)) != messages or broker.acked < messages:
        raise RuntimeError(f"relayed {len(broker.queue(SINK))} and acknowledged {broker.acked} of {messages}")
    return broker.client_seconds / messages * 1e6


def bus(messages: int, prefetch: int, client: str, read_size: int) -> float:
    app = "relay"
    clock, broker = _broker(read_size)
    broker.bindings[topology.type_exchange("perf.Out")] = [SINK]
    settings = parse_amqp_settings({"url": URL, "client": client})
    settings.app_prefetch = {app: prefetch}
    transport = AMQPTransport(settings, clock, endpoint=broker.endpoint())
    main = MainMessageBus("bench", transport, reactor=clock)
    subs = make_relay(app, {}, {})
    main.add_app(app, ApplicationMessageBus(app, subs, reactor=clock), subs, max_in_flight=prefetch)
    transport.startService()
    main.startService()
    broker.pump()
    return _timed(broker, topology.app_queue(app), messages)


def raw(messages: int, prefetch: int, client: str, read_size: int) -> float:
    clock, broker = _broker(read_size)
    broker.bindings[RAW_OUT] = [SINK]
    setup = _raw_pika(broker, clock, prefetch) if client == "pika" else _raw_txamqp(broker, clock, prefetch)
    _settle(broker, Deferred.fromCoroutine(setup))
    return _timed(broker, QUEUE, messages)


async def _raw_pika(broker: ScriptedBroker, clock: Clock, prefetch: int) -> None:
    from pika.adapters.twisted_connection import TwistedProtocolConnection

    connection = broker.connect(TwistedProtocolConnection(pika.URLParameters(URL), custom_reactor=clock))
    await relay_pika(connection, prefetch, QUEUE, RAW_OUT)


async def _raw_txamqp(broker: ScriptedBroker, clock: Clock, prefetch: int) -> None:
    from scbus.transports.amqp.txamqp_client import TxConnection, load_spec

    settings = parse_amqp_settings({"url": URL, "client": "txamqp"})
    await relay_txamqp(broker.connect(TxConnection(settings, clock, load_spec())), prefetch, QUEUE, RAW_OUT)


LOOPS = {
    "raw": lambda n, p, r: raw(n, p, "pika", r),
    "bus": lambda n, p, r: bus(n, p, "pika", r),
    "raw-txamqp": lambda n, p, r: raw(n, p, "txamqp", r),
    "bus-txamqp": lambda n, p, r: bus(n, p, "txamqp", r),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--prefetch", default="10,200")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loops", default=",".join(LOOPS))
    parser.add_argument("--read-size", type=int, default=65536)
    args = parser.parse_args()
    prefetches = [int(p) for p in args.prefetch.split(",") if p.strip()]
    loops = [name.strip() for name in args.loops.split(",") if name.strip()]
    runs: dict[int, dict[str, list[float]]] = {p: {name: [] for name in loops} for p in prefetches}
    for _ in range(args.repeat):
        for prefetch in prefetches:
            for name in loops:
                runs[prefetch][name].append(LOOPS[name](args.messages, prefetch, args.read_size))
    results = []
    for prefetch in prefetches:
        best = {name: round(min(v), 1) for name, v in runs[prefetch].items()}
        ratios = {}
        if "raw" in best:
            ratios = {f"{name}/raw": round(best[name] / best["raw"], 2) for name in best if name != "raw"}
        results.append({"prefetch": prefetch, "client_cpu_us_per_msg": best, "cpu_over_raw": ratios})
        print(f"prefetch {prefetch}: client CPU us/msg " + ", ".join(f"{k} {v}" for k, v in best.items())
              + ("; over raw: " + ", ".join(f"{k} {v}" for k, v in ratios.items()) if ratios else ""),
              file=sys.stderr)
    print(json.dumps({"messages": args.messages, "read_size": args.read_size, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
