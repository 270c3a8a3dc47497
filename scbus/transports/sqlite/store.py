"""
The SQL the transport runs, on one connection, in the thread that owns it. No Twisted.

A L{Batch} is applied in one ``BEGIN IMMEDIATE`` transaction, with one statement per
kind of change (``executemany``), in this order: other changes (set-up, pause marks,
replays), sends and settled rows, releases, claims, then the queues' ready counts and
the set-aside stores' bounds. A settled row is deleted only if this process still
claims it, and its outputs are written only with it: when a row is not (a claim taken
back), the batch is done again one part at a time, each in a savepoint, so that no
output is written without its input's acknowledgement.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from ..setaside import DEAD, UNROUTED, SetAsideMessage
from .batch import Batch, Outcome, Prepared, SetAsideRow, Settle
from .schema import transient

__all__ = ["Store", "NotHeld"]


class NotHeld(Exception):
    """The row is no longer claimed by this process (its claim was taken back)."""


class _Careful(Exception):
    """A settled or released row was not ours: apply the batch again part by part."""


_INSERT = "INSERT INTO messages (queue, body) VALUES (?, ?)"
_INSERT_ASIDE = "INSERT INTO set_aside (kind, id, body, code, reason, type, app, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_READY = "UPDATE queues SET ready = ready + ? WHERE id = ?"
_TRIM = (
    "DELETE FROM set_aside WHERE kind = ? AND seq <= "
    "(SELECT seq FROM set_aside WHERE kind = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)"
)
_COUNT = "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value"
_RECOUNT = "UPDATE queues SET ready = (SELECT count(*) FROM messages WHERE queue = queues.id AND claimed_by IS NULL)"


class Store:
    """
    The transport's operations on the file, for one process whose claims carry C{token}.

    @param set_aside_limit: entries each set-aside store keeps; the oldest go first.
    """

    def __init__(self, connection: sqlite3.Connection, set_aside_limit: int) -> None:
        self.connection = connection
        self.set_aside_limit = set_aside_limit
        self.token = 0
        self._queue_ids: dict[str, int] = {}
        self._made_ids: list[str] = []
        # What the transaction under way changed: ready rows per queue, set-aside kinds.
        self._ready: Counter[str] = Counter()
        self._asides: Counter[str] = Counter()
        self._prepare_statements()

    def _prepare_statements(self) -> None:
        token = int(self.token)
        self._claim = (
            f"UPDATE messages SET claimed_by = {token}, deliveries = deliveries + 1 WHERE seq IN "
            "(SELECT seq FROM messages WHERE queue = ? AND claimed_by IS NULL AND deliveries = 0 "
            "ORDER BY seq LIMIT ?) RETURNING seq, body, deliveries"
        )
        self._claim_suspect = (
            f"UPDATE messages SET claimed_by = {token}, deliveries = deliveries + 1 WHERE seq = "
            "(SELECT seq FROM messages WHERE queue = ? AND claimed_by IS NULL AND deliveries > 0 "
            "ORDER BY deliveries, seq LIMIT ?) RETURNING seq, body, deliveries"
        )
        self._delete = f"DELETE FROM messages WHERE seq = ? AND claimed_by = {token}"
        self._release = f"UPDATE messages SET claimed_by = NULL WHERE seq = ? AND claimed_by = {token}"
        self._unclaim = (
            f"UPDATE messages SET claimed_by = NULL, deliveries = max(deliveries - 1, 0) "
            f"WHERE seq = ? AND claimed_by = {token}"
        )

    # --- start and stop ---------------------------------------------------------------------

    def start(self, name: str) -> int:
        """
        Become the file's process: every claim left by earlier runs is taken back (the
        caller holds the file's lock, so their processes are gone), the ready counts are
        recounted, and this process gets a fresh token. Answers how many were taken back.
        """
        c = self.connection
        c.execute("BEGIN IMMEDIATE")
        try:
            taken = c.execute("UPDATE messages SET claimed_by = NULL WHERE claimed_by IS NOT NULL").rowcount
            c.execute(_RECOUNT)
            c.execute("DELETE FROM processes")
            cursor = c.execute(
                "INSERT INTO processes (pid, host, name, started_at) VALUES (?, ?, ?, ?)",
                (os.getpid(), socket.gethostname(), name, time.time()),
            )
            token = int(cursor.lastrowid or 0)
            c.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self.token = token
        self._prepare_statements()
        self._load_queue_ids()
        return taken

    def finish(self) -> None:
        """This process leaves the file (its claims were given back by the last batch)."""
        c = self.connection
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("DELETE FROM processes WHERE token = ?", (self.token,))
            c.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def attach(self) -> None:
        """Work on the file beside the process that holds it (a command): no claims, no token."""
        self._load_queue_ids()

    def _load_queue_ids(self) -> None:
        self._queue_ids = {name: qid for qid, name in self.connection.execute("SELECT id, name FROM queues")}

    # --- batches --------------------------------------------------------------------------

    def apply(self, batch: Batch, commit: bool = True) -> Outcome:
        """
        Apply C{batch} in one transaction. An error of the file (a lock held elsewhere, a
        full disk) rolls all of it back and is the outcome's C{error}; one part's own
        error fails that part alone. C{commit=False} (tests) leaves the transaction open,
        as a process killed just before its commit does.
        """
        try:
            return self._apply(batch, careful=False, commit=commit)
        except _Careful:
            pass
        except sqlite3.Error as e:
            if transient(e):
                return Outcome(e)
        try:
            return self._apply(batch, careful=True, commit=commit)
        except sqlite3.Error as e:
            return Outcome(e)

    def _apply(self, batch: Batch, careful: bool, commit: bool) -> Outcome:
        c = self.connection
        outcome = Outcome()
        self._made_ids = []
        ready = self._ready = Counter()
        self._asides = Counter()
        c.execute("BEGIN IMMEDIATE")
        try:
            for call in batch.calls:
                outcome.calls.append(self._savepoint(call.run))
            if careful:
                self._write_carefully(batch, outcome)
            else:
                self._write(batch, outcome)
            outcome.filled = {name for name, delta in ready.items() if delta > 0}
            for name, count, suspects in batch.claims:
                claimed = self._claim_rows(name, count, suspects)
                ready[name] -= len(claimed)
                outcome.claimed.append(claimed)
            self._count_ready()
            for kind in self._asides:
                self._trim(kind, outcome)
            if commit:
                c.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return outcome

    def _write(self, batch: Batch, outcome: Outcome) -> None:
        """Every send and settle at once: one statement per kind of change."""
        c = self.connection
        rows: list[tuple[str, bytes]] = []
        aside: list[SetAsideRow] = []
        for (written, unrouted), _ in batch.sends:
            rows += written
            if unrouted is not None:
                aside.append(unrouted)
        keys = []
        for seq, outputs, dead, _ in batch.settles:
            keys.append((seq,))
            for written, unrouted in outputs:
                rows += written
                if unrouted is not None:
                    aside.append(unrouted)
            if dead is not None:
                aside.append(dead)
        if keys:
            if c.executemany(self._delete, keys).rowcount != len(keys):
                raise _Careful()
            outcome.deleted += len(keys)
        self._insert(rows)
        self._insert_aside(aside)
        for statement, given in ((self._release, batch.releases), (self._unclaim, batch.unclaims)):
            if given:
                if c.executemany(statement, [(seq,) for seq, _ in given]).rowcount != len(given):
                    raise _Careful()
                self._ready.update(name for _, name in given)

    def _write_carefully(self, batch: Batch, outcome: Outcome) -> None:
        """Each send and settle in a savepoint of its own: one that fails is not written."""
        c = self.connection
        for i, (message, _) in enumerate(batch.sends):
            error, _ = self._savepoint(lambda _, m=message: self._write_one(m))
            if error is not None:
                outcome.failed_sends[i] = error
        for i, settle in enumerate(batch.settles):

            def one(_: Any, settle: Settle = settle) -> None:
                seq, outputs, dead, _ = settle
                if c.execute(self._delete, (seq,)).rowcount != 1:
                    raise NotHeld(f"message {seq} is no longer claimed by this process")
                for output in outputs:
                    self._write_one(output)
                if dead is not None:
                    self._insert_aside([dead])

            error, _ = self._savepoint(one)
            if error is not None:
                outcome.failed_settles[i] = error
            else:
                outcome.deleted += 1
        for statement, given in ((self._release, batch.releases), (self._unclaim, batch.unclaims)):
            for seq, name in given:
                if c.execute(statement, (seq,)).rowcount == 1:
                    self._ready[name] += 1

    def _write_one(self, message: Prepared) -> None:
        rows, unrouted = message
        self._insert(rows)
        if unrouted is not None:
            self._insert_aside([unrouted])

    def _savepoint(self, run: Any) -> tuple[BaseException | None, Any]:
        """C{run(self)} undone alone if it raises; an error of the file stops the batch."""
        c = self.connection
        ready, asides, made = self._ready.copy(), self._asides.copy(), len(self._made_ids)
        c.execute("SAVEPOINT part")
        try:
            value = run(self)
        except Exception as e:
            if isinstance(e, sqlite3.Error) and transient(e):
                raise
            c.execute("ROLLBACK TO part")
            c.execute("RELEASE part")
            self._ready, self._asides = ready, asides
            self._forget_ids(made)
            return e, None
        c.execute("RELEASE part")
        return None, value

    def _forget_ids(self, keep: int = 0) -> None:
        """Queue ids made by what was rolled back are not the file's."""
        for name in self._made_ids[keep:]:
            self._queue_ids.pop(name, None)
        del self._made_ids[keep:]

    def _rollback(self) -> None:
        self._forget_ids()
        if self.connection.in_transaction:
            self.connection.execute("ROLLBACK")

    def _queue_id(self, name: str) -> int:
        qid = self._queue_ids.get(name)
        if qid is None:
            c = self.connection
            c.execute("INSERT OR IGNORE INTO queues (name) VALUES (?)", (name,))
            qid = int(c.execute("SELECT id FROM queues WHERE name = ?", (name,)).fetchone()[0])
            self._queue_ids[name] = qid
            self._made_ids.append(name)
        return qid

    def _insert(self, rows: Iterable[tuple[str, bytes]]) -> None:
        ids = self._queue_ids
        params = []
        counts: dict[str, int] = {}
        for name, body in rows:
            qid = ids.get(name)
            params.append((qid if qid is not None else self._queue_id(name), body))
            counts[name] = counts.get(name, 0) + 1
        if params:
            self.connection.executemany(_INSERT, params)
            ready = self._ready
            for name, count in counts.items():
                ready[name] += count

    def _insert_aside(self, rows: list[SetAsideRow]) -> None:
        if rows:
            self.connection.executemany(_INSERT_ASIDE, rows)
            self._asides.update(row.kind for row in rows)

    def _claim_rows(self, name: str, count: int, suspects: bool) -> list[tuple[int, bytes, int]]:
        qid = self._queue_ids.get(name)
        if qid is None or count <= 0:
            return []
        statement = self._claim_suspect if suspects else self._claim
        return sorted(self.connection.execute(statement, (qid, count)).fetchall())

    def _count_ready(self) -> None:
        changes = [(delta, self._queue_id(name)) for name, delta in self._ready.items() if delta]
        if changes:
            self.connection.executemany(_READY, changes)

    def _trim(self, kind: str, outcome: Outcome) -> None:
        dropped = self.connection.execute(_TRIM, (kind, kind, self.set_aside_limit)).rowcount
        if dropped > 0:
            self.connection.execute(_COUNT, (f"dropped_{kind}", dropped))
            outcome.dropped[kind] = outcome.dropped.get(kind, 0) + dropped

    # --- changes made as calls of a batch ---------------------------------------------------

    def subscribe(self, app_name: str, types: Iterable[str], replace: bool) -> bool:
        """
        Route C{types} to C{app_name}'s queue (made if new); C{replace}: its routes become
        exactly these. Answers whether the app is paused everywhere.
        """
        c = self.connection
        qid = self._queue_id(app_name)
        if replace:
            c.execute("DELETE FROM routes WHERE queue = ?", (qid,))
        c.executemany("INSERT OR IGNORE INTO routes (type, queue) VALUES (?, ?)", [(t, qid) for t in types])
        return c.execute("SELECT 1 FROM pauses WHERE app = ?", (app_name,)).fetchone() is not None

    def mark_paused(self, app_name: str, paused: bool, by: str) -> None:
        if paused:
            self.connection.execute(
                "INSERT OR REPLACE INTO pauses (app, paused_by, at) VALUES (?, ?, ?)", (app_name, by, time.time())
            )
        else:
            self.connection.execute("DELETE FROM pauses WHERE app = ?", (app_name,))

    def take_set_aside(self, entry_id: str, kind: str, instead: Prepared | None, queue: str | None) -> bool:
        """
        Remove a set-aside entry and, in its place, write C{instead} (it routed again) or
        put its body back in C{queue}. Answers False when no such entry is left.
        """
        c = self.connection
        found = c.execute("SELECT body FROM set_aside WHERE id = ? AND kind = ?", (entry_id, kind)).fetchone()
        if found is None:
            return False
        c.execute("DELETE FROM set_aside WHERE id = ?", (entry_id,))
        if queue is not None and queue in self._queue_ids:
            self._insert([(queue, found[0])])
        elif instead is not None:
            self._write_one(instead)
        return True

    def purge_set_aside(self, kind: str) -> int:
        """Delete every entry of one set-aside store; answers how many."""
        return int(self.connection.execute("DELETE FROM set_aside WHERE kind = ?", (kind,)).rowcount)

    # --- reads (no write transaction) ------------------------------------------------------

    def routes(self) -> list[tuple[str, str]]:
        """(type, queue name) of every route in the file."""
        return self.connection.execute(
            "SELECT routes.type, queues.name FROM routes JOIN queues ON queues.id = routes.queue"
        ).fetchall()

    def queue_names(self) -> list[str]:
        return [row[0] for row in self.connection.execute("SELECT name FROM queues")]

    def ready(self, app_name: str) -> int:
        row = self.connection.execute("SELECT ready FROM queues WHERE name = ?", (app_name,)).fetchone()
        return 0 if row is None else int(row[0])

    def queues(self) -> dict[str, int]:
        """Every queue's ready count, by name."""
        return {name: int(ready) for name, ready in self.connection.execute("SELECT name, ready FROM queues ORDER BY name")}

    def set_aside_counts(self) -> dict[str, int]:
        found = dict(self.connection.execute("SELECT kind, count(*) FROM set_aside GROUP BY kind").fetchall())
        return {kind: int(found.get(kind, 0)) for kind in (UNROUTED, DEAD)}

    def processes(self) -> list[tuple[int, str, str, float]]:
        """(pid, host, name, started_at) of the processes the file says use it."""
        return self.connection.execute("SELECT pid, host, name, started_at FROM processes ORDER BY token").fetchall()

    def pauses(self) -> dict[str, str]:
        return dict(self.connection.execute("SELECT app, paused_by FROM pauses").fetchall())

    def dropped(self) -> dict[str, int]:
        found = dict(self.connection.execute("SELECT name, value FROM counters WHERE name LIKE 'dropped_%'").fetchall())
        return {kind: int(found.get(f"dropped_{kind}", 0)) for kind in (UNROUTED, DEAD)}

    def set_aside(self, kind: str) -> list[SetAsideMessage]:
        return [
            SetAsideMessage(body=body, reason=reason, code=code, type_name=type_name, app_name=app, at=at, id=entry_id)
            for entry_id, body, code, reason, type_name, app, at in self.connection.execute(
                "SELECT id, body, code, reason, type, app, at FROM set_aside WHERE kind = ? ORDER BY seq", (kind,)
            )
        ]

    def free_pages(self) -> int:
        return int(self.connection.execute("PRAGMA freelist_count").fetchone()[0])

    # --- giving space back ------------------------------------------------------------------

    def shrink(self, pages: int) -> int:
        """
        Give up to C{pages} free pages back to the file system, then checkpoint the WAL into
        the file and truncate it. Answers the free pages left.
        """
        c = self.connection
        if pages > 0 and self.free_pages():
            # (executescript steps it to the end: execute() would free one page only)
            c.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
        left = self.free_pages()
        if not left:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return left

