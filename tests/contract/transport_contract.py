"""
The promises every transport keeps, written once and run against each transport
(LocalTransport here; the broker transports reuse this mixin), so the in-memory default
cannot drift from the real thing.

A concrete test case provides C{make_transport()} (a started transport, answering a
Deferred or a transport) and C{lose_consumers(transport, app)}, which does what a dropped
connection does to deliveries that were not acknowledged.
"""

from __future__ import annotations

import json

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from scbus import codec
from scbus.errors import EncodeError, ReplayRefused, TransportError
from scbus.interfaces import IReadyDeliveries
from scbus.message import Message


class Animal(Message, wire_name="contract.Animal"):
    name: str


class Dog(Animal, wire_name="contract.Dog"):
    good: bool = True


class Note(Message, wire_name="contract.Note"):
    text: str


class Nobody(Message, wire_name="contract.Nobody"):
    n: int


class NotYet(Message, wire_name="contract.NotYet"):
    """No app of the suite ever subscribes to it, on any broker the suite runs on."""

    n: int


class Loose(Message, wire_name="contract.Loose"):
    value: object


#: How long any one wait for a delivery may take before the test fails.
WAIT = 10.0


class TransportContract:
    """Mixin for a trial TestCase."""

    def make_transport(self):
        raise NotImplementedError

    def lose_consumers(self, transport, app_name):
        raise NotImplementedError

    async def start(self):
        self.transport = await defer.maybeDeferred(self.make_transport)
        return self.transport

    def app(self, name):
        """An app name unique to this test, so tests sharing a broker cannot meet."""
        cls, test = self.id().rsplit(".", 2)[-2:]
        return f"{name}-{cls}-{test}"

    async def next_delivery(self, app, timeout=WAIT):
        d = self.transport.retrieve(app)
        d.addTimeout(timeout, reactor)
        return await d

    async def nothing_for(self, app, seconds=0.5):
        d = self.transport.retrieve(app)
        got = []
        d.addCallback(got.append)
        d.addErrback(lambda f: f.trap(defer.CancelledError))
        await task.deferLater(reactor, seconds, lambda: None)
        if got:
            await got[0].release()
        d.cancel()
        return not got

    async def test_round_trip(self):
        t = await self.start()
        a, b, animals, dogs, late = map(self.app, ("a", "b", "animals", "dogs", "late"))
        await t.setup(a, [Note])
        sent = Note(text="hello", correlation_id="c")
        await t.send(sent)
        delivery = await self.next_delivery(a)
        self.assertEqual(delivery.message, sent)
        self.assertEqual(
            (delivery.message.id, delivery.message.correlation_id), (sent.id, "c")
        )
        self.assertFalse(delivery.redelivered)
        self.assertEqual(delivery.app_name, a)
        await delivery.ack()
        self.assertTrue(await self.nothing_for(a))

    async def test_fan_out_to_every_subscribed_app(self):
        t = await self.start()
        a, b, animals, dogs, late = map(self.app, ("a", "b", "animals", "dogs", "late"))
        await t.setup(a, [Note])
        await t.setup(b, [Note])
        await t.send(Note(text="both"))
        for app in (a, b):
            delivery = await self.next_delivery(app)
            self.assertEqual(delivery.message.text, "both")
            await delivery.ack()

    async def test_subclasses_reach_subscribers_of_their_bases(self):
        t = await self.start()
        a, b, animals, dogs, late = map(self.app, ("a", "b", "animals", "dogs", "late"))
        await t.setup(animals, [Animal])
        await t.setup(dogs, [Dog])
        await t.send(Dog(name="rex"))
        await t.send(Animal(name="generic"))
        first = await self.next_delivery(animals)
        second = await self.next_delivery(animals)
        self.assertEqual({first.message.name, second.message.name}, {"rex", "generic"})
        self.assertIsInstance(
            [d.message for d in (first, second) if d.message.name == "rex"][0], Dog
        )
        dog = await self.next_delivery(dogs)
        self.assertEqual(dog.message.name, "rex")
        for d in (first, second, dog):
            await d.ack()
        self.assertTrue(await self.nothing_for(dogs))

    async def test_unrouted_is_kept_and_can_be_replayed(self):
        t = await self.start()
        a, b, animals, dogs, late = map(self.app, ("a", "b", "animals", "dogs", "late"))
        await t.setup(a, [Note])
        lost = Nobody(n=7)
        await t.send(lost)
        entries = await t.set_aside("unrouted")
        mine = [e for e in entries if e.type_name == "contract.Nobody" and lost.id.encode() in e.body]
        self.assertEqual(len(mine), 1)
        self.assertEqual(json.loads(mine[0].body)["id"], lost.id)
        self.assertIn("contract.Nobody", mine[0].reason)
        await t.setup(late, [Nobody])
        self.assertTrue(await t.replay("unrouted", mine[0].id))
        delivery = await self.next_delivery(late)
        self.assertEqual((delivery.message.id, delivery.message.n), (lost.id, 7))
        await delivery.ack()
        remaining = await t.set_aside("unrouted")
        self.assertNotIn(mine[0].id, [e.id for e in remaining])

    async def test_a_replay_that_would_only_set_it_aside_again_is_refused(self):
        t = await self.start()
        a, b, animals, dogs, late = map(self.app, ("a", "b", "animals", "dogs", "late"))
        await t.setup(a, [Note])
        lost = NotYet(n=1)
        await t.send(lost)
        (entry,) = await self.eventually_with(lambda: t.set_aside("unrouted"), lost.id.encode())
        with self.assertRaises(ReplayRefused) as refused:
            await t.replay("unrouted", entry.id)
        self.assertEqual(
            str(refused.exception), f"no app subscribes to contract.NotYet yet; {entry.id} stays in unrouted"
        )
        self.assertEqual([e.id for e in await self.eventually_with(lambda: t.set_aside("unrouted"), lost.id.encode())], [entry.id])
        # Forced, it is published again, and kept again under the same id: still one entry.
        self.assertTrue(await t.replay("unrouted", entry.id, force=True))
        again = await self.eventually_with(lambda: t.set_aside("unrouted"), lost.id.encode())
        self.assertEqual([e.id for e in again], [entry.id])

        marker = self.app("still broken").encode()
        await t.publish_raw(b"not json " + marker, "contract.Note")
        await self.pump(a)
        (dead,) = await self.eventually_with(lambda: t.set_aside("dead"), marker)
        with self.assertRaises(ReplayRefused) as refused:
            await t.replay("dead", dead.id)
        self.assertIn(f"{dead.id} still does not decode (malformed: ", str(refused.exception))
        self.assertTrue(str(refused.exception).endswith("; it stays in dead"))
        self.assertEqual(len(await self.eventually_with(lambda: t.set_aside("dead"), marker)), 1)
        # Forced, it leaves the store for the app's queue, and is dead-lettered there again.
        self.assertTrue(await t.replay("dead", dead.id, force=True))
        self.assertEqual(await self.eventually_with(lambda: t.set_aside("dead"), marker, count=0), [])
        await self.pump(a)
        (again_dead,) = await self.eventually_with(lambda: t.set_aside("dead"), marker)
        self.assertEqual((again_dead.app_name, again_dead.code), (a, "malformed"))

    async def pump(self, app):
        """Send a good message through C{app} and take it: what came before it was read."""
        good = Note(text="after")
        await self.transport.send(good)
        delivery = await self.next_delivery(app)
        self.assertEqual(delivery.message.id, good.id)
        await delivery.ack()

    async def eventually_with(self, ask, marker, count=1, timeout=WAIT):
        """The set-aside entries whose body holds C{marker}, once there are C{count} (brokers lag)."""
        deadline = reactor.seconds() + timeout
        while True:
            entries = [e for e in await ask() if marker in bytes(e.body)]
            if len(entries) == count or reactor.seconds() > deadline:
                return entries
            await task.deferLater(reactor, 0.2, lambda: None)

    async def test_bad_bodies_are_dead_lettered_and_the_consumer_keeps_going(self):
        t = await self.start()
        a, b, animals, dogs, late = map(self.app, ("a", "b", "animals", "dogs", "late"))
        await t.setup(a, [Note])
        bad = {
            b"not json at all": "malformed",
            b'{"type": "contract.Note", "id": "x", "created_at": 1, "data": {}}': "missing-field",
            b'{"type": "contract.Note", "id": "x", "created_at": 1, "data": {"text": 5}}': "wrong-type",
            "{\"type\": \"contract.Note\", \"text\": \"\xe9\"}".encode("latin-1"): "malformed",
        }
        for body in bad:
            await t.publish_raw(body, "contract.Note")
        # a body naming a type no one knows, published as a Note
        await t.publish_raw(
            b'{"type": "contract.Unknown", "id": "x", "created_at": 1, "data": {}}',
            "contract.Note",
        )
        good = Note(text="still alive")
        await t.send(good)
        delivery = await self.next_delivery(a)
        self.assertEqual(delivery.message.id, good.id)
        await delivery.ack()
        dead = await self.eventually_list(lambda: t.set_aside("dead"), a, len(bad) + 1)
        codes = sorted(e.code for e in dead)
        self.assertEqual(codes, sorted([*bad.values(), "unknown-type"]))
        for entry in dead:
            self.assertTrue(entry.reason)

    async def test_non_ascii_and_large_bodies_arrive_intact(self):
        t = await self.start()
        a, b, animals, dogs, late = map(self.app, ("a", "b", "animals", "dogs", "late"))
        await t.setup(a, [Note])
        texts = ["José ☃ 漢字 🐍", "x" * (1024 * 1024 - 200)]
        for text in texts:
            await t.send(Note(text=text))
        for text in texts:
            delivery = await self.next_delivery(a)
            self.assertEqual(delivery.message.text, text)
            await delivery.ack()

    async def test_a_message_over_the_size_limit_is_refused_by_send(self):
        # Refused where the sender can still act on it, on every transport: not accepted
        # and dead-lettered later at the receiver.
        t = await self.start()
        a, b, animals, dogs, late = map(self.app, ("a", "b", "animals", "dogs", "late"))
        await t.setup(a, [Note])
        with self.assertRaises(EncodeError) as caught:
            await t.send(Note(text="x" * (1024 * 1024 + 1)))
        self.assertIn("over the limit", str(caught.exception))
        await self.nothing_for(a)
        dead = await t.set_aside("dead")
        self.assertEqual([e for e in dead if e.app_name == a], [])
        await t.send(Note(text="fits"))
        delivery = await self.next_delivery(a)
        self.assertEqual(delivery.message.text, "fits")
        await delivery.ack()

    async def test_a_raw_body_from_outside_is_delivered(self):
        t = await self.start()
        a, b, animals, dogs, late = map(self.app, ("a", "b", "animals", "dogs", "late"))
        await t.setup(a, [Note])
        body = json.dumps(
            {"type": "contract.Note", "id": "ext-1", "created_at": 1.5, "data": {"text": "hi"}}
        ).encode()
        await t.publish_raw(body, "contract.Note")
        delivery = await self.next_delivery(a)
        self.assertEqual((delivery.message.id, delivery.message.text), ("ext-1", "hi"))
        await delivery.ack()

    async def test_a_rejected_delivery_is_set_aside_with_its_reason(self):
        t = await self.start()
        a, b, animals, dogs, late = map(self.app, ("a", "b", "animals", "dogs", "late"))
        await t.setup(a, [Note])
        sent = Note(text="not for this app")
        await t.send(sent)
        delivery = await self.next_delivery(a)
        await delivery.reject("unexpected-type", "a reason for the operator")
        [entry] = await self.eventually_list(lambda: t.set_aside("dead"), a, 1)
        self.assertEqual((entry.code, entry.reason), ("unexpected-type", "a reason for the operator"))
        self.assertEqual(json.loads(entry.body)["id"], sent.id)
        self.assertTrue(await self.nothing_for(a))

    async def test_released_messages_come_again_marked_redelivered(self):
        t = await self.start()
        a, b, animals, dogs, late = map(self.app, ("a", "b", "animals", "dogs", "late"))
        await t.setup(a, [Note])
        await t.send(Note(text="again"))
        first = await self.next_delivery(a)
        await first.release()
        second = await self.next_delivery(a)
        self.assertEqual(second.message.id, first.message.id)
        self.assertTrue(second.redelivered)
        await second.ack()

    async def test_unacknowledged_messages_come_again_after_the_consumer_is_lost(self):
        t = await self.start()
        a, b, animals, dogs, late = map(self.app, ("a", "b", "animals", "dogs", "late"))
        await t.setup(a, [Note])
        await t.send(Note(text="one"))
        await t.send(Note(text="two"))
        held = [await self.next_delivery(a), await self.next_delivery(a)]
        await held[0].ack()
        await defer.maybeDeferred(self.lose_consumers, t, a)
        again = await self.next_delivery(a)
        self.assertEqual(again.message.text, "two")
        self.assertTrue(again.redelivered)
        await again.ack()
        # the stale delivery's ack is refused, not applied to something else
        with self.assertRaises(TransportError):
            await held[1].ack()
        self.assertTrue(await self.nothing_for(a))

    async def test_cancelling_a_retrieve_loses_nothing(self):
        t = await self.start()
        a, b, animals, dogs, late = map(self.app, ("a", "b", "animals", "dogs", "late"))
        await t.setup(a, [Note])
        waiting = t.retrieve(a)
        waiting.addErrback(lambda f: f.trap(defer.CancelledError))
        waiting.cancel()
        await t.send(Note(text="kept"))
        delivery = await self.next_delivery(a)
        self.assertEqual(delivery.message.text, "kept")
        await delivery.ack()

    async def test_deliveries_taken_ready_keep_order_and_never_pass_a_waiting_retrieve(self):
        t = await self.start()
        if not IReadyDeliveries.providedBy(t):
            raise unittest.SkipTest(f"{type(t).__name__} hands deliveries over through retrieve() only")
        a = self.app("a")
        await t.setup(a, [Note])
        waiting = t.retrieve(a)  # asked first: the first message is its
        self.assertIsNone(t.take_ready(a))
        for text in ("one", "two", "three"):
            await t.send(Note(text=text))
        first = await waiting
        taken = []
        deadline = reactor.seconds() + WAIT
        while len(taken) < 2 and reactor.seconds() < deadline:
            delivery = t.take_ready(a)
            if delivery is None:
                await task.deferLater(reactor, 0.01, lambda: None)
            else:
                taken.append(delivery)
        self.assertEqual([d.message.text for d in (first, *taken)], ["one", "two", "three"])
        self.assertIsNone(t.take_ready(a))
        for d in (first, *taken):
            await d.ack()
        self.assertTrue(await self.nothing_for(a))

    async def test_queue_depth_and_buffered_count_waiting_messages(self):
        t = await self.start()
        a, b, animals, dogs, late = map(self.app, ("a", "b", "animals", "dogs", "late"))
        await t.setup(a, [Note])
        for i in range(3):
            await t.send(Note(text=str(i)))
        # Ready in the queue, or already received by this process (a broker's prefetch):
        # either way not handed to the bus yet.
        waiting = await self.eventually(
            lambda: t.queue_depth(a).addCallback(lambda ready: ready + t.buffered(a)), 3
        )
        self.assertEqual(waiting, 3)

    async def test_control_requests_are_answered_out_of_band(self):
        t = await self.start()
        a = self.app("a")
        await t.setup(a, [Note])
        for i in range(20):
            await t.send(Note(text=str(i)))  # a backlog no one is taking
        busy = await self.next_delivery(a)  # and the app's consumer busy with the first
        marker = self.app("process")
        asked = []

        def answer(request):
            asked.append(request)
            return defer.succeed({"process": marker, "echo": request})

        t.serve_control(answer)
        answers = await t.ask({"op": "ping"}, 1.0)
        self.assertIn({"process": marker, "echo": {"op": "ping"}}, answers)
        self.assertEqual(asked, [{"op": "ping"}])
        # Out of band: neither the request nor the answer went through the app's queue,
        # which still holds its 20 messages in order and nothing else.
        await busy.ack()
        texts = [busy.message.text]
        for _ in range(19):
            delivery = await self.next_delivery(a)
            texts.append(delivery.message.text)
            self.assertIsInstance(delivery.message, Note)
            await delivery.ack()
        self.assertEqual(texts, [str(i) for i in range(20)])
        self.assertTrue(await self.nothing_for(a))

    async def eventually_list(self, ask, app, count, timeout=WAIT):
        """The set-aside entries of one app, once C{count} of them have arrived."""
        deadline = reactor.seconds() + timeout
        while True:
            entries = [e for e in await ask() if e.app_name == app]
            if len(entries) >= count or reactor.seconds() > deadline:
                return entries
            await task.deferLater(reactor, 0.2, lambda: None)

    async def eventually(self, ask, expected, timeout=WAIT):
        """Brokers report depth with a short lag: ask until it matches or time runs out."""
        deadline = reactor.seconds() + timeout
        while True:
            value = await ask()
            if value == expected or reactor.seconds() > deadline:
                return value
            await task.deferLater(reactor, 0.2, lambda: None)

    async def test_unencodable_message_fails_send(self):
        t = await self.start()
        a, b, animals, dogs, late = map(self.app, ("a", "b", "animals", "dogs", "late"))
        await t.setup(a, [Loose])
        with self.assertRaises(EncodeError):
            await t.send(Loose(value={1, 2}))
        self.assertTrue(await self.nothing_for(a))

    async def test_codec_is_the_wire_format(self):
        # What a transport puts on the wire is the codec's bytes, and the codec's bytes
        # published from outside arrive as the message they encode.
        t = await self.start()
        a = self.app("a")
        await t.setup(a, [Note])
        lost = Nobody(n=3)
        await t.send(lost)
        kept = [e for e in await t.set_aside("unrouted") if lost.id.encode() in e.body]
        self.assertEqual([e.body for e in kept], [codec.encode(lost)])
        note = Note(text="from outside")
        await t.publish_raw(codec.encode(note), "contract.Note")
        delivery = await self.next_delivery(a)
        self.assertEqual(
            (type(delivery.message), delivery.message.id, delivery.message.created_at, delivery.message.text),
            (Note, note.id, note.created_at, "from outside"),
        )
        await delivery.ack()
