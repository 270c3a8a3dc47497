"""
The control plane: liveness answered now, out of band.

Each bus process answers status and ping requests on a path of its own that never waits
behind app queues (over AMQP: the ``scbus.control`` exchange and a per-process exclusive
queue on its own channel; in memory: a direct call). The answer names the process and
describes every app it runs. The report model and its rendering are shared by the
console and the ``scbus status`` command.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .interfaces import IBoundedSetAside

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

__all__ = [
    "CONTROL_EXCHANGE",
    "ControlResponder",
    "process_name",
    "Health",
    "assess",
    "render",
    "set_aside_dropped",
]

CONTROL_EXCHANGE = "scbus.control"
#: Operations a process answers.
OPS = ("status", "ping", "pause", "resume")


def set_aside_dropped(transport: Any) -> dict[str, int] | None:
    """Entries each bounded set-aside store dropped; None where stores drop nothing (a broker)."""
    bounded = IBoundedSetAside(transport, None)
    return None if bounded is None else dict(bounded.dropped)


def dropped_note(dropped: dict[str, int] | None) -> str | None:
    """A line saying how many entries full set-aside stores dropped; None when none did."""
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted((dropped or {}).items()) if n)
    return f"set-aside stores full, oldest dropped: {counts} (transport.set_aside_limit)" if counts else None


def process_name(bus_name: str) -> str:
    return f"{bus_name}@{socket.gethostname()}:{os.getpid()}"


class ControlResponder:
    """Answers control requests for one main bus. Requests and answers are plain dicts."""

    def __init__(self, bus: Any, version: str) -> None:
        self.bus = bus
        self.version = version
        self.name = process_name(bus.name)

    def identity(self) -> dict[str, Any]:
        started = self.bus.started_at
        now = time.time()
        return {
            "process": self.name,
            "bus": self.bus.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": self.version,
            "uptime": None if started is None else round(now - started, 3),
            "apps": sorted(self.bus.app_names()),
            # A bounded in-memory store drops its oldest entries: say how many, so a full
            # store is seen. A broker's holding queues drop nothing (None here).
            "set_aside_dropped": set_aside_dropped(self.bus.transport),
        }

    def matches(self, target: dict[str, Any] | None) -> bool:
        if not target:
            return True
        process = target.get("process")
        if process is not None and str(process) not in (self.name, str(os.getpid()), self.bus.name):
            return False
        app = target.get("app")
        return app is None or app in self.bus.app_names()

    def handle(self, request: Any) -> Deferred[dict[str, Any] | None]:
        """The answer to C{request}, or None when it is not meant for this process."""
        from twisted.internet.defer import succeed  # here: `scbus status` imports this module

        if not isinstance(request, dict) or request.get("op") not in OPS:
            return succeed({"process": self.name, "error": f"unknown request {request!r:.200}"})
        if not self.matches(request.get("target")):
            return succeed(None)
        if request["op"] == "ping":
            return succeed({**self.identity(), "pong": True})
        if request["op"] in ("pause", "resume"):
            return succeed(self._pause(request["op"], request.get("app")))
        return self.bus.status().addCallback(
            lambda statuses: {
                **self.identity(),
                "app_status": [dataclasses.asdict(s) for s in statuses],
            }
        )


    def _pause(self, op: str, app: Any) -> dict[str, Any] | None:
        """pause/resume one app here (the requester already marked it on the broker)."""
        if app not in self.bus.app_names():
            return None
        getattr(self.bus, op)(app)
        return {**self.identity(), "app": app, "paused": op == "pause"}


# --- reading answers ----------------------------------------------------------------------


@dataclasses.dataclass
class Health:
    """What a status request found, and whether it is healthy."""

    answers: list[dict[str, Any]]
    problems: list[str]
    consumers: dict[str, int | None]
    queued: dict[str, int | None]

    @property
    def healthy(self) -> bool:
        return not self.problems


def assess(
    answers: Iterable[dict[str, Any]],
    expected_apps: Iterable[str] | dict[str, int],
    consumers: dict[str, int | None] | None = None,
    queued: dict[str, int | None] | None = None,
) -> Health:
    """
    Problems: an expected app that fewer answering processes run than expected (a
    process died); an app whose queue has more consumers than processes answered for it
    (a process alive on the broker but not answering: wedged, or too slow for the
    deadline); an app whose oldest delivery in flight is older than its C{stuck_after}
    (a handler that never returns). C{expected_apps} maps app names to how many
    processes should run them.
    """
    if not isinstance(expected_apps, dict):
        expected_apps = {app: 1 for app in expected_apps}
    answers = [a for a in answers if isinstance(a, dict) and "process" in a]
    consumers = consumers or {}
    problems = []
    running: dict[str, list[str]] = {}
    for answer in answers:
        for app in answer.get("apps", []):
            running.setdefault(app, []).append(answer["process"])
    for app, wanted in expected_apps.items():
        live = len(running.get(app, []))
        if live < wanted:
            problems.append(
                f"app {app}: no live process answered" if not live
                else f"app {app}: {live} live process(es) answered, {wanted} expected"
            )
    for answer in answers:
        problems += _stuck(answer)
    for app, count in consumers.items():
        answering = len(running.get(app, []))
        if count is not None and count > answering:
            answered = ", ".join(sorted(running.get(app, []))) or "none"
            problems.append(
                f"app {app}: {count} consumer(s) on its queue but {answering} process(es) "
                f"answered: a process is not answering (wedged or overloaded); answered: {answered}"
            )
    return Health(answers, problems, dict(consumers), dict(queued or {}))


def _stuck(answer: dict[str, Any]) -> list[str]:
    found = []
    for s in answer.get("app_status", []):
        age, limit = s.get("oldest_in_flight_age"), s.get("stuck_after")
        if isinstance(age, (int, float)) and isinstance(limit, (int, float)) and age > limit:
            found.append(
                f"app {s.get('name')} in {answer['process']}: stuck: a delivery has been in "
                f"flight for {age:.0f}s, over stuck_after ({limit:g}s)"
            )
    return found


def ago(moment: float | None, now: float) -> str:
    if moment is None:
        return "never"
    return f"{max(0.0, now - moment):.1f}s ago"  # for status tables


def table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _idle_cell(status: dict[str, Any]) -> str:
    """Whether this process runs the app's idle handlers ("runs"), or "-"."""
    if not status.get("idle"):
        return "-"
    return "runs" if status.get("runs_idle") else "standby"


