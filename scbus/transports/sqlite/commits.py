"""
Group commit, on the reactor thread: one transaction at a time, and everything asked for
while it commits goes into the next one.

What is asked for during a reactor turn is written at the end of that turn (or, while a
commit is under way, when it is done), so a burst of acknowledgements and sends costs one
transaction, not one each. A batch the file refuses for a reason that passes (another
program's lock, a full disk) is tried again with backoff, together with whatever came
since; what someone waits for (a send, a handler's results) is failed after PATIENCE
seconds, so nobody waits forever, while acknowledgements and releases are kept until
they are written. Meanwhile L{connected} is False and says why. When the bus has been
idle for a moment after deleting rows, the writer gives the space back (incremental
vacuum, then a WAL checkpoint that truncates it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ...errors import NotRunning
from .batch import Batch, Outcome
from .schema import transient
from .store import Store
from .writer import Writer

__all__ = ["GroupCommit", "PATIENCE", "IDLE_AFTER"]

log = Logger()

#: Seconds a send, a handler's results or a set-up may wait for a file that refuses
#: writes before the caller is told it failed.
PATIENCE = 10.0
#: First and longest wait before a refused batch is tried again.
BACKOFF = (0.05, 2.0)
#: A reminder in the log while commits keep failing, at most this often (seconds).
REMIND_EVERY = 30.0
#: Seconds without a batch after which the writer shrinks the file.
IDLE_AFTER = 1.0
#: Pages (4 KiB) given back per shrinking step, so a step stays short.
SHRINK_PAGES = 2048


class GroupCommit:
    """
    @param prepare: called with each batch just before it goes to the writer (the
        transport adds the claims its apps want now).
    @param committed: C{committed(batch, outcome)} after a commit.
    @param refused: C{refused(batch, error)}: what C{batch} holds was not written and
        will not be tried again (its callers are to be told).
    """

    def __init__(
        self,
        writer: Writer,
        clock: IReactorTime,
        path: str,
        *,
        prepare: Callable[[Batch], None],
        committed: Callable[[Batch, Outcome], None],
        refused: Callable[[Batch, BaseException], None],
    ) -> None:
        self._writer = writer
        self._clock = clock
        self.path = path
        self._prepare = prepare
        self._committed = committed
        self._refused = refused
        self.pending = Batch()
        self._busy = False
        self._flush_call: Any = None
        self._retry_call: Any = None
        self._wanted = False
        self._retry: Batch | None = None
        self._drained: list[Deferred[None]] = []
        self._closed = False
        self._delay = BACKOFF[0]
        self._idle_call: Any = None
        self._to_shrink = 0
        #: Why the last batch was not written, while it is being tried again (None: fine).
        self.problem: str | None = None
        self._failing_since: float | None = None
        self._reminded_at = 0.0
        self.commits = 0

    @property
    def connected(self) -> bool:
        return self.problem is None

    @property
    def waiting(self) -> int:
        """Messages someone sent that wait for the file (only while commits fail)."""
        if self.problem is None:
            return 0
        return self.pending.sent + (self._retry.sent if self._retry is not None else 0)

    @property
    def idle(self) -> bool:
        return not self._busy and not self.pending and self._retry is None

    def batch(self) -> Batch:
        """The batch to add to; it is written at the end of this reactor turn, or later."""
        if self._flush_call is None and self._retry_call is None and not self._busy and not self._closed:
            self._flush_call = self._clock.callLater(0, self._flush)
        return self.pending

    def wake(self) -> None:
        """Write soon even if nothing was added (the transport has claims to make)."""
        self._wanted = True
        self.batch()

    def _flush(self) -> None:
        for call in (self._flush_call, self._retry_call):
            if call is not None and call.active():
                call.cancel()
        self._flush_call = self._retry_call = None
        if self._busy:
            return
        self._wanted = False
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
        batch, self.pending = self.pending, Batch()
        if self._retry is not None:
            retry, self._retry = self._retry, None
            retry.absorb(batch)
            batch = retry
        self._prepare(batch)
        if not batch:
            self._now_idle()
            return
        self._busy = True
        self._writer.run(lambda store: store.apply(batch), lambda error, outcome: self._done(batch, error, outcome))

    def _done(self, batch: Batch, error: BaseException | None, outcome: Outcome | None) -> None:
        self._busy = False
        if error is None and outcome is not None and outcome.error is not None:
            error = outcome.error
        if error is None and outcome is not None:
            self.commits += 1
            if self.problem is None or _writes_messages(batch):
                # (a batch of releases alone may fit where messages do not: it says
                # nothing of whether the file takes messages again)
                self._recovered()
            self._to_shrink += outcome.deleted
            try:
                self._committed(batch, outcome)
            except Exception:
                log.failure("{path}: unexpected error after a commit", path=self.path)
        elif transient(error):  # type: ignore[arg-type]
            self._failed(batch, error)  # type: ignore[arg-type]
            return
        else:
            self._give_up(batch, error)  # type: ignore[arg-type]
        self._next()

    def _next(self) -> None:
        if self.pending or self._wanted:
            self.batch()
        else:
            self._now_idle()

    def _now_idle(self) -> None:
        if self._retry is not None or self._busy:
            return
        self._fire_drained()
        self._shrink_when_idle()

    def _fire_drained(self) -> None:
        drained, self._drained = self._drained, []
        for d in drained:
            d.callback(None)

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Fires once everything asked for is written, or after C{timeout} seconds of a file
        that refuses (at stop): what is still unwritten then is refused.
        """
        self.batch()
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        timer = self._clock.callLater(timeout, self._abandon)

        def stop_timer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return d.addBoth(stop_timer)

    def _abandon(self) -> None:
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        left, self._retry = self._retry, None
        if left is None:
            left = Batch()
        left.absorb(self.pending)
        self.pending = Batch()
        if left:
            self._refused(left, NotRunning(f"stopped before {self.path} could be written ({self.problem})"))
        if not self._busy:
            self._now_idle()

    # --- a file that refuses --------------------------------------------------------------

    def _failed(self, batch: Batch, error: BaseException) -> None:
        """Keep it for the next try; callers who waited too long are told now."""
        if self._closed:
            self._refused(batch, error)
            return
        now = self._clock.seconds()
        first = self.problem is None
        self.problem = f"{self.path}: {error}"
        if first:
            self._failing_since = now
            self._reminded_at = now
            log.warn(
                "{path}: cannot write ({error}); trying again with backoff, nothing is lost meanwhile "
                "(sends and results wait up to {patience:g}s)",
                path=self.path, error=str(error), patience=PATIENCE,
            )
        elif now - self._reminded_at >= REMIND_EVERY:
            self._reminded_at = now
            log.warn(
                "{path}: still cannot write ({error}) after {seconds:.0f}s",
                path=self.path, error=str(error), seconds=now - (self._failing_since or now),
            )
        claims = Batch()
        claims.claims, batch.claims = batch.claims, []  # asked again when the batch goes next
        waited = None
        if batch.caller_at is not None and now - batch.caller_at >= PATIENCE:
            waited, batch = _split_waiting(batch)
        # Kept for the next try before anyone is told: what they do in answer (a release)
        # joins the pending batch and waits for that try.
        self._retry = batch
        self._retry_call = self._clock.callLater(self._delay, self._flush)
        self._delay = min(self._delay * 2, BACKOFF[1])
        if claims.claims:
            self._refused(claims, error)
        if waited is not None:
            self._refused(waited, error)

    def _give_up(self, batch: Batch, error: BaseException) -> None:
        """An error that trying again would not cure: nothing of the batch is kept."""
        log.error(
            "{path}: a transaction failed ({error}); what it held was not written (acknowledged messages "
            "stay claimed and come again after a restart)",
            path=self.path, error=f"{type(error).__name__}: {error}",
        )
        self._refused(batch, error)

    def _recovered(self) -> None:
        if self.problem is not None:
            log.info(
                "{path}: writable again after {seconds:.1f}s",
                path=self.path, seconds=self._clock.seconds() - (self._failing_since or 0.0),
            )
        self.problem = None
        self._failing_since = None
        self._delay = BACKOFF[0]

    # --- giving space back ----------------------------------------------------------------

    def _shrink_when_idle(self) -> None:
        if self._to_shrink and self._idle_call is None and not self._closed:
            self._idle_call = self._clock.callLater(IDLE_AFTER, self._shrink)

    def _shrink(self) -> None:
        self._idle_call = None
        if not self.idle:
            return
        self._busy = True
        self._writer.run(lambda store: store.shrink(SHRINK_PAGES), self._shrunk)

    def _shrunk(self, error: BaseException | None, left: Any) -> None:
        self._busy = False
        if error is not None:
            log.info("{path}: could not give free space back yet ({error})", path=self.path, error=str(error))
        if error is not None or not left:
            self._to_shrink = 0  # (deletions to come start it again)
        if self.pending or self._wanted:
            self.batch()
            return
        self._fire_drained()
        if self._to_shrink and not self._closed:
            self._idle_call = self._clock.callLater(0.05, self._shrink)

    def close(self) -> None:
        """No more commits (the transport stopped): timers cancelled, what is left refused."""
        for call in (self._flush_call, self._retry_call, self._idle_call):
            if call is not None and call.active():
                call.cancel()
        self._flush_call = self._retry_call = self._idle_call = None
        self._closed = True
        self._abandon()
        self._fire_drained()

    def run(self, job: Callable[[Store], Any], done: Callable[[BaseException | None, Any], object]) -> None:
        """A read (or a last job at stop), run by the writer after what it has already."""
        self._writer.run(job, done)


def _writes_messages(batch: Batch) -> bool:
    return bool(batch.sends or batch.calls or any(s[1] or s[2] is not None for s in batch.settles))


def _split_waiting(batch: Batch) -> tuple[Batch, Batch]:
    """(what someone waits for, what is kept until written: acknowledgements, releases, set-ups)."""
    waited, kept = Batch(), Batch()
    waited.sends, waited.sent = batch.sends, batch.sent
    waited.calls = [c for c in batch.calls if c.expires]
    kept.calls = [c for c in batch.calls if not c.expires]
    waited.settles = [s for s in batch.settles if s[3] is not None]
    kept.settles = [s for s in batch.settles if s[3] is None]
    kept.releases, kept.unclaims = batch.releases, batch.unclaims
    return waited, kept
