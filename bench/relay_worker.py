"""
The raw relay loops bench/twistd_relay.py runs beside the bus, each in a process of its own:

    python -m bench.relay_worker pika   --url URL --prefetch P --queue Q --exchange X
    python -m bench.relay_worker txamqp --url URL --prefetch P --queue Q --exchange X
    python -m bench.relay_worker bus --config perf.toml

pika: pika's TwistedProtocolConnection, as a user who writes the loop by hand would:
basic_consume with a prefetch, each body published as it came (publisher confirms) to
the exchange, the delivery acknowledged once its confirm arrived, one ack per message.
txamqp: the same on txAMQP's own basic_publish and basic_ack, with only what publisher
confirms need at all taken from scbus's client (txAMQP has no handler for them).
bus: the bus's service tree from the config file, as twistd would build it, started in
this plain process (no twistd: no log observers, no application object), to tell
apart what twistd adds from what a process of its own does.
Runs until SIGTERM; the parent times it at the queue bound to the exchange.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import pika
from twisted.internet import defer, reactor
from twisted.internet.protocol import ClientCreator


async def pika_loop(url: str, prefetch: int, queue_name: str, exchange: str) -> None:
    from pika.adapters.twisted_connection import TwistedProtocolConnection

    params = pika.URLParameters(url)
    connection = await ClientCreator(reactor, TwistedProtocolConnection, params).connectTCP(params.host, params.port)
    connection.transport.setTcpNoDelay(True)  # as the bus's clients do
    await relay_pika(connection, prefetch, queue_name, exchange)


async def relay_pika(connection: Any, prefetch: int, queue_name: str, exchange: str) -> None:
    """The raw loop on a connected TwistedProtocolConnection."""
    await connection.ready
    ch_in = await connection.channel()
    await ch_in.basic_qos(prefetch_count=prefetch)
    ch_out = await connection.channel()
    await ch_out.confirm_delivery()
    queue, _tag = await ch_in.basic_consume(queue_name, auto_ack=False)
    props = pika.BasicProperties(content_type="application/json", delivery_mode=2)

    def on_message(item: Any) -> None:
        channel, method, _props, body = item
        ch_out.basic_publish(exchange, "", body, props).addCallback(
            lambda _: channel.basic_ack(method.delivery_tag)
        )
        queue.get().addCallback(on_message)

    for _ in range(prefetch):
        queue.get().addCallback(on_message)


async def txamqp_loop(url: str, prefetch: int, queue_name: str, exchange: str) -> None:
    from scbus.transports.amqp import parse_amqp_settings
    from scbus.transports.amqp.txamqp_client import TxConnection, load_spec

    settings = parse_amqp_settings({"url": url, "client": "txamqp"})
    params = pika.URLParameters(url)
    connection = await ClientCreator(reactor, TxConnection, settings, reactor, load_spec()).connectTCP(
        params.host, params.port
    )
    await relay_txamqp(connection, prefetch, queue_name, exchange)


async def relay_txamqp(connection: Any, prefetch: int, queue_name: str, exchange: str) -> None:
    """The raw loop on a connected scbus TxConnection, publishing and acking through txAMQP's own calls."""
    from txamqp.content import Content

    await connection.ready
    ch_in = await connection.channel()
    await ch_in.qos(prefetch)
    ch_out = await connection.channel()
    await ch_out.confirm()
    consumer = await ch_in.consume(queue_name)
    tx_in, tx_out = ch_in._channel, ch_out._channel  # txAMQP's own channels

    def on_message(raw: Any) -> None:
        content = Content(raw.body, properties={"content-type": "application/json", "delivery-mode": 2})
        tx_out.basic_publish(exchange=exchange, routing_key="", content=content)
        ch_out._confirms.expect().addCallback(lambda _: tx_in.basic_ack(delivery_tag=raw.delivery_tag))
        consumer.get().addCallback(on_message)

    for _ in range(prefetch):
        consumer.get().addCallback(on_message)


async def plain_bus(config_path: str) -> None:
    """The service tree twistd would run for the file, started in this plain process."""
    from scbus.config import load_and_build
    from scbus.tap import make_bus_service

    loaded = load_and_build(config_path)
    service = make_bus_service(loaded.config, loaded.subscriptions)
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)


LOOPS = {"pika": pika_loop, "txamqp": txamqp_loop}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("client", choices=[*sorted(LOOPS), "bus"])
    parser.add_argument("--url")
    parser.add_argument("--prefetch", type=int)
    parser.add_argument("--queue")
    parser.add_argument("--exchange")
    parser.add_argument("--config")
    args = parser.parse_args()
    failed: list[Any] = []

    def go() -> None:
        if args.client == "bus":
            started = plain_bus(args.config)
        else:
            started = LOOPS[args.client](args.url, args.prefetch, args.queue, args.exchange)
        d = defer.Deferred.fromCoroutine(started)

        def broke(f: Any) -> None:
            failed.append(f)
            f.printTraceback()
            reactor.stop()

        d.addErrback(broke)

    reactor.callWhenRunning(go)
    reactor.run()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
