"""
The pause kept on the broker: a resume takes away the mark it found, not one another
process writes at the same moment (that pause is announced everywhere, and must stay
kept for processes that start later).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed

from scbus.testing.amqp import FakeChannel, FakeConnection
from scbus.transports.amqp.client import Properties, RawDelivery
from scbus.transports.amqp.pause import AppPauses


class MarkChannel(FakeChannel):
    """The marker queue as a list of bodies; C{after_get} runs once the first get answered."""

    def __init__(self, log, queue, after_get):
        super().__init__(log)
        self.queue = queue
        self.after_get = after_get
        self.tags = 0

    def get(self, queue):
        if not self.queue:
            return succeed(None)
        self.tags += 1
        raw = RawDelivery(self, self.tags, False, "", queue, Properties(), self.queue.pop(0))
        after, self.after_get = self.after_get, None
        if after is not None:
            after()
        return succeed(raw)

    def publish(self, exchange, routing_key, body, properties, mandatory=False):
        self.queue.append(body)
        return succeed(None)


class MarkConnection(FakeConnection):
    def __init__(self, queue, after_get=None):
        super().__init__()
        self.queue = queue
        self.after_get = after_get

    def channel(self):
        channel = MarkChannel(self.log, self.queue, self.after_get)
        self.after_get = None
        self.channels.append(channel)
        return succeed(channel)


def test_a_resume_leaves_a_pause_written_while_it_took_the_old_mark():
    marks = [b'{"paused_by": "a"}']
    other = AppPauses("classic", lambda app, waiter: None, "b")
    connection = MarkConnection(marks)

    def paused_elsewhere():
        # another process pauses the app everywhere just as this one resumes it
        Deferred.fromCoroutine(other.write_mark(MarkConnection(marks), "shop", True))

    connection.after_get = paused_elsewhere
    resumed = Deferred.fromCoroutine(AppPauses("classic", lambda app, waiter: None, "a").write_mark(connection, "shop", False))
    assert resumed.called
    assert len(marks) == 1, "the pause written meanwhile must stay kept"


def test_a_resume_takes_the_mark_away():
    marks = [b'{"paused_by": "a"}']
    connection = MarkConnection(marks)
    Deferred.fromCoroutine(AppPauses("classic", lambda app, waiter: None, "a").write_mark(connection, "shop", False))
    assert marks == [] and ("ack", 1) in connection.log
