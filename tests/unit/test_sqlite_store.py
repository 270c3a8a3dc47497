"""The SQL of the SQLite transport (store.py), on a real file, with no reactor."""

from __future__ import annotations

import pytest

from scbus.transports.sqlite.batch import Batch, SetAsideRow
from scbus.transports.sqlite.schema import open_database
from scbus.transports.sqlite.store import NotHeld, Store

from .sqlite_helpers import queue_rows, rows


@pytest.fixture
def path(tmp_path):
    return tmp_path / "store.db"


def open_store(path, limit=100, name="test"):
    store = Store(open_database(str(path), "process"), limit)
    store.start(name)
    return store


def sent(*pairs):
    """A batch of plain sends: (queue, body) each."""
    batch = Batch()
    batch.sends = [((((queue, body),), None), None) for queue, body in pairs]
    return batch


def claim(store, queue, count, suspects=False):
    """Claim rows never claimed before, or (suspects) the one claimed before and not settled."""
    batch = Batch()
    batch.claims = [(queue, count, suspects)]
    outcome = store.apply(batch)
    assert outcome.error is None
    return outcome.claimed[0]


def ready(path, queue):
    return rows(path, "SELECT ready FROM queues WHERE name = ?", queue)[0][0]


def test_sends_claims_and_acks_keep_the_ready_count_true(path):
    store = open_store(path)
    assert store.apply(sent(("a", b"1"), ("a", b"2"), ("b", b"3"))).error is None
    assert (ready(path, "a"), ready(path, "b")) == (2, 1)
    claimed = claim(store, "a", 10)
    assert [(body, deliveries) for _, body, deliveries in claimed] == [(b"1", 1), (b"2", 1)]
    assert ready(path, "a") == 0
    batch = Batch()
    batch.settles = [(claimed[0][0], [((("b", b"out"),), None)], None, None)]
    batch.releases = [(claimed[1][0], "a")]
    outcome = store.apply(batch)
    assert outcome.error is None and outcome.deleted == 1 and outcome.filled == {"a", "b"}
    assert (ready(path, "a"), ready(path, "b")) == (1, 2)
    assert [d for _, d, _ in queue_rows(path, "a")] == [1]
    assert claim(store, "a", 10) == []  # the one given back is a suspect now: claimed alone
    again = claim(store, "a", 10, suspects=True)
    assert [(body, deliveries) for _, body, deliveries in again] == [(b"2", 2)]


def test_a_claim_given_back_unhanded_is_not_counted_as_a_delivery(path):
    store = open_store(path)
    store.apply(sent(("a", b"1")))
    [(seq, _, deliveries)] = claim(store, "a", 1)
    assert deliveries == 1
    batch = Batch()
    batch.unclaims = [(seq, "a")]
    store.apply(batch)
    assert queue_rows(path, "a") == [(seq, 0, 0)]


def test_outputs_are_written_only_with_their_inputs_acknowledgement(path):
    # One settle's row is no longer this process's: its outputs are not written; the
    # others in the same batch are.
    store = open_store(path)
    store.apply(sent(("a", b"1"), ("a", b"2")))
    first, second = claim(store, "a", 2)
    other = Store(open_database(str(path), "process"), 100)
    other.start("other")  # takes back every claim, as a new process does
    batch = Batch()
    batch.settles = [
        (first[0], [((("b", b"out-1"),), None)], None, None),
        (second[0], [((("b", b"out-2"),), None)], None, None),
    ]
    outcome = store.apply(batch)
    assert outcome.error is None
    assert set(outcome.failed_settles) == {0, 1}
    assert all(isinstance(e, NotHeld) for e in outcome.failed_settles.values())
    assert queue_rows(path, "b") == []
    assert [claimed for _, _, claimed in queue_rows(path, "a")] == [0, 0]
    # Claimed again by the new process, one of them settled there: only its output.
    mine = claim(other, "a", 1, suspects=True)
    batch = Batch()
    batch.settles = [(mine[0][0], [((("b", b"out-1"),), None)], None, None)]
    assert other.apply(batch).failed_settles == {}
    assert rows(path, "SELECT body FROM messages JOIN queues ON queues.id = queue WHERE name = 'b'") == [(b"out-1",)]


def test_start_takes_back_every_claim_and_recounts(path):
    store = open_store(path)
    store.apply(sent(("a", b"1"), ("a", b"2")))
    claim(store, "a", 2)
    store.connection.execute("UPDATE queues SET ready = 99")  # a count gone wrong
    store.connection.close()
    again = open_store(path)
    assert again.token != store.token
    assert ready(path, "a") == 2
    assert [claimed for _, _, claimed in queue_rows(path, "a")] == [0, 0]
    assert rows(path, "SELECT count(*) FROM processes") == [(1,)]


