"""
What one transaction does: every send, acknowledgement, release, claim and other change
asked for while the previous transaction was being committed. The transport fills a
L{Batch} on the reactor thread; the writer applies it in one ``BEGIN IMMEDIATE``
transaction; the outcome goes back to the reactor. Plain data, no Twisted, no SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from twisted.python.failure import Failure

__all__ = ["Batch", "Prepared", "SetAsideRow", "Send", "Settle", "Call", "Report", "Outcome"]

#: Called once, on the reactor thread, with None (written) or the Failure that stopped it.
Report = Callable[["Failure | None"], object]


class SetAsideRow(NamedTuple):
    """A row of the set_aside table, in the order of its INSERT."""

    kind: str
    id: str
    body: bytes
    code: str
    reason: str
    type: str | None
    app: str | None
    at: float


#: A message ready to be written: its rows (queue name, body) and, when no queue takes
#: it, its unrouted entry. (Plain tuples on the hot path: one per message.)
Prepared = tuple[tuple[tuple[str, bytes], ...], "SetAsideRow | None"]

#: A message sent on its own (not as a handler's result): (prepared, report).
Send = tuple[Prepared, "Report | None"]

#: A claimed row settled: (seq, outputs, aside, report). Deleted (acknowledged), or moved
#: to the dead store (C{aside}), with the messages that go out in the same transaction
#: (a handler's results, a quarantine report); done only if the row is still claimed by
#: this process.
Settle = tuple[int, "list[Prepared] | tuple[Prepared, ...]", "SetAsideRow | None", "Report | None"]


class Call(NamedTuple):
    """
    Any other change (set-up, a pause mark, a replay): C{run(store)} inside the
    transaction. One that C{expires} fails after the file refused writes for a while;
    one that does not (an app's set-up, which the bus waits for to start it) is tried
    until it is written.
    """

    run: Callable[[Any], Any]
    report: Callable[[BaseException | None, Any], object]
    expires: bool = True


class Batch:
    """The contents of one transaction, in the order they are applied."""

    __slots__ = ("calls", "sends", "settles", "releases", "unclaims", "claims", "caller_at", "sent")

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.sends: list[Send] = []
        self.settles: list[Settle] = []
        #: Rows handed to a handler and given back (seq, queue name): ready again.
        self.releases: list[tuple[int, str]] = []
        #: Rows claimed but never handed over (seq, queue name): ready again, and this
        #: claim is not counted as a delivery.
        self.unclaims: list[tuple[int, str]] = []
        #: (queue name, how many, suspects) to claim, after everything above: rows never
        #: claimed before, or (suspects) the one row claimed before and not settled that
        #: was delivered fewest times.
        self.claims: list[tuple[str, int, bool]] = []
        #: When the oldest op someone waits for was added (None: nobody waits).
        self.caller_at: float | None = None
        #: Messages in it that someone sent (for IConnectionState.waiting_to_send).
        self.sent = 0

    def __bool__(self) -> bool:
        return bool(self.calls or self.sends or self.settles or self.releases or self.unclaims or self.claims)

    def absorb(self, other: Batch) -> None:
        """Add C{other}'s contents after this one's (a failed batch is tried again with what came since)."""
        self.calls += other.calls
        self.sends += other.sends
        self.settles += other.settles
        self.releases += other.releases
        self.unclaims += other.unclaims
        self.claims += other.claims
        self.sent += other.sent
        if other.caller_at is not None and (self.caller_at is None or other.caller_at < self.caller_at):
            self.caller_at = other.caller_at

    def __repr__(self) -> str:
        return (
            f"<Batch calls={len(self.calls)} sends={len(self.sends)} settles={len(self.settles)} "
            f"releases={len(self.releases)} unclaims={len(self.unclaims)} claims={self.claims}>"
        )


class Outcome:
    """
    What a batch did. C{error} set: nothing of it was done (rolled back). Otherwise it was
    committed, except the sends, settles and calls named in C{failed} (by position).
    """

    __slots__ = ("error", "claimed", "calls", "failed_sends", "failed_settles", "dropped", "deleted", "filled")

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        #: Per claim of the batch, in order: the rows claimed, (seq, body, deliveries) by seq.
        self.claimed: list[list[tuple[int, bytes, int]]] = []
        #: Per call, in order: (error, value).
        self.calls: list[tuple[BaseException | None, Any]] = []
        self.failed_sends: dict[int, BaseException] = {}
        self.failed_settles: dict[int, BaseException] = {}
        #: Entries each set-aside store dropped in this transaction to stay bounded.
        self.dropped: dict[str, int] = {}
        #: Rows deleted from the queues (the space maintenance can give back).
        self.deleted = 0
        #: Queues that got rows ready (written or given back) before the claims.
        self.filled: set[str] = set()
