"""
SQLiteTransport on a real file and a fake clock (its writer inline): group commit, what
lasts across restarts, quarantine, a file that refuses writes, and the space given back.
"""

from __future__ import annotations

import sqlite3

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from scbus import codec
from scbus.errors import StartupProblem, TransportError
from scbus.message import AppErrorOccurredMessage, Message
from scbus.transports.sqlite import commits
from scbus.transports.sqlite.transport import SQLiteTransport

from .sqlite_helpers import make_transport, queue_rows, result, settle


class Note(Message, wire_name="test.sqlite.Note"):
    text: str


class Loud(Note, wire_name="test.sqlite.Loud"):
    volume: int = 11


@pytest.fixture
def path(tmp_path):
    return tmp_path / "bus.db"


def started(path, **settings):
    transport, clock = make_transport(path, **settings)
    return transport, clock


def stop(transport, clock):
    d = transport.stopService()
    settle(clock)
    assert d.called


def test_a_send_is_confirmed_only_after_its_commit(path):
    t, clock = started(path)
    result(t.setup("a", [Note]), clock)
    d = t.send(Note(text="hi"))
    seen_when_confirmed = []
    d.addCallback(lambda _: seen_when_confirmed.append(queue_rows(path, "a")))
    assert not d.called and queue_rows(path, "a") == []  # until the end of the reactor turn
    settle(clock)
    # Confirmed, and by then in the file as another connection reads it: committed.
    assert d.called and [len(r) for r in seen_when_confirmed] == [1]
    stop(t, clock)


def test_one_turns_sends_and_acknowledgements_are_one_transaction(path):
    t, clock = started(path, app_prefetch={"a": 50})
    result(t.setup("a", [Note]), clock)
    for i in range(20):
        t.send(Note(text=str(i)))
    settle(clock)
    taken = [t.take_ready("a") for _ in range(20)]
    assert all(taken)
    written = []
    committed = t._commits._committed

    def record(batch, outcome):
        if batch.settles or batch.sends:
            written.append((len(batch.settles), len(batch.sends)))
        committed(batch, outcome)

    t._commits._committed = record
    for delivery in taken[:10]:
        t.ack_now(delivery)
    for delivery in taken[10:]:
        t.ack_with(delivery, [t.prepare(Note(text="out"))], lambda outcome: None)
    for i in range(5):
        t.send(Note(text=f"more {i}"))
    settle(clock)
    assert written == [(20, 5)]  # (the claims of the new rows follow in a commit of their own)
    assert len(queue_rows(path, "a")) == 10 + 5
    stop(t, clock)


def test_routes_live_in_the_file_so_a_message_reaches_a_subscriber_that_is_down(path):
    t, clock = started(path)
    result(t.setup("dogs", [Note]), clock)
    stop(t, clock)
    # A process without the app sends (its subscriber's process is down) ...
    t, clock = started(path)
    result(t.send(Loud(text="woof")), clock)
    assert result(t.set_aside("unrouted"), clock) == []
    stop(t, clock)
    # ... and the app finds it when it starts; by its base class, as a subclass.
    t, clock = started(path)
    result(t.setup("dogs", [Note]), clock)
    delivery = result(t.retrieve("dogs"), clock)
    assert isinstance(delivery.message, Loud) and delivery.message.text == "woof"
    stop(t, clock)


def test_a_first_set_up_replaces_the_apps_routes(path):
    t, clock = started(path)
    result(t.setup("a", [Loud]), clock)
    stop(t, clock)
    t, clock = started(path)
    result(t.setup("a", [AppErrorOccurredMessage]), clock)  # the app no longer takes Loud
    result(t.send(Loud(text="x")), clock)
    assert [e.type_name for e in result(t.set_aside("unrouted"), clock)] == ["test.sqlite.Loud"]
    stop(t, clock)


def test_a_pause_marked_in_the_file_outlives_the_process(path):
    t, clock = started(path)
    heard = []
    t.watch_pause_marks(lambda app, paused: heard.append((app, paused)))
    result(t.setup("a", [Note]), clock)
    result(t.mark_paused("a", True), clock)
    assert heard == [("a", True)]
    stop(t, clock)
    t, clock = started(path)
    heard = []
    t.watch_pause_marks(lambda app, paused: heard.append((app, paused)))
    result(t.setup("a", [Note]), clock)
    assert heard == [("a", True)]
    result(t.mark_paused("a", False), clock)
    assert heard == [("a", True), ("a", False)]
    stop(t, clock)
    t, clock = started(path)
    heard = []
    t.watch_pause_marks(lambda app, paused: heard.append((app, paused)))
    result(t.setup("a", [Note]), clock)
    assert heard == []
    stop(t, clock)


