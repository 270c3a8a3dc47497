"""
scbus.client's publishers against the private RabbitMQ node: what they publish is what
the bus publishes (exchange, properties, body), confirmed; they come back after the
broker dropped their connection; nothing routes a message when no bus has run.
"""

from __future__ import annotations

import threading
import uuid

import pika
import pytest
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from scbus import codec
from scbus.client import Publisher, PublishReturned, TwistedPublisher
from scbus.errors import EncodeError
from scbus.message import Message

VHOST = "client-publishers"


class Parcel(Message, wire_name="client_test.Parcel"):
    weight: float
    label: str


def _make_vhost(rabbit, name: str) -> str:
    rabbit.ctl("add_vhost", name)
    rabbit.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return f"amqp://guest:guest@127.0.0.1:{rabbit.port}/{name}"


@pytest.fixture(scope="module")
def url(rabbit):
    yield _make_vhost(rabbit, VHOST)
    rabbit.ctl("delete_vhost", VHOST)


class Watch:
    """A queue bound to Parcel's exchange, read over a connection of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queue = f"test.parcels.{uuid.uuid4().hex[:8]}"
        connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = connection.channel()
        channel.exchange_declare("scbus.type.client_test.Parcel", "fanout", durable=True, arguments={"alternate-exchange": "scbus.unrouted"})
        channel.queue_declare(self.queue)
        channel.queue_bind(self.queue, "scbus.type.client_test.Parcel")
        connection.close()

    def take(self) -> list[tuple[pika.BasicProperties, bytes]]:
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        channel = connection.channel()
        taken = []
        while True:
            method, props, body = channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                break
            taken.append((props, body))
        channel.queue_delete(self.queue)
        connection.close()
        return taken


def test_publisher_publishes_as_the_bus_does(url):
    watch = Watch(url)
    sent = [Parcel(weight=1.5, label="ü"), Parcel(weight=2, label="b")]
    with Publisher(url) as publisher:
        ids = [publisher.publish(parcel) for parcel in sent]
    assert ids == [p.id for p in sent]
    taken = watch.take()
    assert [codec.decode(body) for _, body in taken] == sent
    props = taken[0][0]
    assert (props.message_id, props.type, props.delivery_mode, props.content_type) == (
        sent[0].id, "client_test.Parcel", 2, "application/json",
    )
    assert props.timestamp == int(sent[0].created_at)


def test_publisher_comes_back_after_the_broker_closed_its_connection(rabbit, url):
    watch = Watch(url)
    with Publisher(url, connection_name="test-reopen") as publisher:
        publisher.publish(Parcel(weight=1, label="before"))
        first = publisher._connection
        rabbit.ctl("close_all_connections", "--vhost", VHOST, "test: dropped on purpose")
        publisher.publish(Parcel(weight=2, label="after"))
        assert publisher._connection is not first  # a new connection carried the second
    assert sorted(codec.decode(body).label for _, body in watch.take()) == ["after", "before"]


def test_nothing_routes_a_message_before_any_bus_declared_the_holding_areas(rabbit):
    bare = _make_vhost(rabbit, "client-bare")
    try:
        with Publisher(bare) as publisher, pytest.raises(PublishReturned):
            publisher.publish(Parcel(weight=1, label="lost?"))
    finally:
        rabbit.ctl("delete_vhost", "client-bare")


def test_a_value_json_cannot_carry_is_refused_before_connecting():
    publisher = Publisher("amqp://guest:guest@127.0.0.1:1/%2F")  # nothing listens there
    with pytest.raises(EncodeError):
        publisher.publish(Parcel(weight=float("nan"), label="x"))


def test_one_publisher_used_from_two_threads_at_once_is_refused(url):
    watch = Watch(url)
    with Publisher(url) as publisher:
        errors = []
        with publisher._in_use():  # this thread is mid-publish
            worker = threading.Thread(target=lambda: _capture(errors, publisher.publish, Parcel(weight=1, label="x")))
            worker.start()
            worker.join(30)
        assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
        assert "one per thread" in str(errors[0])
        publisher.publish(Parcel(weight=1, label="fine afterwards"))
    assert [codec.decode(body).label for _, body in watch.take()] == ["fine afterwards"]


def _capture(errors, call, *args):
    try:
        call(*args)
    except Exception as e:
        errors.append(e)


@pytest.mark.usefixtures("rabbit_for_class")
class TwistedPublisherTests(unittest.TestCase):
    timeout = 60

    def setUp(self):
        self.url = f"amqp://guest:guest@127.0.0.1:{self.rabbit.port}/{VHOST}"
        try:
            self.rabbit.ctl("add_vhost", VHOST)
        except RuntimeError:
            pass  # made by the module fixture already
        self.rabbit.ctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")

    async def test_publishes_made_before_the_connection_wait_for_it(self):
        watch = Watch(self.url)
        publisher = TwistedPublisher(self.url)
        self.addCleanup(publisher.close)
        parcels = [Parcel(weight=n, label=str(n)) for n in range(5)]
        ids = await defer.gatherResults([publisher.publish(p) for p in parcels])
        self.assertEqual(ids, [p.id for p in parcels])
        taken = await task.deferLater(reactor, 0, watch.take)  # confirmed: already queued
        self.assertEqual(sorted(codec.decode(body).label for _, body in taken), ["0", "1", "2", "3", "4"])

    async def test_reconnects_after_the_broker_closed_the_connection(self):
        watch = Watch(self.url)
        publisher = TwistedPublisher(self.url, connection_name="test-twisted-reopen")
        self.addCleanup(publisher.close)
        await publisher.publish(Parcel(weight=1, label="before"))
        lost = publisher._connection.when_lost()
        self.rabbit.ctl("close_all_connections", "--vhost", VHOST, "test: dropped on purpose")
        await lost
        await publisher.publish(Parcel(weight=2, label="after"))
        self.assertEqual(sorted(codec.decode(body).label for _, body in watch.take()), ["after", "before"])

    async def test_an_unroutable_publish_fails(self):
        bare = _make_vhost(self.rabbit, "client-bare-twisted")
        self.addCleanup(self.rabbit.ctl, "delete_vhost", "client-bare-twisted")
        publisher = TwistedPublisher(bare)
        self.addCleanup(publisher.close)
        with self.assertRaises(PublishReturned):
            await publisher.publish(Parcel(weight=1, label="x"))
