"""
The verbs that work on a bus's SQLite file itself (L{reach.FILE}): no HTTP endpoint, and
no bus process for the offline ones. The file is opened with the bus's own checks (a bad
file is one line, exit 2); every write is one ``BEGIN IMMEDIATE`` transaction of the
transport's L{Store}, waiting for a running bus's lock up to the busy timeout, so both
can use the file at once. The bus process's own lock (``PATH.lock``) is only probed,
never kept.

A running bus reads routes and pause marks at its start, and claims rows another program
writes only when it next looks at that queue (its own writes or its restart). So while a
bus holds the file, publish and replay go through its HTTP endpoint when the config has
one, and pause and resume write the mark and then tell the bus through it; without one
they are written to the file, and the line printed says when the bus takes them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from ..config import Config
from ..errors import StartupProblem
from ..message import Message
from .common import EXIT_BROKER, EXIT_CONFIG, EXIT_REFUSED, Refused

__all__ = ["status", "ping", "pause_or_resume", "set_aside", "FileSender", "live_bus"]


class _Clock:
    """What the router times set-aside entries by."""

    @staticmethod
    def seconds() -> float:
        return time.time()


def _path(config: Config) -> str:
    return str(config.transport.sqlite.path)


def live_bus(config: Config) -> tuple[bool, str | None]:
    """(held, pid): whether a bus process holds the file now."""
    from ..transports.sqlite.lockfile import holder

    return holder(_path(config))


def _open(config: Config) -> Any:
    """The file's L{Store}, attached beside whatever process holds it; a refusal if unusable."""
    from ..transports.sqlite.schema import open_database
    from ..transports.sqlite.store import Store

    path = _path(config)
    if not os.path.exists(path):
        raise Refused(
            f"transport.path: {path} does not exist: no bus has used it yet (start the bus once, so that "
            f"its apps' queues and routes are in the file) ({config.source})", EXIT_CONFIG,
        )
    settings = config.transport.sqlite
    try:
        connection = open_database(path, settings.durability)
    except StartupProblem as e:
        raise Refused(str(e), EXIT_CONFIG) from None
    store = Store(connection, settings.set_aside_limit)
    store.attach()
    return store


def _write(store: Any, *changes: Any, sends: list[Any] | None = None) -> list[Any]:
    """Apply C{changes} (each C{run(store)}) and C{sends} in one transaction; their values."""
    from ..transports.sqlite.batch import Batch, Call

    batch = Batch()
    batch.calls += [Call(change, lambda error, value: None) for change in changes]
    batch.sends += [(prepared, None) for prepared in sends or []]
    outcome = store.apply(batch)
    if outcome.error is not None:
        raise Refused(f"{store_path(store)}: nothing written: {outcome.error}", EXIT_BROKER)
    failed = [error for error, _ in outcome.calls if error is not None] + list(outcome.failed_sends.values())
    if failed:
        raise Refused(f"{store_path(store)}: nothing written: {failed[0]}", EXIT_BROKER)
    return [value for _, value in outcome.calls]


def store_path(store: Any) -> str:
    row = store.connection.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row else "the file"


def _router(store: Any, config: Config) -> Any:
    from ..transports.sqlite.routing import Router

    router = Router(_Clock(), config.transport.sqlite.max_message_size)
    router.load(store.routes())
    return router


def _held_note(config: Config) -> str | None:
    """When a bus holds the file: the note saying when it takes what was written (else None)."""
    held, pid = live_bus(config)
    if not held:
        return None
    return f"the bus process (pid {pid or 'unknown'}) that holds {_path(config)} reads this at its next start"


# --- status and ping -------------------------------------------------------------------------


def _facts(config: Config) -> dict[str, Any]:
    store = _open(config)
    try:
        queues, pauses = store.queues(), store.pauses()
        counts, dropped, processes = store.set_aside_counts(), store.dropped(), store.processes()
    finally:
        store.connection.close()
    held, pid = live_bus(config)
    expected = [name for name, app in config.apps.items() if app.enabled]
    process = None
    if held:
        named = [p for p in processes if pid is None or str(p[0]) == pid]
        if named:
            process = {"process": named[-1][2], "pid": named[-1][0], "host": named[-1][1], "started_at": named[-1][3]}
        else:
            process = {"process": f"pid {pid or 'unknown'}", "pid": int(pid) if pid else None}
    problems = []
    if not held:
        problems.append(f"no bus process holds {_path(config)}: {', '.join(expected) or 'no app'} not running")
    return {
        "healthy": not problems,
        "problems": problems,
        "file": _path(config),
        "live": held,
        "process": process,
        "queues": {name: {"ready": ready, "paused": name in pauses, "expected": name in expected}
                   for name, ready in queues.items()},
        "paused": pauses,
        "set_aside": counts,
        "set_aside_dropped": dropped,
    }


def status(config: Config, args: argparse.Namespace) -> int:
    facts = _facts(config)
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0 if facts["healthy"] else 1
    process = facts["process"]
    if process is not None:
        print(f"{facts['file']}: held by {process['process']} (pid {process['pid']})")
    else:
        print(f"{facts['file']}: no bus process holds it")
    rows = [("app", "ready", "state")]
    for name, queue in facts["queues"].items():
        state = f"paused by {facts['paused'][name]}" if queue["paused"] else "running" if process else "stopped"
        rows.append((name + ("" if queue["expected"] else " (not in the config)"), str(queue["ready"]), state))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    aside = facts["set_aside"]
    dropped = {kind: n for kind, n in facts["set_aside_dropped"].items() if n}
    print(f"set aside: {aside['unrouted']} unrouted, {aside['dead']} dead"
          + (f" (dropped to stay bounded: {dropped})" if dropped else ""))
    for problem in facts["problems"]:
        print(f"problem: {problem}")
    return 0 if facts["healthy"] else 1


