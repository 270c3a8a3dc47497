"""
Publisher confirms in tag order, and returns matched to their publish: a multiple
confirm may cover a returned publish among routed ones, and only the returned one may
fail (a dead-letter copy taken as stored when it was returned would be lost).
"""

from __future__ import annotations

from scbus.transports.amqp.client import PublishRefused, PublishReturned
from scbus.transports.amqp.confirms import PublishConfirms


def outcomes_of(confirms: PublishConfirms, ids: list) -> list[list]:
    outcomes: list[list] = []
    for message_id in ids:
        seen: list = []
        confirms.expect(message_id).addBoth(seen.append)
        outcomes.append(seen)
    return outcomes


def kinds(outcomes: list[list]) -> list[str]:
    return [
        "pending" if not o else "sent" if o[0] is None
        else "returned" if o[0].check(PublishReturned) else "refused" if o[0].check(PublishRefused) else "?"
        for o in outcomes
    ]


def test_a_return_inside_a_multiple_confirm_fails_its_own_publish_only():
    confirms = PublishConfirms()
    outcomes = outcomes_of(confirms, ["a", "b", "c", "d"])
    confirms.returned("c")
    confirms.answer(3, multiple=True, refused=False)
    assert kinds(outcomes) == ["sent", "sent", "returned", "pending"]
    confirms.answer(4, multiple=False, refused=False)
    assert kinds(outcomes) == ["sent", "sent", "returned", "sent"]


def test_a_publish_without_an_id_is_matched_by_its_missing_id():
    confirms = PublishConfirms()
    outcomes = outcomes_of(confirms, ["a", None, "c"])
    confirms.returned(None)
    confirms.answer(3, multiple=True, refused=False)
    assert kinds(outcomes) == ["sent", "returned", "sent"]


def test_a_nack_refuses_its_whole_run_and_a_multiple_confirm_pops_in_order():
    confirms = PublishConfirms()
    outcomes = outcomes_of(confirms, [str(n) for n in range(1, 1001)])
    confirms.answer(500, multiple=True, refused=True)
    confirms.answer(1000, multiple=True, refused=False)
    assert kinds(outcomes) == ["refused"] * 500 + ["sent"] * 500
    confirms.answer(1000, multiple=True, refused=False)  # a repeat answers nothing twice
    assert all(len(o) == 1 for o in outcomes)


def test_a_closed_channel_fails_what_waits():
    confirms = PublishConfirms()
    outcomes = outcomes_of(confirms, ["a", "b"])
    confirms.answer(1, multiple=False, refused=False)
    confirms.fail_all(ConnectionError("channel closed"))
    assert outcomes[0] == [None] and outcomes[1][0].check(ConnectionError)


def test_two_publishes_without_an_id_are_told_apart_by_what_they_carry():
    # Raw publishes and copies of foreign messages carry no message id: a return names
    # its publish by exchange, routing key and body, the first unconfirmed one alike.
    confirms = PublishConfirms()
    routed, lost = [], []
    confirms.expect(None, "", "scbus.dead", b"first").addBoth(routed.append)
    confirms.expect(None, "", "scbus.dead", b"second").addBoth(lost.append)
    confirms.returned(None, "", "scbus.dead", b"second")
    confirms.answer(2, multiple=True, refused=False)
    assert routed == [None]
    assert lost[0].check(PublishReturned)


def test_returns_come_in_publish_order_so_a_later_twin_is_not_blamed_for_an_earlier_return():
    confirms = PublishConfirms()
    outcomes = [[] for _ in range(3)]
    for seen in outcomes:
        confirms.expect(None).addBoth(seen.append)
    confirms.returned(None)  # the first
    confirms.returned(None)  # the second
    confirms.answer(3, multiple=True, refused=False)
    assert kinds(outcomes) == ["returned", "returned", "sent"]


def test_a_return_answered_by_a_nack_leaves_nothing_behind_for_a_later_publish():
    confirms = PublishConfirms()
    first, later = [], []
    confirms.expect(None).addBoth(first.append)
    confirms.returned(None)
    confirms.answer(1, multiple=False, refused=True)
    assert first[0].check(PublishRefused)
    confirms.expect(None).addBoth(later.append)
    confirms.answer(2, multiple=True, refused=False)
    assert later == [None]
