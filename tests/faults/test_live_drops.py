"""
The connection goes away under a live bus, again and again, both clients, on a real node:
a stream of jobs through a two-app chain (a fast app, then one with slow and fast
handlers), an idle handler in every process, and POST /messages, while at random moments
the client aborts its connection, the broker closes it (rabbitmqctl), or an exchange is
deleted from outside (the next publish to it closes the publishing channel: 404).

Then, per message id: every send() settled (confirmed, or failed with its reason), every
confirmed job handled by both apps and its output arrived, every POST answered and every
accepted one arrived; in flight is 0 in every app, and the idle handler kept running on
its interval. The bus runs in this process so that each send's Deferred and each app's
slots can be looked at; the broker and its connection are real.
"""

from __future__ import annotations

import io
import json
import random
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pika
import pytest
from twisted.internet import defer, reactor, task, threads
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.http_headers import Headers

from scbus.appbus import ApplicationMessageBus
from scbus.mainbus import MainMessageBus
from scbus.message import Message
from scbus.transports.amqp import AMQPTransport, parse_amqp_settings
from scbus.web import BusWeb, QuietSite

from ..broker.amqp_client import eventually
from .test_faults import RESULTS

TOKEN = "live-drops-token"
IDLE_EVERY = 0.5
#: At least this many jobs go through, and the faults below happen while they do.
JOBS = 2500
FAULTS = ["abort", "abort", "broker", "broker", "404", "404"]
SEED = 19


class Job(Message, wire_name="faults.live.Job"):
    n: int


class Step(Message, wire_name="faults.live.Step"):
    n: int


class Done(Message, wire_name="faults.live.Done"):
    n: int


class Tick(Message, wire_name="faults.live.Tick"):
    n: int