def ping(config: Config, args: argparse.Namespace) -> int:
    if args.app is not None and args.app not in config.apps:
        raise Refused(f"{config.source}: apps.{args.app}: the config has no app {args.app!r}", EXIT_CONFIG)
    started = time.monotonic()
    facts = _facts(config)
    elapsed = time.monotonic() - started
    process = facts["process"]
    wanted = args.process
    if process is None or (wanted and wanted not in (process["process"], str(process["pid"]))):
        raise Refused(f"no live bus process {'matching ' + wanted + ' ' if wanted else ''}holds {facts['file']}")
    apps = [name for name, q in facts["queues"].items() if q["expected"]]
    print(f"{process['process']}: holds the file, read in {elapsed * 1000:.1f} ms (apps: {', '.join(apps)})")
    return 0


# --- pause and resume ------------------------------------------------------------------------


def pause_or_resume(config: Config, args: argparse.Namespace, paused: bool) -> int:
    """The mark in the file (a bus that starts obeys it), then the running bus told over HTTP if it can be."""
    if args.app not in config.apps:
        raise Refused(f"{config.source}: apps.{args.app}: the config has no app {args.app!r}", EXIT_CONFIG)
    from ..pausing import summary  # (imports Twisted: only here)

    import socket

    by = f"scbus pause@{socket.gethostname()}:{os.getpid()}"
    store = _open(config)
    try:
        _write(store, lambda s: s.mark_paused(args.app, paused, by))
    finally:
        store.connection.close()
    held, _pid = live_bus(config)
    told = []
    if held and config.http.port is not None:
        from .overhttp import tell_pause

        told = [{"app": args.app, "process": tell_pause(config, args, paused)}]
    print(summary(args.app, paused, told, kept=f"in {_path(config)}"))
    note = _held_note(config) if not told else None
    if note is not None:
        print(f"  (not told to the running bus: {note}; set [http] port to {'pause' if paused else 'resume'} it now)")
    return 0


# --- set-aside -------------------------------------------------------------------------------


def set_aside(config: Config, args: argparse.Namespace, apps: dict[str, list[type[Message]]]) -> int:
    if args.action == "replay" and live_bus(config)[0] and config.http.port is not None:
        from .overhttp import set_aside as over_http

        return over_http(config, args)
    if args.action == "purge" and not args.yes and not sys.stdin.isatty():
        raise Refused("purge deletes messages for good: confirm on a terminal, or pass --yes")
    store = _open(config)
    try:
        if args.action == "list":
            from .setaside import show_listing

            entries = [entry.as_json() for entry in store.set_aside(args.kind)]
            return show_listing(entries, len(entries), args)
        if args.action == "purge":
            return _purge(store, args)
        return _replay(store, config, args)
    finally:
        store.connection.close()


def _purge(store: Any, args: argparse.Namespace) -> int:
    from .setaside import purge_confirmed

    count = store.set_aside_counts()[args.kind]
    if not purge_confirmed(count, args, store_path(store)):
        return 0 if count == 0 else EXIT_REFUSED
    [purged] = _write(store, lambda s: s.purge_set_aside(args.kind))
    print(f"deleted {purged} {args.kind} message(s)")
    return 0


def _replay(store: Any, config: Config, args: argparse.Namespace) -> int:
    from .. import codec
    from ..transports.setaside import DEAD, UNROUTED, replay_refusal

    found = [entry for entry in store.set_aside(args.kind) if entry.id == args.id]
    if not found:
        raise Refused(f"no {args.kind} message with id {args.id}")
    entry = found[0]
    router = _router(store, config)
    settings = config.transport.sqlite
    if not args.force:
        refusal = replay_refusal(args.kind, entry, router.subscribed, settings.max_message_size, settings.max_nesting)
        if refusal is not None:
            raise Refused(f"not replayed: {refusal} (--force replays it anyway)")
    name = entry.type_name or codec.peek_type(entry.body)
    instead = router.prepare_raw(entry.body, name) if name else router.unrouted(entry.body, "?", None)
    if args.kind == UNROUTED and instead[1] is not None:
        instead = (instead[0], instead[1]._replace(id=entry.id))  # forced, still unrouted: same id
    queue = entry.app_name if args.kind == DEAD else None
    [taken] = _write(store, lambda s: s.take_set_aside(entry.id, args.kind, instead, queue))
    if not taken:
        raise Refused(f"no {args.kind} message with id {args.id} (taken meanwhile)")
    where = queue or ", ".join(q for q, _ in instead[0]) or f"{UNROUTED} again"
    note = _held_note(config)
    print(f"replayed {entry.id} to {where}" + (f" ({note} or when it next writes to that queue)" if note else ""))
    return 0


# --- publish ---------------------------------------------------------------------------------


class FileSender:
    """Writes each message into the file as the bus's send does: routed by its class, committed."""

    def __init__(self, config: Config) -> None:
        self._store = _open(config)
        self._router = _router(self._store, config)
        note = _held_note(config)
        if note is not None:
            print(f"scbus: note: {note} or when it next writes to that app's queue; set [http] port to "
                  "publish to it directly", file=sys.stderr)

    def send(self, message: Message) -> str:
        prepared = self._router.prepare(message)
        _write(self._store, sends=[prepared])
        if prepared[1] is not None:
            print(f"scbus: {message.id}: no app subscribes to {message.wire_name}: kept as unrouted "
                  f"{prepared[1].id}", file=sys.stderr)
        return message.id

    def close(self) -> None:
        self._store.connection.close()
