"""
Acknowledgements of one channel, coalesced: the acks asked for during one reactor turn
go out at its end, as one C{basic.ack} with C{multiple} for each unbroken run of tags.

Why: an ack is a frame to build, write and have the broker parse, per message. A
multiple ack settles every unsettled tag at or below it on the channel, so one may be
sent only where every tag it covers was asked to be acknowledged, or was settled
already (a nack, an ack sent alone). The tracker therefore walks up from the highest
tag below which everything is known settled, through tags it knows about, and stops at
the first it does not: a delivery still being handled, waiting on its dead-letter copy,
or never taken. Acks above that gap are sent one by one, as before.

Nothing is sent late that matters: an ack is a promise to the broker, not to anyone
waiting, and a channel that closes with acks unsent gives those deliveries back, as it
would had the frames been written and not yet read. L{CoalescedAcks.flush} runs before
the channel is closed on purpose.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["CoalescedAcks"]

#: Tags settled above a gap are remembered up to this many (a delivery that never
#: finishes would otherwise grow the set without end); past it they are forgotten, and
#: since a run can never pass a forgotten tag, that channel's acks then go one by one
#: until it is closed (a reconnect). Safe, only slower.
SETTLED_LIMIT = 4096


class CoalescedAcks:
    """
    @param send: writes C{basic.ack(tag, multiple)} on the channel.
    @param clock: schedules the flush at the end of the current reactor turn.
    """

    def __init__(self, send: Callable[[int, bool], Any], clock: IReactorTime) -> None:
        self._send = send
        self._clock = clock
        #: Every tag at or below this one is settled.
        self._floor = 0
        #: Tags to acknowledge at the next flush.
        self._asked: set[int] = set()
        #: Tags above the floor settled already (nacked, or acknowledged alone).
        self._settled: set[int] = set()
        self._flush_call: IDelayedCall | None = None
        #: Frames written, and acks they carried (for tests and benchmarks).
        self.frames = 0
        self.acks = 0

    @property
    def pending(self) -> int:
        """Acks asked for and not yet written."""
        return len(self._asked)

    def ack(self, tag: int) -> None:
        self._asked.add(tag)
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self.flush)

    def settled(self, tag: int) -> None:
        """A tag settled some other way (a nack written now): runs may pass over it."""
        if tag > self._floor:
            self._remember(tag)

    def flush(self) -> None:
        """Write what was asked for: one multiple ack for the run above the floor, the rest alone."""
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        asked = self._asked
        if not asked:
            return
        settled = self._settled
        tag = self._floor + 1
        top = 0
        run = 0
        while True:
            if tag in asked:
                asked.discard(tag)
                top = tag
                run += 1
            elif tag in settled:
                settled.discard(tag)
            else:
                break
            tag += 1
        self._floor = tag - 1
        if top:
            self._write(top, run > 1, run)
        for alone in sorted(asked):
            self._write(alone, False, 1)
            self._remember(alone)
        asked.clear()

    def discard(self) -> None:
        """The channel is gone: nothing can be written, the broker gives everything back."""
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        self._asked.clear()
        self._settled.clear()

    def _write(self, tag: int, multiple: bool, count: int) -> None:
        self.frames += 1
        self.acks += count
        self._send(tag, multiple)

    def _remember(self, tag: int) -> None:
        if len(self._settled) >= SETTLED_LIMIT:
            self._settled.clear()
        self._settled.add(tag)
