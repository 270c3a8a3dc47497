"""How the console's answers print: tables and blocks with ages, not dataclasses and Unix times."""

from __future__ import annotations

import time
from typing import Any

from ..control import ago, dropped_note, render, table
from ..mainbus import AppStatus

__all__ = ["AppStatusView", "HealthView", "Reply", "SetAsideList", "StatusTable", "age", "size"]


class Reply(str):
    """A console answer that prints as plain text (no quotes), now or when a Deferred fires."""

    def __repr__(self) -> str:
        return str(self)


def age(moment: float | None, now: float) -> str:
    """How long ago, as a person reads it: '0.4 s ago', '3 s ago', '5 min ago'."""
    if moment is None:
        return "never"
    seconds = max(0.0, now - moment)
    if seconds < 10:
        return f"{seconds:.1f} s ago"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _seconds(interval: str) -> str:
    """'0:00:00.500000' (a timedelta as text) as '0.5 s'."""
    hours, _, rest = interval.rpartition(":")
    hours, _, minutes = hours.rpartition(":")
    try:
        total = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(rest)
    except ValueError:
        return interval
    return f"{total:g} s"


def size(n: int) -> str:
    return f"{n} bytes" if n < 10_000 else f"{n / 1024:.0f} KiB"


class StatusTable(list):
    """A list of L{AppStatus} that prints as a table in the console."""

    #: Entries each bounded set-aside store dropped (None: stores that drop nothing).
    dropped: dict[str, int] | None = None

    def __repr__(self) -> str:
        now = time.time()
        header = ("app", "handled", "errors", "in flight", "queued", "redelivered", "last handled", "paused")
        rows: list[tuple[str, ...]] = [header]
        for s in self:
            rows.append(
                (
                    s.name,
                    str(s.handled),
                    str(s.errors),
                    f"{s.in_flight}/{s.max_in_flight}",
                    "?" if s.queued is None else str(s.queued),
                    str(s.redelivered),
                    ago(s.last_handled_at, now),
                    "yes" if s.paused else "no",
                )
            )
        note = dropped_note(self.dropped)
        return "\n".join([*table(rows), *([note] if note else [])])


class AppStatusView:
    """One app's L{AppStatus} (as C{.status}, and its fields as attributes), printed as a block with ages."""

    def __init__(self, status: AppStatus, now: float) -> None:
        self.status = status
        self._now = now

    def __getattr__(self, name: str) -> Any:
        return getattr(self.status, name)

    def __repr__(self) -> str:
        s, now = self.status, self._now
        oldest = "" if s.oldest_in_flight_age is None else f" (oldest {s.oldest_in_flight_age:.1f} s)"
        rows = [
            ("handled", str(s.handled)),
            ("errors", str(s.errors)),
            ("in flight", f"{s.in_flight}/{s.max_in_flight}{oldest}"),
            ("queued", "?" if s.queued is None else str(s.queued)),
            ("prefetched", str(s.buffered)),
            ("acknowledged", str(s.acked)),
            ("redelivered", str(s.redelivered)),
            ("send failures", str(s.send_failures)),
            ("last handled", age(s.last_handled_at, now)),
            ("paused", "yes" if s.paused else "no"),
            ("threads", str(s.threads) if s.threads else "none (handlers run in the reactor)"),
        ]
        for interval, last_run in s.idle.items():
            rows.append((f"idle every {_seconds(interval)}", f"last ran {age(last_run, now)}"))
        lag = "none measured" if s.heartbeat_lag is None else (
            f"{s.heartbeat_lag:.3f} s, measured {age(s.heartbeat_at, now)}"
        )
        rows.append(("heartbeat lag", lag))
        rows.append(("last error", s.last_error or "none"))
        width = max(len(label) for label, _ in rows)
        return "\n".join([f"app {s.name}"] + [f"  {label.ljust(width)}  {value}" for label, value in rows])


class HealthView:
    """What processes() found, printed as the same tables as 'scbus status'."""

    def __init__(self, health: Any) -> None:
        self.health = health

    def __repr__(self) -> str:
        return render(self.health)


class SetAsideList(list):
    """Set-aside messages, printed as a table: id, why, type, from which app, age, size."""

    #: How many older entries a bounded store dropped before these (0: none, or unbounded).
    dropped = 0

    def __repr__(self) -> str:
        note = f"\n({self.dropped} older entries dropped: transport.set_aside_limit)" if self.dropped else ""
        return self._table() + note

    def _table(self) -> str:
        if not self:
            return "(none)"
        now = time.time()
        rows: list[tuple[str, ...]] = [("id", "code", "type", "app", "age", "size", "reason")]
        for entry in self:
            reason = entry.reason if len(entry.reason) <= 80 else entry.reason[:77] + "..."
            rows.append((
                entry.id, entry.code, entry.type_name or "?", entry.app_name or "-",
                age(entry.at, now) if entry.at else "?", size(len(entry.body)), reason,
            ))
        return "\n".join(table(rows))
