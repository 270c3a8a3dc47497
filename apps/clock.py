"""
A periodic producer: an idle handler that emits a Tick every `every` seconds.

Config: every (seconds, default 5).
"""

from datetime import timedelta

from scbus import Message


class Tick(Message, wire_name="clock.Tick"):
    count: int


def make_clock(name, root_config, config):
    state = {"count": 0}

    def tick():
        state["count"] += 1
        return Tick(count=state["count"])

    return {timedelta(seconds=config.get("every", 5)): tick}
