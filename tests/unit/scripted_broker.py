"""
The broker's side of AMQP 0-9-1, in memory, as bytes: a stand-in for RabbitMQ that the
real clients (pika's and txAMQP's protocols) talk to over a fake TCP transport, so that
their framing runs as it does on a socket, deterministically, with no broker process.

It keeps queues, fanout and direct routing (the default exchange too), prefetch per
channel, consumers, acks and requeues, publisher confirms (one multiple ack for what a
read brought) and mandatory returns; it answers every declaration. What arrives from the
client is answered in C{pump()}, in chunks of at most C{read_size} bytes, as a socket
read would hand them over. Not a broker: no persistence, no policies, no errors beyond
what tests ask for.

    broker = ScriptedBroker(clock)
    transport = AMQPTransport(settings, clock, endpoint=broker.endpoint())
    broker.pump()           # until nothing moves
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pika import frame as pika_frame
from pika import spec
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.internet.error import ConnectionDone

__all__ = ["ScriptedBroker", "Message"]

FRAME_MAX = 131072

#: (properties, body) of a queued message, and whether it was delivered before.
Message = tuple[Any, bytes]


class _Channel:
    def __init__(self, number: int) -> None:
        self.number = number
        self.confirming = False
        self.published = 0
        self.unconfirmed: list[int] = []
        self.prefetch = 0
        self.next_tag = itertools.count(1)
        #: delivery tag -> (queue name, message)
        self.unacked: dict[int, tuple[str, Message]] = {}
        self.consumers: dict[str, str] = {}  # tag -> queue
        self.publishing: list[Any] = []  # method, header while content arrives
        self.body: list[bytes] = []


class _Transport:
    """What the client's protocol writes to: handed to the broker."""

    disconnecting = False

    def __init__(self, broker: ScriptedBroker, connection: _Connection) -> None:
        self._broker = broker
        self._connection = connection

    def write(self, data: bytes) -> None:
        self._connection.inbound.append(bytes(data))

    def writeSequence(self, data: list[bytes]) -> None:
        for piece in data:
            self.write(piece)

    def loseConnection(self) -> None:
        self._broker._drop(self._connection, ConnectionDone())

    def abortConnection(self) -> None:
        self.loseConnection()

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def getPeer(self) -> Any:
        return None

    def getHost(self) -> Any:
        return None

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass


class _Connection:
    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.inbound: list[bytes] = []
        self.buffer = b""
        self.outbound: list[bytes] = []
        self.channels: dict[int, _Channel] = {}
        self.started = False
        self.open = True


