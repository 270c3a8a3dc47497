"""Helpers for the SQLite transport's unit tests: a transport on a fake clock, and reading the file."""

from __future__ import annotations

import sqlite3

from twisted.internet.task import Clock

from scbus.transports.sqlite import SQLiteSettings, SQLiteTransport


def make_transport(path, clock=None, busy_timeout=5.0, **settings):
    """A started transport whose writer runs inline, its results coming back through C{clock}."""
    clock = clock if clock is not None else Clock()
    transport = SQLiteTransport(
        SQLiteSettings(path=str(path), **settings), clock, writer="inline", busy_timeout=busy_timeout
    )
    transport.startService()
    return transport, clock


def settle(clock: Clock, turns: int = 50) -> None:
    """Run the clock's pending calls (flushes, commit results) until none is due now."""
    for _ in range(turns):
        due = [c for c in clock.getDelayedCalls() if c.getTime() <= clock.seconds()]
        if not due:
            return
        clock.advance(0)


def result(d, clock: Clock):
    """The result of C{d} once the clock has run what is due (the test fails if it has none)."""
    settle(clock)
    box = []
    d.addBoth(box.append)
    assert box, f"{d!r} has no result"
    return box[0]


def rows(path, sql, *args):
    """Read the file with a connection of its own, as another program would."""
    connection = sqlite3.connect(str(path))
    try:
        return connection.execute(sql, args).fetchall()
    finally:
        connection.close()


def queue_rows(path, app):
    """(seq, deliveries, claimed) of the app's queue in the file."""
    return rows(
        path,
        "SELECT seq, deliveries, claimed_by IS NOT NULL FROM messages JOIN queues ON queues.id = messages.queue "
        "WHERE queues.name = ? ORDER BY seq",
        app,
    )