class Chain:
    """The apps, and what each handled, by number."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.jobs: Counter[int] = Counter()
        self.steps: Counter[int] = Counter()
        self.done: Counter[int] = Counter()
        self.ticks: Counter[int] = Counter()
        self.idle_runs: list[float] = []

    def intake(self, job: Job) -> Step:
        self.jobs[job.n] += 1
        return Step(n=job.n)

    def finish(self, step: Step) -> Any:
        self.steps[step.n] += 1
        if step.n % 3 == 0:  # a slow one: its slot is held while the connection may go
            return task.deferLater(reactor, self.rng.uniform(0.01, 0.1), Done, n=step.n)
        return Done(n=step.n)

    def tally(self, done: Done) -> None:
        self.done[done.n] += 1

    def tick(self) -> Tick:
        self.idle_runs.append(reactor.seconds())
        return Tick(n=len(self.idle_runs))

    def apps(self) -> dict[str, tuple[dict[Any, Any], dict[str, Any]]]:
        return {
            "live_intake": ({Job: self.intake}, {"max_in_flight": 20}),
            "live_finish": ({Step: self.finish}, {"max_in_flight": 20}),
            "live_tally": (
                {Done: self.tally, Tick: lambda t: self.ticks.update([t.n]), timedelta(seconds=IDLE_EVERY): self.tick},
                {"max_in_flight": 20, "idle": "every"},
            ),
        }


class LiveDrops:
    client = "pika"
    timeout = 240

    async def test_every_send_settles_and_every_message_arrives_through_drops(self):
        rng = random.Random(f"{SEED}-{self.client}")
        vhost = f"faults-live-{self.client}-{uuid.uuid4().hex[:6]}"
        await threads.deferToThread(self.rabbit.ctl, "add_vhost", vhost)
        self.addCleanup(threads.deferToThread, self.rabbit.ctl, "delete_vhost", vhost)
        await threads.deferToThread(self.rabbit.ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        url = f"amqp://guest:guest@127.0.0.1:{self.rabbit.port}/{vhost}"

        chain = Chain(rng)
        settings = parse_amqp_settings({"url": url, "client": self.client, "heartbeat": 10, "reconnect_max_delay": 1})
        transport = AMQPTransport(settings, bus_name="live-drops")
        bus = MainMessageBus("live-drops", transport, grace_period=2)
        for name, (subs, options) in chain.apps().items():
            settings.app_prefetch[name] = options["max_in_flight"]  # as the config sets it
            bus.add_app(name, ApplicationMessageBus(name, subs), subs, **options)
        transport.startService()
        bus.startService()
        self.addCleanup(transport.stopService)
        self.addCleanup(bus.stopService)
        web = BusWeb(bus, token=TOKEN, token_env=None, max_message_size=None, expected={})
        port = reactor.listenTCP(0, QuietSite(web), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        await eventually(lambda: transport.connected and all(a.ready for a in bus._apps.values()), timeout=30)

        sends: dict[int, Any] = {}
        numbers = iter(range(10**6))

        def send_some() -> None:
            for _ in range(6):
                n = next(numbers)
                transport.send(Job(n=n)).addBoth(lambda outcome, n=n: sends.__setitem__(n, outcome))

        posts: dict[int, Any] = {}
        agent = Agent(reactor)

        async def post(k: int) -> None:
            body = json.dumps({"type": "faults.live.Job", "data": {"n": 10**6 + k}}).encode()
            try:
                response = await agent.request(
                    b"POST", f"http://127.0.0.1:{port.getHost().port}/messages".encode(),
                    Headers({b"authorization": [f"Bearer {TOKEN}".encode()]}), FileBodyProducer(io.BytesIO(body)),
                ).addTimeout(30, reactor)
                answer = json.loads(await _body_of(response))
                posts[k] = (response.code, answer)
            except Exception as e:  # no answer at all: what must never happen
                posts[k] = (None, repr(e))

        posting: list[defer.Deferred[None]] = []

        def post_one() -> None:
            posting.append(defer.Deferred.fromCoroutine(post(len(posting))))

        stream = task.LoopingCall(send_some)
        stream.start(0.02)
        poster = task.LoopingCall(post_one)
        poster.start(0.15)

        faults = list(FAULTS)
        rng.shuffle(faults)
        applied: list[str] = []
        started = reactor.seconds()
        for kind in faults:
            await task.deferLater(reactor, rng.uniform(0.6, 1.4), lambda: None)
            await eventually(lambda: transport.connected, timeout=30)
            await self.apply(kind, transport, url)
            applied.append(kind)
        while len(sends) < JOBS or reactor.seconds() - started < 3:
            await task.deferLater(reactor, 0.2, lambda: None)
        await task.deferLater(reactor, 1.0, lambda: None)  # the stream goes on after the last fault
        stream.stop()
        poster.stop()
        sent = next(numbers)
        last_fault_at = reactor.seconds()

        # every send settles
        await eventually(lambda: len(sends) == sent, timeout=60)
        failed = {n: o for n, o in sends.items() if isinstance(o, Failure)}
        self.assertEqual({n: o for n, o in failed.items() if not o.getErrorMessage()}, {}, "failed without a reason")
        confirmed = {n for n, o in sends.items() if o is None}
        self.assertEqual(confirmed | set(failed), set(range(sent)))
        # every POST is answered; every accepted one arrives
        await eventually(lambda: len(posts) == len(posting), timeout=60)
        unanswered = {k: p for k, p in posts.items() if p[0] not in (202, 503)}
        self.assertEqual(unanswered, {}, "POST /messages must answer 202, or 503 with the reason")
        self.assertEqual({k: p for k, p in posts.items() if p[0] == 503 and not p[1].get("error")}, {})
        accepted = {10**6 + k for k, p in posts.items() if p[0] == 202}
        # every confirmed job handled by both apps, and its output arrived
        wanted = confirmed | accepted
        await eventually(lambda: wanted <= set(chain.done), timeout=60)
        self.assertEqual(wanted - set(chain.jobs), set(), "jobs never handled")
        self.assertEqual(wanted - set(chain.steps), set(), "steps never handled")
        self.assertEqual(wanted - set(chain.done), set(), "outputs never arrived")
        # nothing in flight, nothing waiting
        await eventually(lambda: all(not a.in_flight for a in bus._apps.values()), timeout=30)
        self.assertEqual({name: len(a.in_flight) for name, a in bus._apps.items()}, dict.fromkeys(bus._apps, 0))
        await eventually(lambda: transport.waiting_to_send == 0 and not transport._publisher._unconfirmed, timeout=30)
        # the idle handler ran on its interval all along, and after the last fault
        await task.deferLater(reactor, 3 * IDLE_EVERY, lambda: None)
        runs = [t for t in chain.idle_runs if t >= started]
        gaps = [b - a for a, b in zip(runs, runs[1:])]
        self.assertLess(max(gaps), 5.0, "an idle run waited on a send that never settled")
        after = [t for t in runs if t > last_fault_at]
        self.assertGreaterEqual(len(after), 2, "the idle loop stopped")
        self.assertEqual(set(range(1, len(chain.idle_runs) - 3)) - set(chain.ticks), set(), "idle outputs lost")

        lost = len(wanted - set(chain.done))
        RESULTS.append({
            "case": f"live drops ({self.client})",
            "sent": sent + len(posts),
            "confirmed": len(confirmed) + len(accepted),
            "handled": len(wanted & set(chain.done)),
            "lost": lost,
            "duplicated": sum(chain.done[n] for n in wanted) - len(wanted),
            "faults": "+".join(applied),
            "send_failed": len(failed),
            "posts_503": sum(1 for p in posts.values() if p[0] == 503),
            "idle_max_gap_s": round(max(gaps), 2),
        })

    async def apply(self, kind: str, transport: AMQPTransport, url: str) -> None:
        session = transport._session
        assert session is not None
        if kind == "abort":
            session.connection.transport.abortConnection()
        elif kind == "broker":
            vhost = url.rsplit("/", 1)[1]
            await threads.deferToThread(
                self.rabbit.ctl, "close_all_connections", "-p", vhost, "test: dropped on purpose"
            )
        else:
            publishing = session.publisher
            await threads.deferToThread(_delete_exchange, url, "scbus.type.faults.live.Step")
            # the next publish of a Step closes the publishing channel; it is reopened
            await eventually(lambda: transport._session is not session or session.publisher is not publishing, timeout=30)
            return
        await eventually(lambda: transport._session is not session and transport.connected, timeout=30)


class _Body(Protocol):
    def __init__(self, done: defer.Deferred[bytes]) -> None:
        self.done = done
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(b"".join(self.chunks))


def _body_of(response: Any) -> defer.Deferred[bytes]:
    done: defer.Deferred[bytes] = defer.Deferred()
    response.deliverBody(_Body(done))
    return done


def _delete_exchange(url: str, exchange: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().exchange_delete(exchange)
    finally:
        connection.close()


@pytest.mark.usefixtures("rabbit_for_class")
class PikaLiveDropsTests(LiveDrops, unittest.TestCase):
    client = "pika"


@pytest.mark.usefixtures("rabbit_for_class")
class TxamqpLiveDropsTests(LiveDrops, unittest.TestCase):
    client = "txamqp"
