"""
One reading of the bus for the HTTP endpoints: the control plane's status answer for
this process (the data ``scbus status --json`` shows), the transport's state and the
set-aside stores. Metrics, the status page and the health checks all read this.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from ..control import assess
from ..transports.setaside import DEAD, UNROUTED

__all__ = ["Snapshot", "take_snapshot", "transport_connected", "send_buffer"]

log = Logger()

#: Set-aside entries a snapshot carries per kind (the page lists them; more are counted).
LISTED = 50


@dataclasses.dataclass
class Snapshot:
    answer: dict[str, Any]
    connected: bool
    send_buffer: int
    set_aside: dict[str, list[Any]]
    set_aside_errors: dict[str, str]
    at: float

    @property
    def apps(self) -> list[dict[str, Any]]:
        return list(self.answer.get("app_status", []))

    def status_json(self, expected: dict[str, int]) -> dict[str, Any]:
        """The shape of ``scbus status --json``, for this one process."""
        health = assess([self.answer], expected)
        return {
            "healthy": health.healthy,
            "problems": health.problems,
            "processes": health.answers,
            "queues": {s["name"]: {"ready": s.get("queued"), "consumers": None} for s in self.apps},
        }


def transport_connected(transport: Any) -> bool:
    """Over AMQP: a session is open. In memory: the transport runs."""
    connected = getattr(transport, "connected", None)
    if connected is None:
        return bool(getattr(transport, "running", True))
    return bool(connected)


def send_buffer(transport: Any) -> int:
    """Messages waiting to be sent until the broker is back (in memory: none)."""
    # The AMQP transport keeps them in its outbox; it has no public count of them.
    return len(getattr(transport, "_outbox", ()))


def take_snapshot(bus: Any, *, with_set_aside: bool = True) -> Deferred[Snapshot]:
    """Ask the bus's control responder for its status, and the transport for its stores."""
    transport = bus.transport
    status = bus.control.handle({"op": "status"})
    kinds = (UNROUTED, DEAD) if with_set_aside else ()
    listings = [transport.set_aside(kind) for kind in kinds]

    def done(results: list[tuple[bool, Any]]) -> Snapshot:
        (ok, answer), *stores = results
        if not ok:
            answer.raiseException()
        set_aside: dict[str, list[Any]] = {}
        errors: dict[str, str] = {}
        for kind, (ok, entries) in zip(kinds, stores):
            if ok:
                set_aside[kind] = list(entries)
            else:
                errors[kind] = entries.getErrorMessage()
                set_aside[kind] = []
        return Snapshot(
            answer=answer,
            connected=transport_connected(transport),
            send_buffer=send_buffer(transport),
            set_aside=set_aside,
            set_aside_errors=errors,
            at=time.time(),
        )

    return DeferredList([status, *listings], consumeErrors=True).addCallback(done)
