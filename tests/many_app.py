"""
The app the many-process tests run in real twistd processes: an idle handler that says
which process ran it and when, and a handler that takes a little while per message and
says which process handled it.
"""

import os
import time
from datetime import timedelta

from twisted.internet import reactor
from twisted.internet.task import deferLater

from scbus import Message


class Ticked(Message, wire_name="many.Ticked"):
    n: int
    pid: int
    at: float


class Job(Message, wire_name="many.Job"):
    n: int


class Done(Message, wire_name="many.Done"):
    n: int
    pid: int


def make_many(name, root_config, config):
    pid = os.getpid()
    ticks = {"n": 0}
    work = float(config.get("work", 0.0))

    def tick():
        ticks["n"] += 1
        return Ticked(n=ticks["n"], pid=pid, at=time.time())

    def on_job(msg):
        done = Done(n=msg.n, pid=pid)
        if not work:
            return done
        return deferLater(reactor, work, lambda: done)

    return {timedelta(seconds=float(config.get("every", 1.0))): tick, Job: on_job}
