"""
Pausing an app in every process that runs it: the pause is marked where the transport
keeps it (the broker, the SQLite file) (for
processes that start later) and then announced over the control plane (for those
running now). Used by the console's C{pause(app, everywhere=True)}; the C{scbus pause}
command does the same with a blocking client.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from .interfaces import IPauseMarks

__all__ = ["pause_everywhere", "summary"]


def pause_everywhere(bus: Any, app: str, paused: bool, timeout: float = 2.0) -> Deferred[str]:
    """Mark, then tell every live process; answers a line per process that answered."""
    if app not in bus.app_names():
        return fail(KeyError(f"no app named {app!r}; apps: {', '.join(sorted(bus.app_names()))}"))
    transport = bus.transport
    marks = IPauseMarks(transport, None)  # in memory there is one process
    d: Deferred[Any] = marks.mark_paused(app, paused) if marks is not None else succeed(None)
    d.addCallback(lambda _: transport.ask({"op": "pause" if paused else "resume", "app": app}, timeout))
    kept = "by the transport (on the broker, or in the SQLite file)"
    return d.addCallback(lambda answers: summary(app, paused, answers, marked=marks is not None, kept=kept))


def summary(
    app: str, paused: bool, answers: list[dict[str, Any]], *, marked: bool = True, kept: str = "on the broker"
) -> str:
    """Who was told, and (C{marked}) where the mark is kept for processes that start later."""
    verb = "paused" if paused else "resumed"
    processes = sorted(a["process"] for a in answers if isinstance(a, dict) and a.get("app") == app)
    lines = [f"{app}: {verb} in {len(processes)} process(es)"]
    lines += [f"  {p}" for p in processes]
    if marked:
        lines.append(
            f"  (kept {kept}: processes that start now start {'paused' if paused else 'running'})"
        )
    return "\n".join(lines)
