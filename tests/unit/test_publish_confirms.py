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
