"""
The SQLite transport's claims, acknowledgements, releases and set-asides against a model,
with the process killed between any two steps: before the pending work was handed to the
writer, or in the middle of its transaction (the statements ran, the commit did not). At
every stable point the file must hold exactly what the model says was committed: no
message lost, none duplicated, each output written exactly once with its input's
acknowledgement, every claim accounted for and the ready counts true.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from functools import partial
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from twisted.internet.task import Clock

from scbus import codec
from scbus.errors import TransportError
from scbus.message import Message
from scbus.transports.sqlite.store import Store

from .sqlite_helpers import make_transport, rows, settle


class Ping(Message, wire_name="test.sqlite.sm.Ping"):
    k: int


class Pong(Message, wire_name="test.sqlite.sm.Pong"):
    k: int


QUEUED, HANDED = "queued", "handed"


def crash(transport) -> None:
    """The process dies: the connection goes without a commit, the lock with the process."""
    store = transport._writer.store
    if store is not None:
        store.connection.close()
    transport._lock.release()
    transport._stopped = True


class ClaimsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="scbus-sm-"))
        self.path = self.directory / "sm.db"
        self.transport = None
        self.next_k = 0
        #: Committed state: (type, k) -> where it is: in its queue, handed to a handler.
        self.where: dict[tuple[str, int], str] = {}
        self.dead: Counter[tuple[str, int]] = Counter()
        #: Each Pong k written so far (must end at most 1, and 1 exactly when Ping k was
        #: settled with it).
        self.pongs_written: Counter[int] = Counter()
        self.settled_with: set[int] = set()
        self.ever_handed: set[tuple[str, int]] = set()
        #: Deliveries in the test's hand: (type, k) -> delivery.
        self.hand: dict[tuple[str, int], object] = {}
        #: Work asked for since the last commit: applied to the model at the next turn.
        self.pending: list = []
        #: Requests waiting for a delivery (per app), and the deliveries they got, checked
        #: against the model once the turn's commits are applied to it.
        self.waiting: dict[str, object] = {}
        self.arrived: list = []

    def teardown(self) -> None:
        if self.transport is not None:
            crash(self.transport)
        shutil.rmtree(self.directory, ignore_errors=True)

    # --- the process ----------------------------------------------------------------------

    def start(self) -> None:
        self.clock = Clock()
        self.transport, _ = make_transport(self.path, self.clock, delivery_limit=1000, app_prefetch={"a": 3, "b": 2})
        self.transport.setup("a", [Ping])
        self.transport.setup("b", [Pong])
        settle(self.clock)

    @initialize()
    def first_start(self) -> None:
        self.start()

    def lost(self) -> None:
        """What a death does to the model: pending work gone, every claim back in its queue."""
        self.pending = []
        self.hand = {}
        self.waiting = {}
        self.arrived = []
        for key, place in self.where.items():
            if place == HANDED:
                self.where[key] = QUEUED

    # --- steps ----------------------------------------------------------------------------

    @rule(count=st.integers(1, 3))
    def send(self, count: int) -> None:
        for _ in range(count):
            k = self.next_k
            self.next_k += 1
            self.transport.send(Ping(k=k))
            self.pending.append(("sent", ("Ping", k)))

    @rule(app=st.sampled_from(["a", "b"]))
    def take(self, app: str) -> None:
        delivery = self.transport.take_ready(app)
        if delivery is not None:
            self.handed(app, delivery)

    @rule(app=st.sampled_from(["a", "b"]))
    def wait(self, app: str) -> None:
        """A retrieve that waits: it is answered inside a later commit's results."""
        if app in self.waiting:
            return
        waiter = self.transport.retrieve(app)
        self.waiting[app] = waiter
        waiter.addCallbacks(lambda d: self.arrived.append((app, d)), lambda f: None)
        if waiter.called:
            del self.waiting[app]
            self.take_arrivals()

    def take_arrivals(self) -> None:
        arrived, self.arrived = self.arrived, []
        for app, delivery in arrived:
            self.waiting.pop(app, None)
            self.handed(app, delivery)

    def handed(self, app: str, delivery) -> None:
        key = (type(delivery.message).__name__, delivery.message.k)
        assert self.where.get(key) == QUEUED, f"handed {key}, which the model has as {self.where.get(key)}"
        assert {"a": "Ping", "b": "Pong"}[app] == key[0]
        if key in self.ever_handed:
            assert delivery.redelivered, f"{key} was handed before but is not marked redelivered"
        self.ever_handed.add(key)
        self.where[key] = HANDED
        self.hand[key] = delivery

    def _held(self, data, kind: str | None = None):
        keys = sorted(k for k in self.hand if kind is None or k[0] == kind)
        if not keys:
            return None, None
        key = data.draw(st.sampled_from(keys))
        return key, self.hand.pop(key)

    @rule(data=st.data())
    def ack(self, data) -> None:
        key, delivery = self._held(data)
        if key is not None:
            self.transport.ack_now(delivery)
            self.pending.append(("acked", key))

    @rule(data=st.data())
    def ack_with_output(self, data) -> None:
        key, delivery = self._held(data, "Ping")
        if key is not None:
            reports = []
            self.transport.ack_with(delivery, [self.transport.prepare(Pong(k=key[1]))], reports.append)
            self.pending.append(("settled_with", key))

    @rule(data=st.data())
    def release(self, data) -> None:
        key, delivery = self._held(data)
        if key is not None:
            delivery.release()
            self.pending.append(("released", key))

    @rule(data=st.data())
    def reject(self, data) -> None:
        key, delivery = self._held(data)
        if key is not None:
            delivery.reject("unexpected-type", "refused by the test")
            self.pending.append(("rejected", key))

    @rule()
    def turn(self) -> None:
        """The reactor turn ends: what was asked for is committed."""
        settle(self.clock)
        for what, key in self.pending:
            if what == "sent":
                self.where[key] = QUEUED
            elif what == "acked":
                del self.where[key]
            elif what == "settled_with":
                del self.where[key]
                self.settled_with.add(key[1])
                self.where[("Pong", key[1])] = QUEUED
                self.pongs_written[key[1]] += 1
            elif what == "released":
                self.where[key] = QUEUED
            elif what == "rejected":
                del self.where[key]
                self.dead[key] += 1
        self.pending = []
        self.take_arrivals()
        self.check_file()

    @rule()
    def killed_before_the_writer_saw_it(self) -> None:
        crash(self.transport)
        self.lost()
        self.start()
        self.check_file()

    @precondition(lambda self: bool(self.pending))
    @rule()
    def killed_before_the_commit(self) -> None:
        store = self.transport._writer.store
        store.apply = partial(Store.apply, store, commit=False)
        self.clock.advance(0)  # the batch's statements run; its commit never comes
        crash(self.transport)
        self.lost()
        self.start()
        self.check_file()

    @rule()
    def stopped_and_started(self) -> None:
        """A clean stop writes what waits and gives every claim back."""
        d = self.transport.stopService()
        settle(self.clock)
        assert d.called
        for what, key in self.pending:
            if what in ("sent", "released"):
                self.where[key] = QUEUED
            elif what in ("acked", "settled_with", "rejected"):
                self.where.pop(key, None)
                if what == "settled_with":
                    self.settled_with.add(key[1])
                    self.where[("Pong", key[1])] = QUEUED
                    self.pongs_written[key[1]] += 1
                if what == "rejected":
                    self.dead[key] += 1
        self.lost()
        self.start()
        self.check_file()

    @precondition(lambda self: bool(self.hand))
    @rule()
    def a_stale_delivery_is_refused(self) -> None:
        """After its claims are lost (what a restart does), a delivery handed before cannot be settled."""
        self.turn()
        stale = list(self.hand.values())
        # A restart ends this process's waiting retrieves too: withdrawn first, or the
        # transport rightly hands a released row to one the model has forgotten.
        for waiter in list(self.waiting.values()):
            waiter.cancel()
        self.transport.recover()
        settle(self.clock)
        self.lost()
        try:
            self.transport.ack_now(stale[0])
        except TransportError:
            pass
        else:
            raise AssertionError("a stale delivery's acknowledgement was taken")
        self.check_file()

    # --- what the file must hold ------------------------------------------------------------

    def file_contents(self) -> tuple[Counter, Counter, set]:
        queued: Counter[tuple[str, int]] = Counter()
        claimed = set()
        for body, claimed_by in rows(
            self.path,
            "SELECT body, claimed_by FROM messages",
        ):
            message = codec.decode(body)
            key = (type(message).__name__, message.k)
            queued[key] += 1
            if claimed_by is not None:
                claimed.add(key)
        dead: Counter[tuple[str, int]] = Counter()
        for (body,) in rows(self.path, "SELECT body FROM set_aside WHERE kind = 'dead'"):
            message = codec.decode(body)
            dead[(type(message).__name__, message.k)] += 1
        return queued, dead, claimed

    def check_file(self) -> None:
        queued, dead, claimed = self.file_contents()
        expected = Counter(self.where.keys())
        assert queued == expected, f"the file holds {dict(queued)}, the model {dict(expected)}"
        assert dead == self.dead
        handed = {key for key, place in self.where.items() if place == HANDED}
        assert handed <= claimed, f"handed but not claimed in the file: {handed - claimed}"
        buffered = {
            (type(codec.decode(body)).__name__, codec.decode(body).k)
            for app in self.transport._apps.values() for _, body, _ in app.buffer
        }
        assert claimed == handed | buffered, f"claims {claimed} are not what is handed {handed} or buffered {buffered}"
        for k, written in self.pongs_written.items():
            assert written == 1, f"Pong {k} was written {written} times"
        assert set(self.pongs_written) == self.settled_with
        for name, counted, actual in rows(
            self.path,
            "SELECT name, ready, (SELECT count(*) FROM messages WHERE queue = queues.id AND claimed_by IS NULL) "
            "FROM queues",
        ):
            assert counted == actual, f"queue {name}: ready says {counted}, the file holds {actual}"

    @invariant()
    def nothing_is_claimed_twice(self) -> None:
        seqs = [d.seq for d in self.hand.values()]
        assert len(seqs) == len(set(seqs))


ClaimsMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_claims_against_a_model = ClaimsMachine.TestCase
