"""
Coalesced acknowledgements against a model of the broker's rules: a multiple ack settles
every unsettled tag at or below it, so a coalesced ack must never settle a delivery that
was not asked to be acknowledged, and every ack asked for must be written.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from scbus.transports.amqp import acks
from scbus.transports.amqp.acks import CoalescedAcks


class ModelChannel:
    """The broker's view of one channel: unsettled tags, and how each was settled."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.unsettled: set[int] = set()
        self.outcome: dict[int, str] = {}
        self.frames: list[tuple[int, bool]] = []
        self.acks = CoalescedAcks(self.write_ack, self.clock)

    def deliver(self, tag: int) -> None:
        self.unsettled.add(tag)

    def write_ack(self, tag: int, multiple: bool) -> None:
        self.frames.append((tag, multiple))
        assert tag in self.unsettled, f"ack of unknown tag {tag}: PRECONDITION_FAILED"
        covered = {t for t in self.unsettled if t <= tag} if multiple else {tag}
        for t in covered:
            self.outcome[t] = "ack"
        self.unsettled -= covered

    def nack(self, tag: int) -> None:
        self.unsettled.discard(tag)
        self.outcome[tag] = "nack"
        self.acks.settled(tag)


def test_a_turn_of_acks_in_order_is_one_frame():
    channel = ModelChannel()
    for tag in range(1, 201):
        channel.deliver(tag)
    for tag in range(1, 201):
        channel.acks.ack(tag)
    assert channel.frames == []  # nothing until the turn ends
    channel.clock.advance(0)
    assert channel.frames == [(200, True)]
    assert channel.outcome == {t: "ack" for t in range(1, 201)}
    assert (channel.acks.frames, channel.acks.acks) == (1, 200)


def test_a_delivery_still_being_handled_is_never_covered():
    channel = ModelChannel()
    for tag in range(1, 6):
        channel.deliver(tag)
    for tag in (1, 2, 4, 5):
        channel.acks.ack(tag)
    channel.clock.advance(0)
    assert channel.frames == [(2, True), (4, False), (5, False)]
    assert 3 in channel.unsettled
    channel.acks.ack(3)
    channel.deliver(6)
    channel.acks.ack(6)
    channel.clock.advance(0)
    # 4 and 5 went alone and are known settled: the run passes over them
    assert channel.frames[-1] == (6, True)
    assert channel.unsettled == set()


def test_a_nack_in_the_middle_of_a_run_keeps_its_outcome():
    channel = ModelChannel()
    for tag in range(1, 4):
        channel.deliver(tag)
    channel.acks.ack(1)
    channel.nack(2)
    channel.acks.ack(3)
    channel.clock.advance(0)
    assert channel.frames == [(3, True)]
    assert channel.outcome == {1: "ack", 2: "nack", 3: "ack"}


def test_flush_writes_at_once_and_discard_writes_nothing():
    channel = ModelChannel()
    channel.deliver(1)
    channel.acks.ack(1)
    channel.acks.flush()  # as close() does
    assert channel.frames == [(1, False)]
    assert channel.clock.getDelayedCalls() == []
    channel.deliver(2)
    channel.acks.ack(2)
    channel.acks.discard()  # the channel is gone: the broker gives tag 2 back
    channel.clock.advance(0)
    assert channel.frames == [(1, False)]
    assert channel.acks.pending == 0


def test_what_is_remembered_above_a_gap_is_bounded(monkeypatch):
    monkeypatch.setattr(acks, "SETTLED_LIMIT", 10)
    channel = ModelChannel()
    channel.deliver(1)  # never finishes
    for tag in range(2, 100):
        channel.deliver(tag)
        channel.acks.ack(tag)
        channel.clock.advance(0)
    assert len(channel.acks._settled) <= 10
    assert channel.unsettled == {1}
    channel.acks.ack(1)
    channel.clock.advance(0)
    assert channel.unsettled == set()  # forgotten tags only cost coalescing, never an ack


steps = st.lists(
    st.tuples(st.sampled_from(["deliver", "ack", "nack", "turn"]), st.integers(0, 30)),
    max_size=120,
)


@settings(max_examples=400, deadline=None)
@given(steps)
def test_every_ack_asked_for_is_written_and_nothing_else_is_settled_by_it(script):
    channel = ModelChannel()
    delivered = 0
    asked: set[int] = set()
    nacked: set[int] = set()
    for action, pick in script:
        open_tags = sorted(channel.unsettled - asked)
        if action == "deliver":
            delivered += 1
            channel.deliver(delivered)
        elif action == "turn":
            channel.clock.advance(0)
        elif open_tags:
            tag = open_tags[pick % len(open_tags)]
            if action == "ack":
                asked.add(tag)
                channel.acks.ack(tag)
            else:
                nacked.add(tag)
                channel.nack(tag)
        for tag, how in channel.outcome.items():
            assert how == ("nack" if tag in nacked else "ack")
            assert tag in asked or tag in nacked
    channel.clock.advance(0)
    assert {t for t, how in channel.outcome.items() if how == "ack"} == asked
    assert channel.unsettled == set(range(1, delivered + 1)) - asked - nacked
    assert channel.acks.frames <= len(asked)
