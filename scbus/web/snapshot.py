"""
One reading of the bus for the HTTP endpoints: the control plane's status answer for
this process (the data ``scbus status --json`` shows), the transport's state and the
set-aside stores. Metrics, the status page and the health checks all read this.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from twisted.application.service import IService
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..control import assess
from ..interfaces import IConnectionState
from ..transports.setaside import DEAD, UNROUTED

__all__ = ["Snapshot", "SetAsideListings", "take_snapshot", "transport_connected", "transport_problem", "send_buffer"]

log = Logger()

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
    state = IConnectionState(transport, None)
    if state is not None:
        return bool(state.connected)
    service = IService(transport, None)
    return service is None or bool(service.running)


def transport_problem(transport: Any) -> str:
    """Why the transport is not connected, as its L{IConnectionState} says, for /ready."""
    state = IConnectionState(transport, None)
    problem = None if state is None else state.problem
    return f"transport: {problem}" if problem else "transport: not connected"


def send_buffer(transport: Any) -> int:
    """Messages waiting to be sent until the broker is back (in memory: none)."""
    state = IConnectionState(transport, None)
    return 0 if state is None else int(state.waiting_to_send)


class SetAsideListings:
    """
    The transport's set-aside stores, listed at most once every C{max_age} seconds: over
    AMQP a listing browses the shared holding queues, and several pages polling every few
    seconds, plus scrapes, should not do that each time.
    """

    def __init__(self, transport: Any, clock: IReactorTime, max_age: float = 5.0) -> None:
        self.transport = transport
        self.clock = clock
        self.max_age = max_age
        self._listed: dict[str, tuple[float, list[Any]]] = {}

    def list(self, kind: str) -> Deferred[list[Any]]:
        cached = self._listed.get(kind)
        if cached is not None and self.clock.seconds() - cached[0] < self.max_age:
            return succeed(cached[1])
        asked_at = self.clock.seconds()

        def keep(entries: list[Any]) -> list[Any]:
            self._listed[kind] = (asked_at, list(entries))
            return entries

        return self.transport.set_aside(kind).addCallback(keep)

    def forget(self) -> None:
        """After a replay: the next listing asks the transport again."""
        self._listed.clear()


def take_snapshot(bus: Any, set_aside: SetAsideListings | None = None) -> Deferred[Snapshot]:
    """Ask the bus's control responder for its status, and the transport for its stores."""
    transport = bus.transport
    status = bus.control.handle({"op": "status"})
    kinds = (UNROUTED, DEAD) if set_aside is not None else ()
    listings = [set_aside.list(kind) for kind in kinds] if set_aside is not None else []

    def done(results: list[tuple[bool, Any]]) -> Snapshot:
        (ok, answer), *stores = results
        if not ok:
            answer.raiseException()
        stored: dict[str, list[Any]] = {}
        errors: dict[str, str] = {}
        for kind, (ok, entries) in zip(kinds, stores):
            if ok:
                stored[kind] = list(entries)
            else:
                errors[kind] = entries.getErrorMessage()
                stored[kind] = []
        return Snapshot(
            answer=answer,
            connected=transport_connected(transport),
            send_buffer=send_buffer(transport),
            set_aside=stored,
            set_aside_errors=errors,
            at=time.time(),
        )

    return DeferredList([status, *listings], consumeErrors=True).addCallback(done)
