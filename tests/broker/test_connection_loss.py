"""
A lost connection or channel never loses a send, over a real node, both clients: every
send() settles (confirmed, or failed with a reason) and every confirmed one is
delivered; an exchange deleted from outside is declared again.
"""

from __future__ import annotations

import uuid

import pika
import pytest
from twisted.internet import defer, reactor, task, threads
from twisted.python.failure import Failure
from twisted.trial import unittest

from scbus.message import Message

from ..contract.test_amqp_contract import connected, make_amqp_transport
from .amqp_client import eventually


class Parcel(Message, wire_name="connloss.Parcel"):
    n: int
    run: str


def abort(transport):
    transport._session.connection.transport.abortConnection()


async def collect(transport, app, run, wanted, timeout=30.0):
    """The n of every delivery of this run on C{app}'s queue until C{wanted} are all in."""
    seen: set[int] = set()
    deadline = reactor.seconds() + timeout
    while not wanted <= seen:
        if reactor.seconds() > deadline:
            raise AssertionError(f"missing {sorted(wanted - seen)[:20]} of {len(wanted)}")
        try:
            delivery = await transport.retrieve(app).addTimeout(1, reactor)
        except defer.TimeoutError:
            continue
        if delivery.message.run == run:
            seen.add(delivery.message.n)
        delivery.ack_now() if delivery.raw.channel.is_open else None
    return seen


class SendsThroughALoss:
    client = "pika"
    timeout = 120

    async def open(self):
        transport = make_amqp_transport(self, self.rabbit.url, client=self.client)
        await connected(transport)
        app = f"connloss_{uuid.uuid4().hex[:6]}"
        await transport.setup(app, [Parcel])
        return transport, app

    def sent(self, transport, count, run):
        outcomes: dict[int, object] = {}
        for n in range(count):
            transport.send(Parcel(n=n, run=run)).addBoth(lambda r, n=n: outcomes.__setitem__(n, r))
        return outcomes

    async def settled(self, transport, app, outcomes, count, run):
        await eventually(lambda: len(outcomes) == count, timeout=30)
        failed = {n: o for n, o in outcomes.items() if isinstance(o, Failure)}
        for n, failure in failed.items():
            self.assertTrue(failure.getErrorMessage(), f"send {n} failed without a reason")
        confirmed = {n for n, o in outcomes.items() if o is None}
        self.assertEqual(set(outcomes), confirmed | set(failed))
        await collect(transport, app, run, confirmed)
        return confirmed, failed

    async def test_200_sends_then_the_client_aborts_the_connection(self):
        transport, app = await self.open()
        outcomes = self.sent(transport, 200, "abort")
        abort(transport)
        confirmed, failed = await self.settled(transport, app, outcomes, 200, "abort")
        self.assertEqual((len(confirmed), failed), (200, {}))
        self.assertEqual(transport.waiting_to_send, 0)

    async def test_sends_while_the_broker_closes_every_connection(self):
        transport, app = await self.open()
        outcomes: dict[int, object] = {}
        numbers = iter(range(10**6))

        def some():
            for _ in range(20):
                n = next(numbers)
                transport.send(Parcel(n=n, run="close_all")).addBoth(lambda r, n=n: outcomes.__setitem__(n, r))

        stream = task.LoopingCall(some)
        stream.start(0.005)
        session = transport._session
        await threads.deferToThread(self.rabbit.ctl, "close_all_connections", "test: dropped on purpose")
        await eventually(lambda: transport.connected and transport._session is not session)
        await task.deferLater(reactor, 0.2, lambda: None)
        stream.stop()
        sent = next(numbers)
        confirmed, failed = await self.settled(transport, app, outcomes, sent, "close_all")
        self.assertEqual((len(confirmed), failed), (sent, {}))
        self.assertEqual(transport.waiting_to_send, 0)

    async def test_an_exchange_deleted_from_outside_is_declared_and_bound_again(self):
        transport, app = await self.open()
        await transport.send(Parcel(n=-1, run="before"))
        await collect(transport, app, "before", {-1})

        def delete():
            connection = pika.BlockingConnection(pika.URLParameters(self.rabbit.url))
            connection.channel().exchange_delete("scbus.type.connloss.Parcel")
            connection.close()

        await threads.deferToThread(delete)
        outcomes = self.sent(transport, 3, "after")
        confirmed, failed = await self.settled(transport, app, outcomes, 3, "after")
        self.assertEqual((confirmed, failed), ({0, 1, 2}, {}))


