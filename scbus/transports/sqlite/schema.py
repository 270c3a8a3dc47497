"""
The database file: its tables, its version, and opening it with one clear line for each
way it can be unusable.

The schema is versioned with ``PRAGMA user_version`` and marked as scbus's with
``PRAGMA application_id``; migrations run forward only, each in its own transaction, and
a file of a newer version than this code knows is refused, never rewritten. docs/sqlite.md
describes every table for programs that read or write the file themselves.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence

from ...errors import StartupProblem
from .settings import synchronous_pragma

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "TABLES",
    "MIGRATIONS",
    "open_database",
    "check_place",
    "file_problem",
    "transient",
    "BUSY_TIMEOUT",
]

#: ``PRAGMA application_id`` of an scbus file ("SCBu").
APPLICATION_ID = 0x53434275

#: The schema this code writes; a file with a larger ``user_version`` is refused.
SCHEMA_VERSION = 1

#: Seconds a statement waits for another connection's lock before SQLITE_BUSY.
BUSY_TIMEOUT = 5.0

#: The tables of version 1, in the order they are made (docs/sqlite.md).
TABLES: Sequence[str] = (
    # One row per app queue; ``ready`` counts its rows with no claim (kept by every
    # writer, recounted at each start).
    "CREATE TABLE queues ("
    " id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, ready INTEGER NOT NULL DEFAULT 0)",
    # A queue receives every message whose type, or one of whose base types, it names.
    "CREATE TABLE routes ("
    " type TEXT NOT NULL, queue INTEGER NOT NULL, PRIMARY KEY (type, queue)) WITHOUT ROWID",
    # Queued messages, as the codec's bytes. ``claimed_by`` is the token of the process
    # that holds it (NULL: ready); ``deliveries`` counts the claims it had.
    "CREATE TABLE messages ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, queue INTEGER NOT NULL, body BLOB NOT NULL,"
    " deliveries INTEGER NOT NULL DEFAULT 0, claimed_by INTEGER)",
    # Ready rows by queue; those never claimed (deliveries 0) apart from the suspects:
    # rows claimed before that were never settled (their process died on them).
    "CREATE INDEX messages_ready ON messages (queue, deliveries, seq) WHERE claimed_by IS NULL",
    "CREATE INDEX messages_claimed ON messages (claimed_by) WHERE claimed_by IS NOT NULL",
    # The unrouted and dead stores.
    "CREATE TABLE set_aside ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, id TEXT NOT NULL UNIQUE,"
    " body BLOB NOT NULL, code TEXT NOT NULL, reason TEXT NOT NULL, type TEXT, app TEXT,"
    " at REAL NOT NULL)",
    "CREATE INDEX set_aside_kind ON set_aside (kind, seq)",
    # Apps paused everywhere (a row while paused).
    "CREATE TABLE pauses (app TEXT PRIMARY KEY, paused_by TEXT NOT NULL, at REAL NOT NULL) WITHOUT ROWID",
    # Bus processes using the file; a token names a process's claims.
    "CREATE TABLE processes ("
    " token INTEGER PRIMARY KEY AUTOINCREMENT, pid INTEGER NOT NULL, host TEXT NOT NULL,"
    " name TEXT NOT NULL, started_at REAL NOT NULL)",
    # Counts that outlive a process (entries each set-aside store dropped).
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
)

#: Forward migrations: MIGRATIONS[n] takes a file from version n - 1 to n.
MIGRATIONS: dict[int, Sequence[str]] = {}

#: Tables small enough to check at every start (PRAGMA quick_check of each).
_CHECKED_AT_START = ("queues", "routes", "pauses", "processes", "counters")


def open_database(path: str, durability: str, busy_timeout: float = BUSY_TIMEOUT) -> sqlite3.Connection:
    """
    A connection to the file at C{path}, made and migrated if needed, in WAL mode with the
    synchronous level of C{durability}. Writes are taken with explicit BEGIN IMMEDIATE
    (autocommit otherwise). @raise StartupProblem: one line naming the file and what to do.
    """
    check_place(path)
    try:
        connection = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    except sqlite3.Error as e:
        raise file_problem(path, e) from None
    try:
        _prepare(connection, path, durability)
    except sqlite3.Error as e:
        connection.close()
        raise file_problem(path, e) from None
    except BaseException:
        connection.close()
        raise
    return connection


def check_place(path: str) -> None:
    """The path names a file in a directory that exists. @raise StartupProblem."""
    directory = os.path.dirname(path) or "."
    if os.path.isdir(path):
        raise StartupProblem("transport.path", f"{path} is a directory: name a file in it (e.g. {os.path.join(path, 'scbus.db')})")
    if not os.path.isdir(directory):
        raise StartupProblem("transport.path", f"{path}: its directory {directory} does not exist: create it, or name another path")


def _prepare(connection: sqlite3.Connection, path: str, durability: str) -> None:
    version = connection.execute("PRAGMA user_version").fetchone()[0]  # NOTADB shows here
    application = connection.execute("PRAGMA application_id").fetchone()[0]
    tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    if application not in (0, APPLICATION_ID) or (application == 0 and tables):
        raise StartupProblem(
            "transport.path",
            f"{path} is an SQLite database of another program (application_id {application:#x}, tables "
            f"{', '.join(sorted(tables)[:5]) or 'none'}): point transport.path at a file of its own",
        )
    if version > SCHEMA_VERSION:
        raise StartupProblem(
            "transport.path",
            f"{path} has schema version {version}, newer than this scbus knows ({SCHEMA_VERSION}): "
            "run the newer scbus that wrote it, or point transport.path at another file",
        )
    if not tables:
        # auto_vacuum must be chosen before the first table exists: freed pages can then
        # be given back to the file system (incremental_vacuum) without a full VACUUM.
        connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
    mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StartupProblem(
            "transport.path",
            f"{path}: SQLite cannot use WAL mode here (journal mode stays {mode!r}): put the file on a "
            "local, writable file system (WAL does not work over network file systems)",
        )
    connection.execute(f"PRAGMA synchronous = {synchronous_pragma(durability)}")
    # Deleted rows are zeroed where that costs no extra write.
    connection.execute("PRAGMA secure_delete = FAST")
    if not tables:
        _create(connection)
    elif version < SCHEMA_VERSION:
        _migrate(connection, version)
    for table in _CHECKED_AT_START:
        found = [row[0] for row in connection.execute(f"PRAGMA quick_check({table})")]
        if found != ["ok"]:
            raise StartupProblem(
                "transport.path",
                f"{path} is corrupt ({'; '.join(map(str, found[:3]))}): {_CORRUPT_ADVICE.format(path=path)}",
            )


def _create(connection: sqlite3.Connection) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        for statement in TABLES:
            connection.execute(statement)
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _migrate(connection: sqlite3.Connection, version: int) -> None:
    for target in range(version + 1, SCHEMA_VERSION + 1):
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[target]:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {target}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise


_CORRUPT_ADVICE = (
    "restore it from a backup, or move it and its -wal file away to start with an empty one "
    "(`sqlite3 {path} .recover` may save what it holds)"
)

#: Error names that pass: another program's lock, a full or failing disk. Retried.
_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_PROTOCOL", "SQLITE_NOMEM", "SQLITE_READONLY", "SQLITE_CANTOPEN")


def transient(error: BaseException) -> bool:
    """True for an error that retrying later may cure (a lock, a full disk, I/O)."""
    name = getattr(error, "sqlite_errorname", "") or ""
    return isinstance(error, sqlite3.OperationalError) and name.startswith(_TRANSIENT)


def file_problem(path: str, error: BaseException) -> StartupProblem:
    """One line for the operator: what is wrong with the file, and what to do."""
    name = getattr(error, "sqlite_errorname", "") or ""
    text = str(error)
    if name.startswith("SQLITE_NOTADB"):
        what = f"is not an SQLite database ({text}): point transport.path at another file, or move this one away"
    elif name.startswith("SQLITE_CORRUPT"):
        what = f"is corrupt ({text}): {_CORRUPT_ADVICE.format(path=path)}"
    elif name.startswith("SQLITE_READONLY") or name.startswith("SQLITE_PERM") or name.startswith("SQLITE_AUTH"):
        what = (
            f"cannot be written ({text}): the bus writes the file and, in its directory, its -wal, -shm and "
            ".lock files: give the bus's user write access to both (and a file system not mounted read-only)"
        )
    elif name.startswith("SQLITE_CANTOPEN"):
        what = (
            f"cannot be opened ({text}): check that the bus's user may read and write it and its "
            "directory (for its -wal and -shm files)"
        )
    elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        what = (
            f"is locked by another program ({text}, after waiting {BUSY_TIMEOUT:g}s): end that "
            "program's transaction (an sqlite3 shell, a backup tool) and start the bus again"
        )
    elif name.startswith("SQLITE_FULL"):
        what = f"cannot grow: the disk is full ({text}): free space on its file system"
    elif name.startswith("SQLITE_IOERR"):
        what = f"cannot be read or written ({text}): check the disk and its file system"
    else:
        what = f"cannot be used ({type(error).__name__}: {text})"
    return StartupProblem("transport.path", f"{path} {what}")