class ScriptedBroker:
    """
    @ivar queues: name -> deque of (properties, body) ready to deliver.
    @ivar bindings: exchange -> queue names (fanout: all of them).
    @ivar acked: how many deliveries clients acknowledged (one count per message).
    @ivar ack_frames: how many basic.ack frames clients wrote.
    """

    def __init__(self, clock: Clock | None = None, read_size: int = 65536) -> None:
        self.clock = clock
        self.read_size = read_size
        self.queues: dict[str, deque[Message]] = {}
        self.bindings: dict[str, list[str]] = {}
        self.connections: list[_Connection] = []
        self.acked = 0
        self.ack_frames = 0
        self.nacked = 0
        self.publishes = 0
        self._names = itertools.count(1)
        #: CPU seconds spent in the clients (reading what was sent them, their timed calls).
        self.client_seconds = 0.0
        #: Called with (exchange, routing key, properties, body) for each publish.
        self.on_publish: Callable[[str, str, Any, bytes], None] | None = None

    # --- the client's side --------------------------------------------------------------

    def endpoint(self) -> Any:
        broker = self

        class Endpoint:
            def connect(self, factory: Any) -> Any:
                return succeed(broker.connect(factory.buildProtocol(None)))

        return Endpoint()

    def connect(self, protocol: Any) -> Any:
        connection = _Connection(protocol)
        self.connections.append(connection)
        protocol.makeConnection(_Transport(self, connection))
        return protocol

    def queue(self, name: str) -> deque[Message]:
        return self.queues.setdefault(name, deque())

    def put(self, queue: str, body: bytes, properties: Any = None) -> None:
        self.queue(queue).append((properties or spec.BasicProperties(), body))

    # --- moving bytes -------------------------------------------------------------------

    def pump(self, limit: int = 100000) -> int:
        """Answer what clients wrote and run the clock's due calls, until nothing moves."""
        turns = 0
        while turns < limit:
            moved = False
            for connection in list(self.connections):
                if connection.inbound:
                    moved = True
                    data, connection.inbound = b"".join(connection.inbound), []
                    self._received(connection, data)
                if connection.open:
                    self._deliver(connection)
                if connection.outbound:
                    moved = True
                    data = b"".join(connection.outbound)
                    connection.outbound = []
                    started = time.process_time()
                    for start in range(0, len(data), self.read_size):
                        if connection.open:
                            connection.protocol.dataReceived(data[start:start + self.read_size])
                    self.client_seconds += time.process_time() - started
            if self.clock is not None and self.clock.getDelayedCalls():
                now = self.clock.seconds()
                if any(c.getTime() <= now for c in self.clock.getDelayedCalls()):
                    started = time.process_time()
                    self.clock.advance(0)
                    self.client_seconds += time.process_time() - started
                    moved = True
            if not moved:
                return turns
            turns += 1
        return turns

    def _send(self, connection: _Connection, channel: int, method: Any) -> None:
        connection.outbound.append(pika_frame.Method(channel, method).marshal())

    def _send_content(self, connection: _Connection, channel: int, method: Any, props: Any, body: bytes) -> None:
        out = connection.outbound
        out.append(pika_frame.Method(channel, method).marshal())
        out.append(pika_frame.Header(channel, len(body), props).marshal())
        step = FRAME_MAX - 8
        for start in range(0, len(body), step):
            out.append(pika_frame.Body(channel, body[start:start + step]).marshal())

    def _drop(self, connection: _Connection, reason: Exception) -> None:
        if not connection.open:
            return
        connection.open = False
        for channel in connection.channels.values():
            self._requeue(channel)
        if connection in self.connections:
            self.connections.remove(connection)
        connection.protocol.connectionLost(Failure(reason))

    def _requeue(self, channel: _Channel) -> None:
        for tag in sorted(channel.unacked, reverse=True):
            queue, message = channel.unacked.pop(tag)
            self.queue(queue).appendleft(message)

    # --- the broker's side --------------------------------------------------------------

    def _received(self, connection: _Connection, data: bytes) -> None:
        buffer = connection.buffer + data
        while buffer:
            consumed, value = pika_frame.decode_frame(buffer)
            if not value:
                break
            buffer = buffer[consumed:]
            self._frame(connection, value)
        connection.buffer = buffer
        self._confirm(connection)

    def _frame(self, connection: _Connection, value: Any) -> None:
        if isinstance(value, pika_frame.ProtocolHeader):
            self._send(connection, 0, spec.Connection.Start(
                server_properties={"product": "scripted", "capabilities": {
                    "publisher_confirms": True, "basic.nack": True, "consumer_cancel_notify": True,
                    "exchange_exchange_bindings": True, "connection.blocked": True,
                    "authentication_failure_close": True, "per_consumer_qos": True,
                }},
                mechanisms="PLAIN", locales="en_US",
            ))
            return
        if isinstance(value, pika_frame.Heartbeat):
            return
        number = value.channel_number
        channel = connection.channels.get(number)
        if isinstance(value, pika_frame.Header):
            assert channel is not None
            channel.publishing.append(value)
            if value.body_size == 0:
                self._published(connection, channel)
            return
        if isinstance(value, pika_frame.Body):
            assert channel is not None
            channel.body.append(value.fragment)
            if sum(len(b) for b in channel.body) >= channel.publishing[1].body_size:
                self._published(connection, channel)
            return
        method = value.method
        handler = getattr(self, "_on_" + type(method).__qualname__.replace(".", "_"), None)
        if handler is None:
            raise NotImplementedError(f"the scripted broker has no answer to {method.NAME}")
        handler(connection, number, channel, method)

    def _on_Connection_StartOk(self, connection, number, channel, method) -> None:
        self._send(connection, 0, spec.Connection.Tune(channel_max=2047, frame_max=FRAME_MAX, heartbeat=0))

    def _on_Connection_TuneOk(self, connection, number, channel, method) -> None:
        pass

    def _on_Connection_Open(self, connection, number, channel, method) -> None:
        self._send(connection, 0, spec.Connection.OpenOk())

    def _on_Connection_Close(self, connection, number, channel, method) -> None:
        self._send(connection, 0, spec.Connection.CloseOk())

    def _on_Channel_Open(self, connection, number, channel, method) -> None:
        connection.channels[number] = _Channel(number)
        self._send(connection, number, spec.Channel.OpenOk())

    def _on_Channel_Close(self, connection, number, channel, method) -> None:
        self._requeue(connection.channels.pop(number))
        self._send(connection, number, spec.Channel.CloseOk())

    def _on_Confirm_Select(self, connection, number, channel, method) -> None:
        channel.confirming = True
        if not method.nowait:
            self._send(connection, number, spec.Confirm.SelectOk())

    def _on_Basic_Qos(self, connection, number, channel, method) -> None:
        channel.prefetch = method.prefetch_count
        self._send(connection, number, spec.Basic.QosOk())

    def _on_Exchange_Declare(self, connection, number, channel, method) -> None:
        self.bindings.setdefault(method.exchange, [])
        if not method.nowait:
            self._send(connection, number, spec.Exchange.DeclareOk())

    def _on_Queue_Declare(self, connection, number, channel, method) -> None:
        name = method.queue or f"amq.gen-{next(self._names)}"
        queue = self.queue(name)
        consumers = sum(name in c.consumers.values() for conn in self.connections for c in conn.channels.values())
        if not method.nowait:
            self._send(connection, number, spec.Queue.DeclareOk(queue=name, message_count=len(queue),
                                                                consumer_count=consumers))

    def _on_Queue_Bind(self, connection, number, channel, method) -> None:
        bound = self.bindings.setdefault(method.exchange, [])
        if method.queue not in bound:
            bound.append(method.queue)
        if not method.nowait:
            self._send(connection, number, spec.Queue.BindOk())

    def _on_Queue_Purge(self, connection, number, channel, method) -> None:
        count = len(self.queue(method.queue))
        self.queue(method.queue).clear()
        self._send(connection, number, spec.Queue.PurgeOk(message_count=count))

    def _on_Basic_Consume(self, connection, number, channel, method) -> None:
        tag = method.consumer_tag or f"ctag-{next(self._names)}"
        channel.consumers[tag] = method.queue
        if not method.nowait:
            self._send(connection, number, spec.Basic.ConsumeOk(consumer_tag=tag))

    def _on_Basic_Cancel(self, connection, number, channel, method) -> None:
        channel.consumers.pop(method.consumer_tag, None)
        if not method.nowait:
            self._send(connection, number, spec.Basic.CancelOk(consumer_tag=method.consumer_tag))

    def _on_Basic_Get(self, connection, number, channel, method) -> None:
        queue = self.queue(method.queue)
        if not queue:
            self._send(connection, number, spec.Basic.GetEmpty())
            return
        props, body = queue.popleft()
        tag = next(channel.next_tag)
        channel.unacked[tag] = (method.queue, (props, body))
        self._send_content(connection, number, spec.Basic.GetOk(
            delivery_tag=tag, redelivered=False, exchange="", routing_key=method.queue, message_count=len(queue),
        ), props, body)

    def _on_Basic_Ack(self, connection, number, channel, method) -> None:
        self.ack_frames += 1
        tags = [t for t in channel.unacked if t <= method.delivery_tag] if method.multiple else [method.delivery_tag]
        for tag in tags:
            if channel.unacked.pop(tag, None) is not None:
                self.acked += 1

    def _on_Basic_Nack(self, connection, number, channel, method) -> None:
        tags = [t for t in channel.unacked if t <= method.delivery_tag] if method.multiple else [method.delivery_tag]
        self._settle_back(channel, tags, method.requeue)

    def _on_Basic_Reject(self, connection, number, channel, method) -> None:
        self._settle_back(channel, [method.delivery_tag], method.requeue)

    def _settle_back(self, channel: _Channel, tags: list[int], requeue: bool) -> None:
        for tag in sorted(tags, reverse=True):
            entry = channel.unacked.pop(tag, None)
            if entry is None:
                continue
            self.nacked += 1
            if requeue:
                self.queue(entry[0]).appendleft(entry[1])

    def _on_Basic_Publish(self, connection, number, channel, method) -> None:
        channel.publishing = [method]
        channel.body = []

    def _published(self, connection: _Connection, channel: _Channel) -> None:
        method, header = channel.publishing
        body = b"".join(channel.body)
        channel.publishing, channel.body = [], []
        self.publishes += 1
        if self.on_publish is not None:
            self.on_publish(method.exchange, method.routing_key, header.properties, body)
        if method.exchange == "":
            targets = [method.routing_key] if method.routing_key in self.queues else []
        else:
            targets = list(self.bindings.get(method.exchange, []))
        for target in targets:
            self.queue(target).append((header.properties, body))
        if not targets and method.mandatory:
            self._send_content(connection, channel.number, spec.Basic.Return(
                reply_code=312, reply_text="NO_ROUTE", exchange=method.exchange, routing_key=method.routing_key,
            ), header.properties, body)
        if channel.confirming:
            channel.published += 1
            channel.unconfirmed.append(channel.published)

    def _confirm(self, connection: _Connection) -> None:
        """The publishes a read brought, confirmed with one multiple ack per channel."""
        for channel in connection.channels.values():
            if channel.unconfirmed:
                top = channel.unconfirmed[-1]
                multiple = len(channel.unconfirmed) > 1
                channel.unconfirmed = []
                self._send(connection, channel.number, spec.Basic.Ack(delivery_tag=top, multiple=multiple))

    def _deliver(self, connection: _Connection) -> None:
        for channel in list(connection.channels.values()):
            for tag, queue_name in list(channel.consumers.items()):
                queue = self.queue(queue_name)
                while queue and (not channel.prefetch or len(channel.unacked) < channel.prefetch):
                    props, body = queue.popleft()
                    delivery = next(channel.next_tag)
                    channel.unacked[delivery] = (queue_name, (props, body))
                    self._send_content(connection, channel.number, spec.Basic.Deliver(
                        consumer_tag=tag, delivery_tag=delivery, redelivered=False, exchange="",
                        routing_key=queue_name,
                    ), props, body)
