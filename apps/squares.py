"""
A transformer: answers each Tick with a Squared, and every `milestone`-th with a
Milestone too (a handler may return one message or a list).

Config: milestone (default 10).
"""

import logging

from scbus import Message

from apps.clock import Tick

logger = logging.getLogger(__name__)


class Squared(Message, wire_name="squares.Squared"):
    number: int
    square: int


class Milestone(Message, wire_name="squares.Milestone"):
    number: int
    note: str


def make_squares(name, root_config, config):
    milestone = config.get("milestone", 10)

    def on_tick(tick):
        out = [Squared(number=tick.count, square=tick.count * tick.count)]
        if tick.count % milestone == 0:
            logger.info("tick %d is a milestone", tick.count)
            out.append(Milestone(number=tick.count, note=f"{tick.count} ticks so far"))
        return out

    return {Tick: on_tick}
