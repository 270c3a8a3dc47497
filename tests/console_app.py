"""
The app the console's end-to-end tests run: it takes an Order and does nothing else, and
has an idle handler, so every console verb has something to show.
"""

from datetime import timedelta

from scbus import Message


class Order(Message, wire_name="console.Order"):
    item: str


class Orphan(Message, wire_name="console.Orphan"):
    """No app takes it: it lands in the unrouted store."""

    n: int


def make_shop(name, root_config, config):
    return {Order: lambda order: None, timedelta(seconds=0.5): lambda: None}
