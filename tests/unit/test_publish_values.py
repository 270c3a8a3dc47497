"""How ``scbus publish`` reads values: data or envelopes, refused in one line naming the field."""

from __future__ import annotations

import pytest

from apps.clock import Tick
from scbus.cli.common import Refused
from scbus.cli.publish import build_message, parse_value, read_lines


def refusal(call, *args) -> str:
    with pytest.raises(Refused) as info:
        call(*args)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_data_becomes_a_new_message():
    message = build_message({"count": 3}, "clock.Tick", "the data")
    assert message == Tick(count=3)
    assert len(message.id) == 32


def test_an_envelope_keeps_its_id_and_correlation():
    envelope = Tick(count=3, correlation_id="c1").to_dict()
    message = build_message(envelope, None, "line 1")
    assert (message.id, message.created_at, message.correlation_id) == (envelope["id"], envelope["created_at"], "c1")


@pytest.mark.parametrize(
    "value, type_name, words",
    [
        ({"count": "3"}, "clock.Tick", ["field 'count'", "expected int"]),
        ({"count": 1.0}, "clock.Tick", ["field 'count'"]),
        ({}, "clock.Tick", ["count"]),
        ({"count": 1, "cuont": 2}, "clock.Tick", ["unknown field 'cuont'", "count"]),
        ({"count": 1}, None, ["TYPE"]),
        ({"type": "clock.Tick", "data": {"count": 1}}, "squares.Squared", ["'clock.Tick'", "'squares.Squared'"]),
        ([1], "clock.Tick", ["JSON object"]),
        ({"count": 1}, "clock.Tock", ["unknown message type 'clock.Tock'"]),
        ({"type": "clock.Tick", "created_at": -5, "data": {"count": 1}}, None, ["'created_at' is -5", "below 2**64"]),
        ({"type": "clock.Tick", "created_at": 2**64, "data": {"count": 1}}, None, ["'created_at'", "below 2**64"]),
        ({"type": "clock.Tick", "id": "x" * 300, "data": {"count": 1}}, None, ["'id' is 300 bytes", "255"]),
        ({"type": "clock.Tick", "id": "é" * 128, "data": {"count": 1}}, None, ["'id' is 256 bytes"]),
        ({"type": "clock.Tick", "correlation_id": "x" * 256, "data": {"count": 1}}, None, ["'correlation_id'"]),
    ],
)
def test_bad_values_are_refused_naming_what_is_wrong(value, type_name, words):
    text = refusal(build_message, value, type_name, "the data")
    for word in words:
        assert word in text


@pytest.mark.parametrize("text", ["NaN", '{"count": Infinity}', "[" * 100_000, "{nope"])
def test_what_the_decoder_refuses_as_json_is_refused(text):
    assert refusal(parse_value, text, "the data").startswith("the data: ")


def test_every_line_is_checked_before_any_is_used(tmp_path, capsys):
    lines = tmp_path / "ticks.jsonl"
    lines.write_text('{"count": 1}\n\n{"count": "two"}\n{"count": 3}\n{"count": null}\n')
    text = refusal(read_lines, str(lines), "clock.Tick")
    assert "2 bad line(s) of 4" in text
    reported = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1].strip() for line in reported] == ["line 3", "line 5"]
    lines.write_text('{"count": 1}\n{"type": "clock.Tick", "data": {"count": 2}}\n')
    assert [m.count for m in read_lines(str(lines), "clock.Tick")] == [1, 2]