@pytest.mark.usefixtures("rabbit_for_class")
class PikaSendsThroughALossTests(SendsThroughALoss, unittest.TestCase):
    client = "pika"


@pytest.mark.usefixtures("rabbit_for_class")
class TxamqpSendsThroughALossTests(SendsThroughALoss, unittest.TestCase):
    client = "txamqp"


class Wrapped(Message, wire_name="connloss.Wrapped"):
    n: int


class BusThroughALoss:
    """A bus app at max_in_flight 50 through one lost connection: every output, no slot kept."""

    client = "pika"
    timeout = 120

    async def through_a_drop(self, drop):
        from collections import Counter

        from scbus.appbus import ApplicationMessageBus
        from scbus.mainbus import MainMessageBus

        transport = make_amqp_transport(self, self.rabbit.url, client=self.client)
        bus = MainMessageBus("connloss", transport, grace_period=2)
        outputs: Counter[int] = Counter()
        tag = uuid.uuid4().hex[:6]
        work, sink = f"connloss_work_{tag}", f"connloss_sink_{tag}"
        def wrap(message):
            # 40 ms each, 50 at once: the stream lasts seconds, and outputs are always
            # waiting for their confirm when the connection goes
            return task.deferLater(reactor, 0.04, Wrapped, n=message.n)

        apps = {work: {Parcel: wrap}, sink: {Wrapped: lambda m: outputs.update([m.n])}}
        for name, subs in apps.items():
            bus.add_app(name, ApplicationMessageBus(name, subs), subs, max_in_flight=50)
            transport.settings.app_prefetch[name] = 50  # as the config sets it
        bus.startService()
        self.addCleanup(bus.stopService)
        await connected(transport)
        await eventually(lambda: all(a.ready for a in bus._apps.values()))
        total = 3000
        await defer.gatherResults([transport.send(Parcel(n=n, run=tag)) for n in range(total)])
        await eventually(lambda: len(outputs) >= 200)
        session = transport._session
        await drop(transport)
        await eventually(lambda: transport._session is not session and transport.connected)
        await eventually(lambda: len(outputs) == total, timeout=60)
        await eventually(lambda: all(not a.in_flight for a in bus._apps.values()), timeout=10)
        self.assertEqual(set(outputs), set(range(total)))
        self.assertEqual({name: len(a.in_flight) for name, a in bus._apps.items()}, {work: 0, sink: 0})
        self.assertEqual(transport.waiting_to_send, 0)

    async def test_one_abort_by_the_client(self):
        async def drop(transport):
            # the moment outputs wait for their confirm (then the old publisher lost them)
            deadline = reactor.seconds() + 10
            while not transport._publisher._unconfirmed and reactor.seconds() < deadline:
                await task.deferLater(reactor, 0.001, lambda: None)
            self.assertTrue(transport._publisher._unconfirmed)
            abort(transport)

        await self.through_a_drop(drop)

    async def test_the_broker_closing_every_connection(self):
        async def drop(transport):
            await threads.deferToThread(self.rabbit.ctl, "close_all_connections", "test: dropped on purpose")

        await self.through_a_drop(drop)


@pytest.mark.usefixtures("rabbit_for_class")
class PikaBusThroughALossTests(BusThroughALoss, unittest.TestCase):
    client = "pika"


@pytest.mark.usefixtures("rabbit_for_class")
class TxamqpBusThroughALossTests(BusThroughALoss, unittest.TestCase):
    client = "txamqp"
