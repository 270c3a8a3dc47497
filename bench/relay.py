"""The relay app bench/sqlite_relay.py runs on the SQLite transport: each In answered by one Out."""

from __future__ import annotations

from typing import Any

from scbus import Message


class In(Message, wire_name="bench.relay.In"):
    n: int
    payload: str


class Out(Message, wire_name="bench.relay.Out"):
    n: int
    payload: str


class Ping(Message, wire_name="bench.relay.Ping"):
    n: int


class Pong(Message, wire_name="bench.relay.Pong"):
    n: int
    sent_at: float


#: Makes an In's envelope about 220 bytes (with its id, time and type name).
PAYLOAD = "x" * 70


#: When the relay's first input was handled: (perf_counter, process_time), the clock's start.
STARTED: list[tuple[float, float]] = []


def make_relay(name: str, root_config: dict[str, Any], config: dict[str, Any]) -> dict[Any, Any]:
    """One output per input, the payload carried over; the first call marks L{STARTED}."""
    import time

    def on_in(msg: In) -> Out:
        if not STARTED:
            STARTED.append((time.perf_counter(), time.process_time()))
        return Out(n=msg.n, payload=msg.payload)

    return {In: on_in}


def make_ping(name: str, root_config: dict[str, Any], config: dict[str, Any]) -> dict[Any, Any]:
    """The first app of the latency chain: answers each Ping with a Pong stamped with its send time."""
    return {Ping: lambda msg: Pong(n=msg.n, sent_at=msg.created_at)}


def make_slow(name: str, root_config: dict[str, Any], config: dict[str, Any]) -> dict[Any, Any]:
    """For the memory run: takes its time over each In, so the backlog stays queued."""
    import time

    def on_in(msg: In) -> None:
        time.sleep(float(config.get("sleep", 0.005)))

    return {In: on_in}


#: Seconds from each Ping's creation to its Pong's handling, appended by make_pong's handler.
LATENCIES: list[float] = []


def make_pong(name: str, root_config: dict[str, Any], config: dict[str, Any]) -> dict[Any, Any]:
    """The second app of the latency chain: records how long each Ping took to come back as a Pong."""
    import time

    return {Pong: lambda msg: LATENCIES.append(time.time() - msg.sent_at)}
