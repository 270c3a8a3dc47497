"""
The main bus on the SQLite transport: a handler's results and its input's acknowledgement
in one transaction (ITransactionalSettle), on a real file and a fake clock.
"""

from __future__ import annotations

from datetime import timedelta
import pytest

from scbus import codec
from scbus.appbus import ApplicationMessageBus
from scbus.interfaces import ITransactionalSettle
from scbus.mainbus import MainMessageBus
from scbus.message import AppErrorOccurredMessage, Message
from scbus.transports.sqlite import commits
from scbus.transports.sqlite.store import Store

from .sqlite_helpers import make_transport, result, rows, settle


class Job(Message, wire_name="test.sqlite.bus.Job"):
    n: int


class Step(Message, wire_name="test.sqlite.bus.Step"):
    n: int
    pad: str = ""


class Weird(Message, wire_name="test.sqlite.bus.Weird"):
    value: object


@pytest.fixture
def path(tmp_path):
    return tmp_path / "bus.db"


def bus_on(path, handlers, before_start=None, **settings):
    """A started bus running one app, "relay", on the file; "sink" and "errors" queues set up."""
    transport, clock = make_transport(path, **settings)
    result(transport.setup("sink", [Step]), clock)
    result(transport.setup("errors", [AppErrorOccurredMessage]), clock)
    if before_start is not None:
        result(transport.setup("relay", [Job]), clock)
        before_start(transport, clock)
    bus = MainMessageBus("test", transport, reactor=clock)
    bus.add_app("relay", ApplicationMessageBus("relay", handlers, reactor=clock), max_in_flight=5)
    bus.startService()
    settle(clock)
    return bus, transport, clock


def bodies(path, queue):
    return [
        codec.decode(body)
        for (body,) in rows(
            path, "SELECT body FROM messages JOIN queues ON queues.id = queue WHERE name = ? ORDER BY seq", queue
        )
    ]


def kill(transport):
    transport._writer.store.connection.close()
    transport._lock.release()
    transport._stopped = True


def test_the_bus_settles_through_the_transaction(path):
    bus, t, clock = bus_on(path, {Job: lambda job: None})
    assert ITransactionalSettle.providedBy(t) and bus._transactional is t


def test_a_crash_before_the_commit_leaves_the_input_and_sends_nothing(path):
    handled = []

    def relay(job):
        handled.append(job.n)
        return Step(n=job.n)

    def queue_and_die_before_settling(t, clock):
        result(t.send(Job(n=1)), clock)
        store = t._writer.store

        def apply(batch, commit=True):
            # The process dies before it commits the batch that settles the job.
            return Store.apply(store, batch, commit=commit and not batch.settles)

        store.apply = apply

    bus, t, clock = bus_on(path, {Job: relay}, before_start=queue_and_die_before_settling)
    assert handled == [1]
    kill(t)
    assert [j.n for j in bodies(path, "relay")] == [1]
    assert bodies(path, "sink") == []
    # Started again, it handles the message once more, and now both are done together.
    bus, t, clock = bus_on(path, {Job: relay})
    settle(clock)
    assert handled == [1, 1]
    assert bodies(path, "relay") == []
    assert [s.n for s in bodies(path, "sink")] == [1]
    assert bus.apps["relay"].counters.acked == 1


def test_every_result_and_the_acknowledgement_are_one_transaction(path):
    bus, t, clock = bus_on(path, {Job: lambda job: [Step(n=job.n), Step(n=-job.n)]})
    written = []
    committed = t._commits._committed

    def record(batch, outcome):
        written.extend((seq, len(outputs)) for seq, outputs, _, _ in batch.settles)
        committed(batch, outcome)

    t._commits._committed = record
    for n in (1, 2, 3):
        t.send(Job(n=n))
    settle(clock)
    assert [count for _, count in written] == [2, 2, 2]
    assert sorted(s.n for s in bodies(path, "sink")) == [-3, -2, -1, 1, 2, 3]
    assert bodies(path, "relay") == []


def test_an_unencodable_result_is_replaced_by_the_apps_error_report(path, logged):
    bus, t, clock = bus_on(path, {Job: lambda job: [Step(n=job.n), Weird(value={1, 2})]})
    result(t.send(Job(n=7)), clock)
    settle(clock)
    assert [s.n for s in bodies(path, "sink")] == [7]
    [report] = bodies(path, "errors")
    assert report.error_type == "scbus.errors.EncodeError" and report.app_name == "relay"
    assert report.message["data"] == {"n": 7}
    assert bodies(path, "relay") == []


def test_results_that_cannot_be_written_release_the_input_to_be_handled_again(path, logged):
    handled = []

    def relay(job):
        handled.append(job.n)
        return Step(n=job.n, pad="x" * 20_000)  # it needs pages the full disk does not have

    def queue_then_fill_the_disk(t, clock):
        for n in (1, 2):
            result(t.send(Job(n=n)), clock)
        c = t._writer.store.connection
        c.execute(f"PRAGMA max_page_count = {c.execute('PRAGMA page_count').fetchone()[0]}")

    bus, t, clock = bus_on(path, {Job: relay}, before_start=queue_then_fill_the_disk)
    for _ in range(3 * int(commits.PATIENCE / commits.BACKOFF[1])):
        clock.advance(commits.BACKOFF[1])
    assert bodies(path, "sink") == []
    assert sorted(j.n for j in bodies(path, "relay")) == [1, 2]
    assert bus.apps["relay"].counters.send_failures >= 2  # released after PATIENCE, handled again
    assert handled.count(1) >= 2
    t._writer.store.connection.execute("PRAGMA max_page_count = 1073741823")
    for _ in range(int(commits.PATIENCE / commits.BACKOFF[1]) + 3):
        clock.advance(commits.BACKOFF[1])
    assert t.connected
    assert sorted(s.n for s in bodies(path, "sink")) == [1, 2]  # each output once
    assert bodies(path, "relay") == []
    warnings = logged("warn")
    assert any("results of test.sqlite.bus.Job not sent" in w for w in warnings), warnings
    assert any("cannot write (database or disk is full)" in w for w in warnings), warnings
    assert not [line for line in logged() if "Traceback" in line]


def test_idle_results_are_sent_on_their_own(path):
    ticks = iter(range(100))
    bus, t, clock = bus_on(path, {timedelta(seconds=1): lambda: Step(n=next(ticks))})
    clock.advance(1)
    settle(clock)
    clock.advance(1)
    settle(clock)
    assert [s.n for s in bodies(path, "sink")] == [0, 1]
