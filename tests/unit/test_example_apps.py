"""The example apps, tested the way an app author would: with scbus.testing."""

import json
import logging

from apps.clock import Tick, make_clock
from apps.error_collector import make_error_collector
from apps.flaky import make_flaky
from apps.heartbeat_monitor import make_heartbeat_monitor
from apps.squares import Milestone, Squared, make_squares
from scbus import AppErrorOccurredMessage, HeartbeatMessage, HeartbeatResponseMessage
from scbus.testing import BusHarness, run_handler


def test_clock_ticks_on_its_interval():
    harness = BusHarness()
    harness.add_app("clock", make_clock, config={"every": 5})
    harness.start()
    harness.advance(4.9)
    assert harness.sent_of(Tick) == []
    harness.advance(10.1)
    assert [t.count for t in harness.sent_of(Tick)] == [1, 2, 3]


def test_squares_answers_with_one_or_two_messages():
    assert run_handler(make_squares, Tick(count=3)) == [Squared(number=3, square=9)]
    out = run_handler(make_squares, Tick(count=4), config={"milestone": 2})
    assert [type(m) for m in out] == [Squared, Milestone]


def test_the_whole_example_chain(tmp_path, caplog):
    caplog.set_level(logging.INFO)  # capture sees what logging's levels let through
    path = tmp_path / "errors.jsonl"
    harness = BusHarness()
    harness.add_app("clock", make_clock, config={"every": 1})
    harness.add_app("squares", make_squares, config={"milestone": 100})
    harness.add_app("flaky", make_flaky, config={"unlucky": 7})
    harness.add_app("errors", make_error_collector, config={"path": str(path)})
    harness.start()
    harness.advance(15)
    assert [s.number for s in harness.sent_of(Squared)] == list(range(1, 16))
    reports = harness.errors
    assert [r.message["data"]["number"] for r in reports] == [7, 14]
    assert reports[0].app_name == "flaky" and reports[0].error == "7 is a multiple of 7"
    assert [r["message"] for r in reports[0].log] == ["checking 7", "7 looks unlucky"]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["data"]["error"] for line in lines] == ["7 is a multiple of 7", "14 is a multiple of 7"]
    statuses = {s.name: s for s in harness.status()}
    assert statuses["flaky"].errors == 2 and statuses["flaky"].handled == 15


def test_heartbeat_monitor_measures_lag():
    harness = BusHarness()
    harness.add_app("monitor", make_heartbeat_monitor, config={"every": 10})
    harness.add_app("squares", make_squares)
    harness.start()
    harness.advance(10)
    beats = harness.sent_of(HeartbeatMessage)
    answers = harness.sent_of(HeartbeatResponseMessage)
    assert len(beats) == 1
    assert sorted(a.app_name for a in answers) == ["monitor", "squares"]
    assert all(a.queued_seconds == 0 for a in answers)
    assert not harness.sent_of(AppErrorOccurredMessage)