def test_a_rolled_back_batch_leaves_nothing(path):
    store = open_store(path)
    store.apply(sent(("a", b"1")))
    outcome = store.apply(sent(("new-queue", b"2"), ("a", b"3")), commit=False)
    assert outcome.error is None
    store.connection.close()  # killed before the commit
    again = open_store(path)
    assert [d for _, d, _ in queue_rows(path, "a")] == [0]
    assert rows(path, "SELECT name FROM queues") == [("a",)]
    # The queue made in the lost transaction is made again, not taken from a stale cache.
    assert again.apply(sent(("new-queue", b"4"))).error is None
    assert [len(r) for r in [queue_rows(path, "new-queue")]] == [1]


def aside(kind, entry_id, body=b"x"):
    return SetAsideRow(kind, entry_id, body, kind, "why", "t.T", None, 1.0)


def test_set_aside_stores_keep_their_newest_entries_and_count_the_rest(path):
    store = open_store(path, limit=3)
    batch = Batch()
    batch.sends = [(((), aside("unrouted", f"u{i}")), None) for i in range(5)]
    outcome = store.apply(batch)
    assert outcome.dropped == {"unrouted": 2}
    assert [e.id for e in store.set_aside("unrouted")] == ["u2", "u3", "u4"]
    batch = Batch()
    batch.sends = [(((), aside("unrouted", "u5")), None), (((), aside("dead", "d0")), None)]
    assert store.apply(batch).dropped == {"unrouted": 1}
    assert store.dropped() == {"unrouted": 3, "dead": 0}
    assert [e.id for e in store.set_aside("dead")] == ["d0"]


def test_a_set_aside_entry_is_replaced_by_its_replay_in_one_transaction(path):
    store = open_store(path)
    store.apply(sent(("a", b"first")))
    batch = Batch()
    batch.sends = [(((), aside("dead", "d1", b"body")), None)]
    store.apply(batch)
    replay = Batch()
    results = []
    from scbus.transports.sqlite.batch import Call

    replay.calls = [Call(lambda s: s.take_set_aside("d1", "dead", None, "a"), lambda e, v: results.append(v))]
    outcome = store.apply(replay)
    assert outcome.calls == [(None, True)] and outcome.filled == {"a"}
    assert store.set_aside("dead") == []
    assert [body for _, body, _ in claim(store, "a", 5)] == [b"first", b"body"]
    again = Batch()
    again.calls = [Call(lambda s: s.take_set_aside("d1", "dead", None, "a"), lambda e, v: None)]
    assert store.apply(again).calls == [(None, False)]


def test_a_failing_call_is_undone_alone(path):
    from scbus.transports.sqlite.batch import Call

    store = open_store(path)

    def broken(s):
        s.subscribe("a", ["t.T"], replace=True)
        raise RuntimeError("a bug")

    batch = sent(("a", b"1"))
    batch.calls = [Call(broken, lambda e, v: None)]
    outcome = store.apply(batch)
    assert outcome.error is None
    [(error, _)] = outcome.calls
    assert isinstance(error, RuntimeError)
    assert store.routes() == []
    assert [d for _, d, _ in queue_rows(path, "a")] == [0]


def test_a_full_disk_rolls_the_batch_back_and_is_reported(path):
    store = open_store(path)
    store.apply(sent(("a", b"1")))
    pages = store.connection.execute("PRAGMA page_count").fetchone()[0]
    store.connection.execute(f"PRAGMA max_page_count = {pages}")
    outcome = store.apply(sent(*[("a", b"x" * 4000)] * 20))
    assert outcome.error is not None and "full" in str(outcome.error)
    assert [d for _, d, _ in queue_rows(path, "a")] == [0]
    assert ready(path, "a") == 1


def test_space_is_given_back_after_a_drained_backlog(path):
    store = open_store(path)
    store.apply(sent(*[("a", b"x" * 3000)] * 500))
    big = path.stat().st_size + (path.parent / (path.name + "-wal")).stat().st_size
    claimed = claim(store, "a", 500)
    batch = Batch()
    batch.settles = [(seq, [], None, None) for seq, _, _ in claimed]
    store.apply(batch)
    assert store.free_pages() > 300
    while store.shrink(100):
        pass
    wal = path.parent / (path.name + "-wal")
    assert store.free_pages() == 0
    assert wal.stat().st_size == 0
    assert path.stat().st_size < big / 4