def kill(transport):
    """The process dies holding its claims: no commit, the lock goes with it."""
    transport._writer.store.connection.close()
    transport._lock.release()
    transport._stopped = True


def test_a_message_that_kills_its_process_each_time_is_quarantined(path):
    limit = 3
    t, clock = started(path, delivery_limit=limit, app_prefetch={"a": 1})
    result(t.setup("a", [Note]), clock)
    result(t.setup("errors", [AppErrorOccurredMessage]), clock)
    result(t.send(Note(text="poison")), clock)
    for death in range(limit):
        delivery = result(t.retrieve("a"), clock)
        assert delivery.message.text == "poison" and delivery.redelivered == (death > 0)
        kill(t)  # its handler takes the process down
        t, clock = started(path, delivery_limit=limit, app_prefetch={"a": 1})
        assert t.taken_back == 1
        result(t.setup("a", [Note]), clock)
        result(t.setup("errors", [AppErrorOccurredMessage]), clock)
    settle(clock)
    assert queue_rows(path, "a") == []
    [entry] = result(t.set_aside("dead"), clock)
    assert (entry.code, entry.app_name) == ("delivery_limit", "a")
    assert json_id(entry.body) and "delivered 3 times" in entry.reason
    report = result(t.retrieve("errors"), clock).message
    assert report.error_type == "scbus.Quarantined" and report.app_name == "a"
    assert report.message["data"] == {"text": "poison"}
    stop(t, clock)


def json_id(body):
    return codec.decode(body).id


def test_set_aside_drops_are_kept_in_the_file(path):
    t, clock = started(path, set_aside_limit=2)
    for i in range(5):
        t.send(Note(text=str(i)))
    settle(clock)
    assert [codec.decode(e.body).text for e in result(t.set_aside("unrouted"), clock)] == ["3", "4"]
    assert t.dropped == {"unrouted": 3, "dead": 0}
    stop(t, clock)
    t, clock = started(path, set_aside_limit=2)
    assert t.dropped == {"unrouted": 3, "dead": 0}
    stop(t, clock)


def test_a_second_process_on_the_file_is_refused_with_its_pid(path):
    import os

    t, clock = started(path)
    other = SQLiteTransport(t.settings, clock, writer="inline")
    with pytest.raises(StartupProblem) as caught:
        other.startService()
    assert str(caught.value) == (
        f"transport.path: another bus process uses {path} (pid {os.getpid()}): stop it, or give this bus "
        "another transport.path"
    )
    stop(t, clock)
    other.startService()  # free once the first one stopped
    stop(other, clock)


def test_stopping_gives_back_what_is_claimed_and_writes_what_waits(path):
    t, clock = started(path, app_prefetch={"a": 5})
    result(t.setup("a", [Note]), clock)
    for i in range(4):
        t.send(Note(text=str(i)))
    settle(clock)
    handed = t.take_ready("a")
    assert t.buffered("a") == 3
    sent = t.send(Note(text="late"))
    stop(t, clock)
    assert sent.called
    # Nothing claimed any more; the one handed over counts as delivered, the others not.
    assert [(deliveries, claimed) for _, deliveries, claimed in queue_rows(path, "a")] == [
        (1, 0), (0, 0), (0, 0), (0, 0), (0, 0)
    ]
    assert handed.message.text == "0"


def test_pausing_gives_back_the_claimed_deliveries(path):
    t, clock = started(path, app_prefetch={"a": 5})
    result(t.setup("a", [Note]), clock)
    for i in range(3):
        t.send(Note(text=str(i)))
    settle(clock)
    assert t.buffered("a") == 3
    assert result(t.hold("a"), clock) == 3
    assert t.buffered("a") == 0 and result(t.queue_depth("a"), clock) == 3
    t.take_ready("a")
    settle(clock)
    assert t.buffered("a") == 0  # held back: nothing claimed
    result(t.unhold("a"), clock)
    settle(clock)
    assert t.buffered("a") == 3
    stop(t, clock)


# --- a file that refuses writes ---------------------------------------------------------


def fill_the_disk(t):
    store = t._writer.store
    pages = store.connection.execute("PRAGMA page_count").fetchone()[0]
    store.connection.execute(f"PRAGMA max_page_count = {pages}")