def render(health: Health, now: float | None = None) -> str:
    """One table of processes, one of apps, then the problems."""
    now = time.time() if now is None else now
    lines = []
    processes = [("process", "version", "uptime", "apps")]
    for a in sorted(health.answers, key=lambda a: a["process"]):
        uptime = "?" if a.get("uptime") is None else f"{a['uptime']:.0f}s"
        processes.append((a["process"], str(a.get("version", "?")), uptime, ",".join(a.get("apps", []))))
    lines += table(processes) if len(processes) > 1 else ["(no process answered)"]
    for a in sorted(health.answers, key=lambda a: a["process"]):
        note = dropped_note(a.get("set_aside_dropped"))
        if note:
            lines.append(f"{a['process']}: {note}")
    apps = [("app", "process", "queued", "in flight", "handled", "errors", "redelivered",
             "last handled", "oldest in flight", "heartbeat lag", "paused", "idle")]
    for a in sorted(health.answers, key=lambda a: a["process"]):
        for s in a.get("app_status", []):
            oldest = s.get("oldest_in_flight_age")
            lag = s.get("heartbeat_lag")
            apps.append((
                s["name"], a["process"],
                "?" if s.get("queued") is None else str(s["queued"]),
                f"{s['in_flight']}/{s['max_in_flight']}",
                str(s["handled"]), str(s["errors"]), str(s.get("redelivered", 0)),
                ago(s.get("last_handled_at"), now),
                "-" if oldest is None else f"{oldest:.1f}s",
                "-" if lag is None else f"{lag:.3f}s",
                "yes" if s.get("paused") else "no",
                _idle_cell(s),
            ))
    if len(apps) > 1:
        lines += [""] + table(apps)
    if health.consumers:
        lines += [""] + [
            f"queue of {app}: {health.queued.get(app, '?')} ready, {count} consumer(s)"
            for app, count in sorted(health.consumers.items())
        ]
    lines += [""] + ([f"PROBLEM: {p}" for p in health.problems] or ["healthy"])
    return "\n".join(lines)
