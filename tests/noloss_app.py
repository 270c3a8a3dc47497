"""
The app the broker tests run in real twistd processes: it answers each Numbered with a
Handled naming the process, so a test can count what was handled, where, and how often.
"""

import os
import time
from datetime import timedelta

from scbus import Message


class Numbered(Message, wire_name="noloss.Numbered"):
    n: int


class Handled(Message, wire_name="noloss.Handled"):
    n: int
    pid: int
    redelivered_hint: bool = False


class Slow(Message, wire_name="noloss.Slow"):
    n: int
    seconds: float


def make_numbers(name, root_config, config):
    pid = os.getpid()
    poison = set(config.get("poison", []))

    def on_numbered(msg):
        if msg.n in poison:
            os._exit(17)  # a message that kills its consumer every time
        return Handled(n=msg.n, pid=pid)

    def on_slow(msg):
        time.sleep(msg.seconds)  # a threaded app: blocks its thread, not the reactor
        return Handled(n=msg.n, pid=pid)

    subscriptions = {Numbered: on_numbered, Slow: on_slow}
    if config.get("idle"):
        subscriptions[timedelta(seconds=config["idle"])] = lambda: None
    if config.get("slow_at_start"):
        # A burst of Slow messages from the bus itself, once (for in-memory tests).
        burst = [Slow(n=n, seconds=config.get("slow_seconds", 3.0)) for n in range(config["slow_at_start"])]

        def emit_once():
            sent, burst[:] = list(burst), []
            return sent

        subscriptions[timedelta(seconds=0.1)] = emit_once
    return subscriptions