def free_the_disk(t):
    t._writer.store.connection.execute("PRAGMA max_page_count = 1073741823")


def test_a_full_disk_makes_sends_wait_and_loses_nothing(path, logged):
    t, clock = started(path)
    result(t.setup("a", [Note]), clock)
    fill_the_disk(t)
    d = t.send(Note(text="x" * 20_000))
    settle(clock)
    assert not d.called
    assert not t.connected and "full" in t.problem and t.waiting_to_send == 1
    clock.advance(1.0)
    assert not d.called
    free_the_disk(t)
    clock.advance(commits.BACKOFF[1])
    settle(clock)
    assert d.called and t.connected and t.waiting_to_send == 0
    assert len(queue_rows(path, "a")) == 1
    warnings = logged("warn")
    assert len([w for w in warnings if "cannot write" in w]) == 1, warnings
    assert any("writable again" in line for line in logged("info"))
    assert not [line for line in logged() if "Traceback" in line]
    stop(t, clock)


def test_a_send_that_waits_too_long_fails_but_acknowledgements_are_kept(path):
    t, clock = started(path, app_prefetch={"a": 5})
    result(t.setup("a", [Note]), clock)
    result(t.send(Note(text="in")), clock)
    delivery = t.take_ready("a")
    fill_the_disk(t)
    sent = t.send(Note(text="y" * 20_000))
    reports = []
    t.ack_with(delivery, [t.prepare(Note(text="z" * 20_000))], reports.append)
    settle(clock)
    for _ in range(int(commits.PATIENCE / commits.BACKOFF[1]) + 3):
        clock.advance(commits.BACKOFF[1])
    failure = result(sent, clock)
    assert isinstance(failure, Failure) and failure.check(TransportError)
    [report] = reports
    assert report.check(TransportError)
    # The handler's results were not written, and its input is still held: a release
    # puts it back, to be handled again.
    assert queue_rows(path, "a") == [(queue_rows(path, "a")[0][0], 1, 1)]
    free_the_disk(t)
    delivery.release()
    settle(clock)
    clock.advance(commits.BACKOFF[1])
    settle(clock)
    again = t.take_ready("a")
    # (not counted as a delivery: its handler did not fail, the file did)
    assert again is not None and not again.redelivered and again.message.text == "in"
    assert queue_rows(path, "a")[0][1] == 1
    stop(t, clock)


