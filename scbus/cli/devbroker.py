"""
``scbus dev-broker``: a private RabbitMQ node to try the AMQP transport with, from
Debian's rabbitmq-server package, until Ctrl-C. It prints the ``[transport]`` table to
put in a config.

    scbus dev-broker [--port 5672] [--dir DIR]

Without ``--dir`` its data lives in a temporary directory removed on exit; with it,
queues and messages survive to the next run on the same port.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from typing import Any

from .common import EXIT_BROKER, EXIT_CONFIG, Refused, run_refusing

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "dev-broker", help="run a private RabbitMQ node for development until Ctrl-C",
        description="A RabbitMQ node of its own (Debian's rabbitmq-server package, no system "
        "service), listening on 127.0.0.1 with the guest user; prints the [transport] table "
        "to put in a config.",
    )
    p.add_argument("--port", type=int, default=5672, help="AMQP port on 127.0.0.1 (default 5672; 0: any free port)")
    p.add_argument("--dir", help="keep the node's data here across runs (default: a temporary directory, removed on exit)")
    p.set_defaults(run=lambda args: run_refusing(run, args))


def run(args: argparse.Namespace) -> int:
    from .rabbitnode import RabbitNode, available, free_port

    reason = available()
    if reason is not None:
        raise Refused(f"cannot run a development broker: {reason}", EXIT_CONFIG)
    if not 0 <= args.port <= 65535:
        raise Refused(f"--port: expected 0 to 65535, got {args.port}", EXIT_CONFIG)
    if args.port and _in_use(args.port):
        raise Refused(
            f"port {args.port} is in use (a broker already runs there? then point the config at it); "
            "--port 0 takes a free one", EXIT_BROKER,
        )
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    port = args.port or free_port()
    node = RabbitNode(name=f"scbus-dev-{port}", port=port, base=args.dir)
    # SIGTERM as Ctrl-C: either way the node is stopped, not left behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        print(f"starting RabbitMQ node {node.name} (data in {node.base}) ...", file=sys.stderr, flush=True)
        try:
            node.start()
        except RuntimeError as e:
            raise Refused(str(e).splitlines()[0], EXIT_BROKER) from None
        print(
            f"RabbitMQ node {node.name} listens on 127.0.0.1:{node.port}. Point a config at it:\n\n"
            f'[transport]\ntype = "amqp"\nurl = "{node.url}"\n\n'
            "Ctrl-C stops it" + ("" if args.dir else " and deletes its data") + ".",
            flush=True,
        )
        assert node.process is not None
        code = node.process.wait()
        raise Refused(f"the node stopped by itself (status {code}): {node.server_output()[-500:]}", EXIT_BROKER)
    except KeyboardInterrupt:
        print("stopping the node ...", file=sys.stderr, flush=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if args.dir:
            node.stop()
            node.kill()
        else:
            node.cleanup()


def _in_use(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False
