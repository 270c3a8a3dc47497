"""
SQLiteTransport: the bus in one durable file, no broker needed.

Promises (each tested, see tests/unit/test_sqlite_*.py and the contract suite):
- ``send()`` fires once the message is committed to the file, in every queue its type
  routes to (the routes live in the file: a message sent while its subscriber's process
  is down still reaches its queue), or in the unrouted store;
- a delivery is a row claimed by this process; it stays in the file until it is
  acknowledged, and comes again after a release or a restart;
- a handler's results and its input's acknowledgement are one transaction
  (L{ITransactionalSettle}): exactly once inside the file;
- a row claimed more than ``delivery_limit`` times without being acknowledged (its
  handler's process died on it each time) is set aside as ``delivery_limit``, and an
  ``AppErrorOccurredMessage`` of type ``scbus.Quarantined`` says so;
- the reactor never waits on the disk: one thread owns the connection and commits what a
  reactor turn asked for in one transaction (commits.py).
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ... import codec
from ...errors import DecodeError, EncodeError, MalformedMessage, NotRunning, ReplayRefused, TransportError
from ...interfaces import (
    IBoundedSetAside, IConnectionState, IDelivery, IImmediateAck, IPauseMarks, IPrefetchHold, IReadyDeliveries,
    ISetAside, ITransactionalSettle, ITransport,
)
from ...message import Message
from ...reactors import IBusReactor, running_reactor
from ..inprocess import InProcessControl
from ..setaside import DEAD, UNROUTED, replay_refusal
from .batch import Batch, Call, Outcome, Prepared, SetAsideRow
from .commits import GroupCommit
from .lockfile import ProcessLock
from .queues import AppQueue, SQLiteDelivery
from .routing import Router, dead_row, quarantine_row
from .schema import BUSY_TIMEOUT, check_place, file_problem, open_database
from .settings import SQLiteSettings
from .store import Store
from .writer import InlineWriter, ThreadedWriter, Writer

__all__ = ["SQLiteTransport", "SQLiteDelivery"]

log = Logger()


#: Seconds a stop waits for the last writes (acknowledgements, claims given back).
STOP_PATIENCE = 5.0
#: Messages that may wait in this process for a file that refuses writes; past this,
#: ``send()`` fails at once.
SEND_BUFFER = 10_000
#: Pages given back at stop (about 100 MB), beyond what idle moments gave back.
SHRINK_AT_STOP = 25_600


def _not_held(delivery: SQLiteDelivery) -> TransportError:
    return TransportError(
        f"delivery {delivery.app_name}#{delivery.seq} is no longer held (settled, or given back); "
        "it will be, or was, delivered again"
    )


@implementer(
    ITransport, IReadyDeliveries, IImmediateAck, ITransactionalSettle, IPrefetchHold, IPauseMarks,
    IConnectionState, IBoundedSetAside,
)
class SQLiteTransport(InProcessControl, Service):
    """
    The transport of one process on one database file. Control requests are answered
    in this process (InProcessControl): one process uses a file.

    @param writer: C{"thread"} (a thread owns the connection) or C{"inline"} (tests: jobs
        run in the calling thread, results come back through the reactor's clock).
    @param busy_timeout: seconds a statement waits for another program's lock on the
        file before the batch is tried again later.
    """

    name = "transport"

    def __init__(
        self,
        settings: SQLiteSettings,
        reactor: IBusReactor | None = None,
        *,
        bus_name: str = "scbus",
        writer: str = "thread",
        busy_timeout: float = BUSY_TIMEOUT,
    ) -> None:
        if reactor is None:
            reactor = running_reactor()
        self.settings = settings
        self.path = settings.path
        self._reactor = reactor
        self._bus_name = bus_name
        self._writer_kind = writer
        self._busy_timeout = busy_timeout
        self._process = f"{bus_name}@{socket.gethostname()}:{os.getpid()}"
        self._apps: dict[str, AppQueue] = {}
        self._router = Router(reactor, settings.max_message_size)
        self._held: dict[int, SQLiteDelivery] = {}
        #: The seq of the one suspect this process holds (claimed before and never
        #: settled), 0 while it is being claimed, None when it holds none.
        self._suspect: int | None = None
        self._observer: Callable[[str, bool], None] | None = None
        self._marks: dict[str, bool] = {}
        self._dropped = {UNROUTED: 0, DEAD: 0}
        self._lock = ProcessLock(settings.path)
        self._writer: Writer | None = None
        self._commits: GroupCommit | None = None
        self._stopped = True
        #: What the file held at start: routes, pause marks, set-aside drops.
        self._loaded: tuple[list[tuple[str, str]], dict[str, str], dict[str, int]] = ([], {}, {})
        #: Claims left by earlier runs that this process took back when it started.
        self.taken_back = 0

    def __repr__(self) -> str:
        return f"<SQLiteTransport {self.path} queues={sorted(self._apps)}>"

    # --- lifecycle ------------------------------------------------------------------------

    def startService(self) -> None:
        """Open the file. @raise StartupProblem: it cannot be used (one line saying why)."""
        self._open()
        super().startService()

    def _open(self) -> None:
        check_place(self.path)
        self._lock.acquire()
        try:
            writer = self._writer = (
                InlineWriter(self._opener, self._reactor) if self._writer_kind == "inline"
                else ThreadedWriter(self._opener, self._reactor)
            )
            writer.start()
        except BaseException:
            self._lock.release()
            raise
        routes, marks, dropped = self._loaded
        self._router.load(routes)
        self._marks = {app: True for app in marks}
        self._dropped = dropped
        self._held.clear()
        self._suspect = None
        for app in self._apps.values():
            app.buffer.clear()
            app.claiming = app.set_up = app.subscribed = False
            app.maybe_ready = app.maybe_suspects = True
        self._commits = GroupCommit(
            writer, self._reactor, self.path,
            prepare=self._add_claims, committed=self._committed, refused=self._refused,
        )
        self._stopped = False
        log.info(
            "SQLite transport on {path} ({durability} durability){taken}",
            path=self.path, durability=self.settings.durability,
            taken=f"; took back {self.taken_back} claim(s) of an earlier run" if self.taken_back else "",
        )

    def _opener(self) -> Store:
        """In the writer's thread: open, take the file over, read what the reactor needs."""
        connection = open_database(self.path, self.settings.durability, self._busy_timeout)
        try:
            store = Store(connection, self.settings.set_aside_limit)
            self.taken_back = store.start(self._process)
            self._loaded = (store.routes(), store.pauses(), store.dropped())
        except sqlite3.Error as e:
            connection.close()
            raise file_problem(self.path, e) from None
        except BaseException:
            connection.close()
            raise
        return store

    def stopService(self) -> Deferred[None]:
        """Give back what is claimed and not settled, write what waits, close the file."""
        super().stopService()
        return Deferred.fromCoroutine(self._close())

    async def _close(self) -> None:
        if self._stopped or self._commits is None or self._writer is None:
            return
        self._stopped = True
        commits, writer = self._commits, self._writer
        for app in self._apps.values():
            self._give_back(app)
            waiters, app.waiters = app.waiters, type(app.waiters)()
            for waiter in waiters:
                waiter.errback(NotRunning("the transport stopped"))
        batch = commits.batch()
        for delivery in list(self._held.values()):
            if not delivery.settling:
                delivery.settling = True
                batch.releases.append((delivery.seq, delivery.app_name))
        await commits.drain(STOP_PATIENCE)
        commits.close()
        last: Deferred[Any] = Deferred()

        def finish(store: Store) -> None:
            store.finish()
            store.shrink(SHRINK_AT_STOP)

        commits.run(finish, lambda error, _: last.callback(error))
        error = await last
        if error is not None:
            log.warn("{path}: could not finish cleanly ({error}); the next start takes over", path=self.path, error=str(error))
        await writer.stop()
        self._lock.release()
        self._held.clear()
        log.info("SQLite transport closed {path}", path=self.path)

    # --- apps -------------------------------------------------------------------------------

    def _app(self, app_name: str) -> AppQueue:
        app = self._apps.get(app_name)
        if app is None:
            app = self._apps[app_name] = AppQueue(app_name, self.settings.prefetch(app_name))
        return app

    def setup(self, app_name: str, message_types: Iterable[type[Message]]) -> Deferred[None]:
        if self._stopped:
            return fail(NotRunning("the transport is stopped"))
        app = self._app(app_name)
        types = set(message_types)
        replace = not app.subscribed
        app.subscribed = True
        app.types = types if replace else app.types | types
        names = sorted({t.wire_name for t in app.types})
        # The routes take effect here at once: what is sent from now on reaches the queue.
        self._router.subscribe(app_name, names, replace)
        d: Deferred[None] = Deferred()

        def done(error: BaseException | None, paused: Any) -> None:
            if error is not None:
                d.errback(_failure(error))
                return
            app.set_up = True
            app.maybe_ready = app.maybe_suspects = True
            self._note_mark(app_name, bool(paused), tell_if_paused=True)
            d.callback(None)
            self._want_claims(app)

        self._call(lambda store: store.subscribe(app_name, names, replace), done, expires=False)
        return d

    # --- sending ----------------------------------------------------------------------------

    def prepare(self, message: Message) -> Prepared:
        """The message encoded and routed (L{ITransactionalSettle}). @raise EncodeError."""
        return self._router.prepare(message)

    def send(self, message: Message) -> Deferred[None]:
        if self._stopped:
            return fail(NotRunning("the transport is stopped"))
        try:
            prepared = self.prepare(message)
        except EncodeError:
            return fail()
        return self._send(prepared)

    def publish_raw(self, body: bytes, type_name: str | None = None) -> Deferred[None]:
        if self._stopped:
            return fail(NotRunning("the transport is stopped"))
        body = bytes(body)
        name = type_name or codec.peek_type(body)
        if name is None:
            return fail(MalformedMessage("cannot tell the message type of this body; pass type_name"))
        return self._send(self._router.prepare_raw(body, name))

    def _send(self, prepared: Prepared) -> Deferred[None]:
        commits = self._commits
        assert commits is not None
        if commits.waiting >= SEND_BUFFER:
            return fail(TransportError(f"{commits.problem}; {SEND_BUFFER} messages already wait to be written"))
        d: Deferred[None] = Deferred()
        batch = commits.batch()
        batch.sends.append((prepared, lambda f: d.callback(None) if f is None else d.errback(f)))
        batch.sent += 1
        self._waited_for(batch)
        return d

    def _waited_for(self, batch: Batch) -> None:
        if batch.caller_at is None:
            batch.caller_at = self._reactor.seconds()

    # --- settling ---------------------------------------------------------------------------

    def _holding(self, delivery: IDelivery) -> SQLiteDelivery:
        held: SQLiteDelivery = delivery  # type: ignore[assignment]
        if self._held.get(held.seq) is not held or held.settling or self._stopped:
            raise _not_held(held)
        held.settling = True
        return held

    def ack_now(self, delivery: IDelivery) -> None:
        """Acknowledged in the next transaction (L{IImmediateAck}). @raise TransportError: not held."""
        held = self._holding(delivery)
        self._commits.batch().settles.append((held.seq, (), None, None))  # type: ignore[union-attr]

    def ack_with(self, delivery: IDelivery, prepared: list[object], report: Callable[[Failure | None], object]) -> None:
        held: SQLiteDelivery = delivery  # type: ignore[assignment]
        if self._held.get(held.seq) is not held or held.settling or self._stopped:
            report(Failure(_not_held(held)))
            return
        held.settling = True
        batch = self._commits.batch()  # type: ignore[union-attr]
        batch.settles.append((held.seq, prepared, None, report))  # type: ignore[arg-type]
        if batch.caller_at is None:
            batch.caller_at = self._reactor.seconds()

    def _ack(self, delivery: SQLiteDelivery) -> Deferred[None]:
        return self._settle(delivery, None)

    def _reject(self, delivery: SQLiteDelivery, code: str, reason: str) -> Deferred[None]:
        row = dead_row(delivery.body, code, reason, delivery.message.wire_name, delivery.app_name, self._reactor.seconds())
        return self._settle(delivery, row)

    def _settle(self, delivery: SQLiteDelivery, aside: SetAsideRow | None) -> Deferred[None]:
        try:
            held = self._holding(delivery)
        except TransportError:
            return fail()
        d: Deferred[None] = Deferred()
        batch = self._batch()
        batch.settles.append((held.seq, (), aside, lambda f: d.callback(None) if f is None else d.errback(f)))
        self._waited_for(batch)
        return d

    def _release(self, delivery: SQLiteDelivery) -> Deferred[None]:
        """Back to the queue, as ready; the next delivery of it says redelivered."""
        if self._held.get(delivery.seq) is not delivery or delivery.settling or self._stopped:
            return succeed(None)  # settled already, or given back (by a stop or a restart)
        delivery.settling = True
        given = self._batch().unclaims if delivery.refused else self._batch().releases
        given.append((delivery.seq, delivery.app_name))
        return succeed(None)

    def _batch(self) -> Batch:
        commits = self._commits
        assert commits is not None
        return commits.batch()

    # --- retrieving -------------------------------------------------------------------------

    def take_ready(self, app_name: str) -> SQLiteDelivery | None:
        app = self._apps.get(app_name)
        if app is None or app.waiters:
            return None
        if not app.buffer:
            self._want_claims(app)
            return None
        return self._next_delivery(app)

    def retrieve(self, app_name: str) -> Deferred[IDelivery]:
        if self._stopped:
            return fail(NotRunning("the transport is stopped"))
        app = self._app(app_name)
        if not app.waiters and app.buffer:
            delivery = self._next_delivery(app)
            if delivery is not None:
                return succeed(delivery)
        waiter: Deferred[IDelivery] = Deferred(lambda d: _withdraw(app, d))
        app.waiters.append(waiter)
        self._want_claims(app)
        return waiter

    def _next_delivery(self, app: AppQueue) -> SQLiteDelivery | None:
        settings = self.settings
        buffer = app.buffer
        delivery = None
        while buffer:
            seq, body, deliveries = buffer.popleft()
            try:
                message = codec.decode(body, settings.max_message_size, settings.max_nesting)
            except DecodeError as e:
                self._dead_letter(app, seq, body, e)
                continue
            delivery = SQLiteDelivery(self, app.name, seq, body, message, deliveries > 1, self._reactor.seconds())
            self._held[seq] = delivery
            break
        return delivery

    def _dead_letter(self, app: AppQueue, seq: int, body: bytes, error: DecodeError) -> None:
        type_name = codec.peek_type(body) if len(body) <= (self.settings.max_message_size or len(body)) else None
        row = dead_row(body, error.reason, str(error), type_name, app.name, self._reactor.seconds())
        self._batch().settles.append((seq, (), row, None))

    def _want_claims(self, app: AppQueue) -> None:
        if (
            app.may_claim() and (app.maybe_ready or (app.maybe_suspects and self._suspect is None))
            and self._commits is not None and not self._stopped
        ):
            self._commits.wake()

    def _add_claims(self, batch: Batch) -> None:
        """
        Just before a batch goes (GroupCommit's prepare): each app claims what it has room
        for. What the batch settles or gives back is done before its claims, so it counts
        as room already.

        Rows claimed before and never settled (their process died, or they were given
        back) are suspects: one of them at a time is claimed in this process, before the
        app's other rows, so that a message that kills the process takes down no other
        suspect with it, and an innocent bystander of a death is handled alone once and
        goes on, never reaching the delivery limit (when it is 2 or more).
        """
        if self._stopped:
            return
        apps = [app for app in self._apps.values() if app.may_claim()]
        if not apps:
            return
        suspect_from = None
        if self._suspect is None:
            suspect_from = next((app for app in apps if app.maybe_suspects), None)
        in_hand: Counter[str] | None = None
        for app in apps:
            if not (app.maybe_ready or app is suspect_from):
                continue
            if in_hand is None:
                in_hand = Counter(d.app_name for d in self._held.values() if not d.settling)
            room = app.prefetch - len(app.buffer) - in_hand[app.name]
            if self._commits is not None and self._commits.problem is not None:
                room = min(room, 1 - in_hand[app.name])  # the file refuses: one at a time
            if room <= 0:
                continue
            app.claiming = True
            if app is suspect_from:
                self._suspect = 0  # (its seq once claimed)
                batch.claims.append((app.name, 1, True))
                room -= 1
            if room > 0 and app.maybe_ready:
                batch.claims.append((app.name, room, False))

    def _claimed(self, app: AppQueue, asked: int, suspects: bool, rows: list[tuple[int, bytes, int]]) -> None:
        app.claiming = False
        if suspects:
            if rows:
                self._suspect = rows[0][0]
            else:
                app.maybe_suspects = False
                self._suspect = None
                self._wake_for_suspects()
        elif len(rows) < asked:
            app.maybe_ready = False
        limit = self.settings.delivery_limit
        for row in rows:
            if row[2] > limit:
                self._quarantine(app, row[0], row[1], row[2])
            elif suspects:
                app.buffer.appendleft(row)
            else:
                app.buffer.append(row)
        if app.held_back or self._stopped:
            self._give_back(app)
            return
        while app.waiters and app.buffer:
            delivery = self._next_delivery(app)
            if delivery is None:
                break
            app.waiters.popleft().callback(delivery)
        self._want_claims(app)

    def _quarantine(self, app: AppQueue, seq: int, body: bytes, deliveries: int) -> None:
        """Set aside, with the report that says so, in one transaction."""
        settings = self.settings
        row, report = quarantine_row(
            body, app.name, deliveries, settings.delivery_limit, self._reactor.seconds(), settings.max_message_size
        )
        try:
            outputs: tuple[Prepared, ...] = (self.prepare(report),)
        except EncodeError:
            outputs = ()
        self._batch().settles.append((seq, outputs, row, None))

    def _give_back(self, app: AppQueue) -> int:
        """Claimed rows not handed over go back to the queue, their claim not counted."""
        rows, app.buffer = app.buffer, type(app.buffer)()
        if rows and self._commits is not None:
            self._commits.batch().unclaims.extend((seq, app.name) for seq, _, _ in rows)
        return len(rows)

    # --- after a commit ---------------------------------------------------------------------

    def _committed(self, batch: Batch, outcome: Outcome) -> None:
        apps = self._apps
        pop = self._held.pop
        # What the batch settled or gave back is no longer held; before the claims that
        # came with it are handed out, since they may claim again a row it gave back.
        for settle in batch.settles:
            pop(settle[0], None)
        for seq, _ in batch.releases:
            pop(seq, None)
        for seq, _ in batch.unclaims:
            pop(seq, None)
        # Claims next: the buffers fill before the bus hears its deliveries were settled
        # and asks for the next ones.
        if self._suspect:
            self._suspect_settled(batch)
        for given in (batch.releases, batch.unclaims):
            for _, name in given:  # (rows given back were claimed before: suspects now)
                app = apps.get(name)
                if app is not None:
                    app.maybe_suspects = True
        for (name, asked, suspects), rows in zip(batch.claims, outcome.claimed):
            app = apps.get(name)
            if app is not None:
                self._claimed(app, asked, suspects, rows)
        failed = outcome.failed_settles
        if failed:
            for i, settle in enumerate(batch.settles):
                if settle[3] is not None:
                    settle[3](_failure(failed[i]) if i in failed else None)
        else:
            for settle in batch.settles:
                if settle[3] is not None:
                    settle[3](None)
        failed = outcome.failed_sends
        for i, (_, report) in enumerate(batch.sends):
            if report is not None:
                report(_failure(failed[i]) if failed and i in failed else None)
        for call, (error, value) in zip(batch.calls, outcome.calls):
            call.report(error, value)
        for kind, dropped in outcome.dropped.items():
            self._note_dropped(kind, dropped)
        for name in outcome.filled:
            app = apps.get(name)
            if app is not None:
                app.maybe_ready = True
                self._want_claims(app)

    def _suspect_settled(self, batch: Batch) -> None:
        """The suspect in hand was settled or given back: the next one may be claimed."""
        seq = self._suspect
        if (
            any(settle[0] == seq for settle in batch.settles)
            or any(given == seq for given, _ in batch.releases)
            or any(given == seq for given, _ in batch.unclaims)
        ):
            self._suspect = None
            self._wake_for_suspects()

    def _wake_for_suspects(self) -> None:
        for app in self._apps.values():
            if app.maybe_suspects:
                self._want_claims(app)
                return

    def _refused(self, batch: Batch, error: BaseException) -> None:
        """Nothing of C{batch} was written and it will not be tried again: say so."""
        for name, _, suspects in batch.claims:
            app = self._apps.get(name)
            if app is not None:
                app.claiming = False
            if suspects:
                self._suspect = None
        reason = TransportError(f"{self.path} could not be written: {error}")
        for seq, _, _, report in batch.settles:
            delivery = self._held.get(seq)
            if delivery is not None:
                delivery.settling = False  # still held: a release or a stop gives it back
                delivery.refused = True
            if report is not None:
                report(Failure(reason))
        for seq, _ in (*batch.releases, *batch.unclaims):
            delivery = self._held.get(seq)
            if delivery is not None:
                delivery.settling = False
        for _, report in batch.sends:
            if report is not None:
                report(Failure(reason))
        for call in batch.calls:
            call.report(reason, None)
        if batch.unclaims:
            log.warn(
                "{path}: {n} claim(s) could not be given back ({error}); the next start takes them back",
                path=self.path, n=len(batch.unclaims), error=str(error),
            )

    def _call(
        self, run: Callable[[Store], Any], report: Callable[[BaseException | None, Any], object], expires: bool = True
    ) -> None:
        batch = self._batch()
        batch.calls.append(Call(run, report, expires))
        if expires:
            self._waited_for(batch)

    def _read(self, run: Callable[[Store], Any]) -> Deferred[Any]:
        """A read, run by the writer between transactions (it never waits for a refused one)."""
        if self._stopped or self._commits is None:
            return fail(NotRunning("the transport is stopped"))
        d: Deferred[Any] = Deferred()
        self._commits.run(run, lambda error, value: d.callback(value) if error is None else d.errback(_failure(error)))
        return d

    # --- queues and set-aside stores --------------------------------------------------------

    def queue_depth(self, app_name: str) -> Deferred[int]:
        """Rows of the app's queue in the file that no process claims."""
        return self._read(lambda store: store.ready(app_name))

    def buffered(self, app_name: str) -> int:
        app = self._apps.get(app_name)
        return len(app.buffer) if app is not None else 0

    def set_aside(self, kind: str) -> Deferred[list[ISetAside]]:
        if kind not in (UNROUTED, DEAD):
            raise ValueError(f"kind must be {UNROUTED!r} or {DEAD!r}, not {kind!r}")
        return self._read(lambda store: store.set_aside(kind))

    def replay(self, kind: str, entry_id: str, force: bool = False) -> Deferred[bool]:
        """
        Publish a set-aside entry again and drop it from its store, in one transaction: a
        dead entry goes back to the queue it came from, an unrouted one is routed again.
        One that would only be set aside again is refused (L{ReplayRefused}) unless forced.
        """
        if kind not in (UNROUTED, DEAD):
            raise ValueError(f"kind must be {UNROUTED!r} or {DEAD!r}, not {kind!r}")
        d = self._read(lambda store: [e for e in store.set_aside(kind) if e.id == entry_id])
        return d.addCallback(self._replay_found, kind, entry_id, force)

    def _replay_found(self, found: list[Any], kind: str, entry_id: str, force: bool) -> Deferred[bool]:
        if not found:
            return succeed(False)
        entry = found[0]
        settings = self.settings
        if not force:
            refusal = replay_refusal(
                kind, entry, self._router.subscribed, settings.max_message_size, settings.max_nesting
            )
            if refusal is not None:
                return fail(ReplayRefused(refusal))
        name = entry.type_name or codec.peek_type(entry.body)
        router = self._router
        instead = router.prepare_raw(entry.body, name) if name else router.unrouted(entry.body, "?", None)
        if kind == UNROUTED and instead[1] is not None:
            # forced, and still nobody subscribes: kept again under the same id
            instead = (instead[0], instead[1]._replace(id=entry_id))
        queue = entry.app_name if kind == DEAD else None
        d: Deferred[bool] = Deferred()
        self._call(
            lambda store: store.take_set_aside(entry_id, kind, instead, queue),
            lambda error, value: d.callback(bool(value)) if error is None else d.errback(_failure(error)),
        )
        return d

    @property
    def dropped(self) -> dict[str, int]:
        """Entries each set-aside store dropped to stay bounded (L{IBoundedSetAside}), kept in the file."""
        return dict(self._dropped)

    def _note_dropped(self, kind: str, dropped: int) -> None:
        before = self._dropped.get(kind, 0)
        self._dropped[kind] = before + dropped
        if before // 1000 != (before + dropped) // 1000 or before == 0:
            log.warn(
                "{kind} store full ({limit} entries, transport.set_aside_limit): dropped the oldest; "
                "{dropped} dropped so far",
                kind=kind, limit=self.settings.set_aside_limit, dropped=before + dropped,
            )

    # --- pausing ----------------------------------------------------------------------------

    def hold(self, app_name: str) -> Deferred[int]:
        """Paused: claim no more; what was claimed and not handed over goes back."""
        app = self._app(app_name)
        app.held_back = True
        given = self._give_back(app)
        if given:
            log.info("{app}: paused; gave {n} claimed delivery(ies) back to the queue", app=app_name, n=given)
        return succeed(given)

    def unhold(self, app_name: str) -> Deferred[None]:
        app = self._app(app_name)
        app.held_back = False
        self._want_claims(app)
        return succeed(None)

    def mark_paused(self, app_name: str, paused: bool) -> Deferred[None]:
        """Keep (or drop) an app's pause in the file, where a later start finds it."""
        if self._stopped:
            return fail(NotRunning("the transport is stopped"))
        d: Deferred[None] = Deferred()

        def done(error: BaseException | None, _: Any) -> None:
            if error is not None:
                d.errback(_failure(error))
                return
            self._note_mark(app_name, paused)
            d.callback(None)

        self._call(lambda store: store.mark_paused(app_name, paused, self._process), done)
        return d

    def watch_pause_marks(self, observer: Callable[[str, bool], None]) -> None:
        self._observer = observer

    def _note_mark(self, app_name: str, marked: bool, tell_if_paused: bool = False) -> None:
        """The observer hears a change, and (at an app's set-up) that it is paused."""
        changed = self._marks.get(app_name, False) != marked
        self._marks[app_name] = marked
        if self._observer is not None and (changed or (marked and tell_if_paused)):
            self._observer(app_name, marked)

    # --- state ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """False while the file refuses writes (L{IConnectionState}); C{problem} says why."""
        return not self._stopped and self._commits is not None and self._commits.connected

    @property
    def problem(self) -> str | None:
        if self._stopped:
            return "the transport is stopped"
        return self._commits.problem if self._commits is not None else None

    @property
    def waiting_to_send(self) -> int:
        return self._commits.waiting if self._commits is not None else 0

    def recover(self, app_name: str | None = None) -> Deferred[int]:
        """
        What a restart does to claims: every row this process claims (of one app, or all),
        handed over or not, goes back to the queue; deliveries handed over can no longer
        be settled. Answers, once written, how many went back.
        """
        batch = self._batch()
        count = 0
        for delivery in list(self._held.values()):
            if (app_name is None or delivery.app_name == app_name) and not delivery.settling:
                del self._held[delivery.seq]
                batch.releases.append((delivery.seq, delivery.app_name))
                count += 1
        for app in self._apps.values():
            if app_name is None or app.name == app_name:
                rows, app.buffer = app.buffer, type(app.buffer)()
                batch.releases.extend((seq, app.name) for seq, _, _ in rows)
                count += len(rows)
        d: Deferred[int] = Deferred()
        self._call(lambda store: None, lambda error, _: d.callback(count) if error is None else d.errback(_failure(error)))
        return d

    @property
    def apps(self) -> list[str]:
        return sorted(self._apps)


def _withdraw(app: AppQueue, waiter: Deferred[IDelivery]) -> None:
    try:
        app.waiters.remove(waiter)
    except ValueError:
        pass


def _failure(error: BaseException) -> Failure:
    if isinstance(error, TransportError):
        return Failure(error)
    return Failure(TransportError(str(error) or type(error).__name__))