def test_another_programs_lock_is_waited_out(path, logged):
    t, clock = make_transport(path, busy_timeout=0.05)
    result(t.setup("a", [Note]), clock)
    other = sqlite3.connect(str(path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    d = t.send(Note(text="waits"))
    settle(clock)
    assert not d.called and not t.connected and "locked" in t.problem
    other.execute("COMMIT")
    other.close()
    clock.advance(commits.BACKOFF[1])
    settle(clock)
    assert d.called and t.connected
    assert not [line for line in logged() if "Traceback" in line]
    assert [line for line in logged("warn") if "database is locked" in line]
    stop(t, clock)


# --- space --------------------------------------------------------------------------------


def test_the_file_and_its_wal_shrink_back_after_a_drained_backlog(path):
    t, clock = started(path, app_prefetch={"a": 200})
    result(t.setup("a", [Note]), clock)
    for _ in range(2000):
        t.send(Note(text="x" * 2000))
    settle(clock)
    wal = path.parent / (path.name + "-wal")
    grown = path.stat().st_size + wal.stat().st_size
    taken = 0
    while taken < 2000:
        delivery = t.take_ready("a")
        if delivery is None:
            settle(clock)
            continue
        t.ack_now(delivery)
        taken += 1
    settle(clock)
    for _ in range(200):
        clock.advance(commits.IDLE_AFTER)
        settle(clock)
    shrunk = path.stat().st_size + wal.stat().st_size
    assert shrunk < grown / 10, (grown, shrunk)
    assert wal.stat().st_size == 0
    stop(t, clock)


def test_a_recover_gives_every_claim_back_and_stale_deliveries_are_refused(path):
    t, clock = started(path, app_prefetch={"a": 5})
    result(t.setup("a", [Note]), clock)
    result(t.send(Note(text="1")), clock)
    delivery = t.take_ready("a")
    assert result(t.recover("a"), clock) == 1
    with pytest.raises(TransportError):
        t.ack_now(delivery)
    reports = []
    t.ack_with(delivery, [], reports.append)
    assert reports[0].check(TransportError)
    again = result(t.retrieve("a"), clock)
    assert again.redelivered and again.message.text == "1"
    stop(t, clock)


def test_a_waiting_retrieve_is_answered_by_a_later_send(path):
    t, clock = started(path)
    result(t.setup("a", [Note]), clock)
    waiting: Deferred = t.retrieve("a")
    settle(clock)
    assert not waiting.called
    t.send(Note(text="now"))
    assert result(waiting, clock).message.text == "now"
    stop(t, clock)


def test_a_row_given_back_and_claimed_again_in_one_transaction_stays_held(path):
    # The release and the claim that takes the row again share a transaction; the new
    # delivery, handed to a waiting retrieve, must be the one held (and settle).
    t, clock = started(path, app_prefetch={"a": 3})
    result(t.setup("a", [Note]), clock)
    for i in range(5):
        t.send(Note(text=str(i)))
    settle(clock)
    first = [t.take_ready("a") for _ in range(3)]
    waiting = t.retrieve("a")
    t._apps["a"].maybe_suspects = True  # (a suspect claim is due, as after an earlier release)
    first[0].release()
    again = result(waiting, clock)
    assert again.seq == first[0].seq and again is not first[0] and again.redelivered
    assert result(again.ack(), clock) is None
    assert [seq for seq, _, _ in queue_rows(path, "a")].count(first[0].seq) == 0
    stop(t, clock)


class Bad(Message, wire_name="test.sqlite.Bad"):
    text: str


def test_a_bystander_of_a_poison_message_is_handled_alone_and_not_quarantined(path):
    # Each death raises the delivery count of every row the process held: the poison in
    # app a, and a bystander in app b. After a death, rows claimed before are claimed one
    # at a time: the poison reaches the limit and is set aside; the bystander is handled.
    settings = dict(delivery_limit=2, app_prefetch={"a": 5, "b": 5})

    def start():
        t, clock = started(path, **settings)
        result(t.setup("a", [Bad]), clock)
        result(t.setup("b", [Note]), clock)
        return t, clock

    t, clock = start()
    t.send(Bad(text="poison"))
    t.send(Note(text="bystander"))
    settle(clock)
    assert [t.take_ready("a").message.text, t.take_ready("b").message.text] == ["poison", "bystander"]
    kill(t)  # the poison's handler takes the process down
    t, clock = start()
    poison = t.take_ready("a")
    assert poison.message.text == "poison" and poison.redelivered
    assert t.take_ready("b") is None  # the bystander waits: one suspect at a time
    kill(t)  # again
    t, clock = start()
    settle(clock)
    [entry] = result(t.set_aside("dead"), clock)
    assert (entry.app_name, entry.code) == ("a", "delivery_limit")
    assert t.take_ready("a") is None
    bystander = t.take_ready("b")
    assert bystander.message.text == "bystander" and bystander.redelivered
    t.ack_now(bystander)
    settle(clock)
    assert queue_rows(path, "b") == [] and result(t.set_aside("dead"), clock) == [entry]
    stop(t, clock)


@pytest.mark.parametrize("durability, level", [("process", 1), ("power", 2)])
def test_durability_sets_what_a_commit_waits_for(path, durability, level):
    # process: synchronous NORMAL (in WAL mode a commit is safe from the process's death;
    # the WAL is synced at checkpoints). power: FULL (the WAL is synced at every commit).
    t, clock = started(path, durability=durability)
    connection = t._writer.store.connection
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == level
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    stop(t, clock)


def test_a_set_up_waits_out_a_file_that_refuses_writes(path):
    # The bus starts an app once its set-up is written: a set-up is tried until it is,
    # not failed after PATIENCE as a send is.
    t, clock = started(path)
    fill_the_disk(t)
    # (routes enough to need pages the full disk does not have, in the set-up's batch)
    many = [f"test.sqlite.T{i}" * 40 for i in range(2000)]
    t._call(lambda s: s.subscribe("a", many, True), lambda e, v: None, expires=False)
    setup = t.setup("b", [Note])
    for _ in range(int(3 * commits.PATIENCE / commits.BACKOFF[1])):
        clock.advance(commits.BACKOFF[1])
    assert not setup.called and not t.connected
    free_the_disk(t)
    clock.advance(commits.BACKOFF[1])
    settle(clock)
    assert result(setup, clock) is None and t.connected
    stop(t, clock)
