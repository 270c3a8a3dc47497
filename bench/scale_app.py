"""The apps bench/scale_out.py runs in real twistd processes: I/O-bound and CPU-bound."""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from scbus import Message


class Work(Message, wire_name="bench.scale.Work"):
    n: int


class Worked(Message, wire_name="bench.scale.Worked"):
    n: int


def make_io(name: str, root_config: dict[str, Any], config: dict[str, Any]) -> dict[Any, Any]:
    """Each message waits C{wait} seconds (a Deferred, as a call to another service would)."""
    wait = float(config.get("wait", 0.005))
    return {Work: lambda msg: deferLater(reactor, wait, lambda: Worked(n=msg.n))}


def make_cpu(name: str, root_config: dict[str, Any], config: dict[str, Any]) -> dict[Any, Any]:
    """Each message keeps the CPU busy for C{burn} seconds."""
    burn = float(config.get("burn", 0.001))

    def on_work(msg: Work) -> Worked:
        end = time.perf_counter() + burn
        while time.perf_counter() < end:
            pass
        return Worked(n=msg.n)

    return {Work: on_work}
