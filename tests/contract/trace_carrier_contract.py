"""
What a transport that provides ITraceCarrier promises (scbus/interfaces.py): the trace
context given to send_traced comes back on every delivery of that message (redeliveries
too), a plain send carries none, and a set-aside message keeps it for its replay, which
goes with the context the replay hook answers. Mixed into each transport's contract tests
beside TransportContract; skipped for a transport without ITraceCarrier.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from scbus.interfaces import ITraceCarrier

from .transport_contract import Nobody, Note

SENT = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "k=v"}
REPLAYED = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def text_of(kept):
    """A kept context as text (a client may hand header values back as bytes)."""
    return {
        k: v.decode() if isinstance(v, (bytes, bytearray)) else v
        for k, v in (kept or {}).items() if k in ("traceparent", "tracestate")
    }


class TraceCarrierContract:
    """Mixin for a trial TestCase that also mixes in TransportContract."""

    async def carrier(self):
        t = await self.start()
        if not ITraceCarrier.providedBy(t):
            raise unittest.SkipTest(f"{type(t).__name__} provides no ITraceCarrier")
        return t

    def send_traced(self, t, message, context):
        d = defer.Deferred()
        t.send_traced(message, context, lambda outcome: d.callback(None) if outcome is None else d.errback(outcome))
        return d

    async def test_the_context_sent_comes_back_with_every_delivery(self):
        t = await self.carrier()
        a = self.app("a")
        await t.setup(a, [Note])
        await self.send_traced(t, Note(text="traced"), dict(SENT))
        await t.send(Note(text="plain"))
        first = await self.next_delivery(a)
        second = await self.next_delivery(a)
        by_text = {first.message.text: first, second.message.text: second}
        self.assertEqual(text_of(by_text["traced"].trace_context), SENT)
        self.assertEqual(text_of(by_text["plain"].trace_context), {})
        await by_text["plain"].ack()
        await by_text["traced"].release()
        again = await self.next_delivery(a)
        self.assertTrue(again.redelivered)
        self.assertEqual(text_of(again.trace_context), SENT)
        await again.ack()
        self.assertEqual(t.messaging_system, t.messaging_system.lower())
        self.assertIn("messaging.destination.name", t.trace_attributes(again.message, again))
        self.assertIn("messaging.destination.name", t.trace_attributes(again.message, None))

    async def test_a_set_aside_message_keeps_its_context_and_a_replay_goes_with_the_hooks(self):
        t = await self.carrier()
        late = self.app("late")
        calls = []

        def hook(kind, entry, kept, attributes):
            calls.append((kind, entry.id, text_of(kept), attributes))
            return dict(REPLAYED), outcomes.append

        outcomes = []
        t.trace_replays(hook)
        lost = Nobody(n=11)
        await self.send_traced(t, lost, dict(SENT))
        (entry,) = await self.eventually_with(lambda: t.set_aside("unrouted"), lost.id.encode())
        await t.setup(late, [Nobody])
        self.assertTrue(await t.replay("unrouted", entry.id))
        delivery = await self.next_delivery(late)
        self.assertEqual(delivery.message.id, lost.id)
        self.assertEqual(text_of(delivery.trace_context), REPLAYED)  # the first send's tracestate gone with it
        await delivery.ack()
        [(kind, entry_id, kept, attributes)] = calls
        self.assertEqual((kind, entry_id, kept), ("unrouted", entry.id, SENT))
        self.assertIn("messaging.destination.name", attributes)
        self.assertEqual(outcomes, [None])
