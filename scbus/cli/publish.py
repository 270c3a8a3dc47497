"""
``scbus publish``: put messages into a running bus from a shell, checked first.

    scbus publish --config F TYPE '{"count": 3}'       # or @FILE, or - for standard input
    scbus publish --config F [TYPE] --lines FILE       # one JSON object per line

Every value is checked against the registered class before anything is sent (for
``--lines``, every line before the first is sent); a bad one is refused with one line
naming the field. Over AMQP each message waits for the broker's confirm; on the in-memory
transport it is posted to the bus's HTTP endpoint, which answers once the bus has it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any, Protocol

from .. import codec
from ..config import Config
from ..errors import DecodeError, EncodeError, TransportError
from ..message import Message
from ..transports.amqp.client import PublishRefused, PublishReturned
from .common import EXIT_BROKER, Refused, load_bus, message_type, run_refusing
from .reach import BROKER, FILE, BusEndpoint, reach

__all__ = ["add_parser", "parse_value", "build_message", "read_lines"]

#: Bad lines reported before the rest are only counted.
MAX_REPORTED = 10

ENVELOPE_KEYS = frozenset({"id", "created_at", "correlation_id"})


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "publish", help="check and publish messages into a running bus",
        description="Check one message (or every line of --lines) against its registered class, "
        "then publish it and wait for the broker's confirm. Prints the message id.",
    )
    p.add_argument("--config", required=True, help="the bus config (its apps' builders are imported for the types)")
    p.add_argument("type", nargs="?", help="the wire type, e.g. clock.Tick (with --lines: for lines that are data)")
    p.add_argument("data", nargs="?", help="the message's data as JSON, @FILE, or - for standard input")
    p.add_argument("--lines", metavar="FILE", help="publish one JSON object per line (envelopes or data); - for standard input")
    p.set_defaults(run=lambda args: run_refusing(run, args))


# --- reading and checking -------------------------------------------------------------


def parse_value(text: str, where: str) -> Any:
    """JSON as the bus's decoder reads it: no NaN or Infinity, no unbounded nesting."""
    try:
        return codec.load_json(text.encode("utf-8", "surrogatepass"))
    except DecodeError as e:
        raise Refused(f"{where}: {e}") from None


def build_message(value: Any, type_name: str | None, where: str) -> Message:
    """
    A checked message from an envelope (an object with a C{type}) or from the data of one
    (C{type_name} says which type). A data field the class does not declare is refused
    too: on the command line it is a typo, not a newer producer.
    """
    if not isinstance(value, dict):
        raise Refused(f"{where}: expected a JSON object, got {type(value).__name__}")
    if "type" in value:
        envelope = dict(value)
        name = envelope["type"]
        if not isinstance(name, str):
            raise Refused(f"{where}: the envelope's 'type' must be a string")
        if type_name is not None and name != type_name:
            raise Refused(f"{where}: an envelope of type {name!r}, but publishing {type_name!r}")
    else:
        if type_name is None:
            raise Refused(f"{where}: data without a type: name the TYPE, or give an envelope with 'type'")
        name, envelope = type_name, {"data": value}
    cls = message_type(name)
    data = envelope.get("data", {})
    if isinstance(data, dict):
        declared = {f.name for f in dataclasses.fields(cls)} - ENVELOPE_KEYS
        unknown = sorted(set(data) - declared)
        if unknown:
            raise Refused(
                f"{where}: {name}: unknown field {unknown[0]!r} (its fields: {', '.join(sorted(declared)) or 'none'})"
            )
    envelope["type"] = name
    if "id" not in envelope:
        envelope["id"] = os.urandom(16).hex()
    if "created_at" not in envelope:
        envelope["created_at"] = time.time()
    try:
        return Message.from_dict(envelope)
    except DecodeError as e:
        raise Refused(f"{where}: {e}") from None
    except RecursionError:
        raise Refused(f"{where}: nested too deeply") from None


def _read(source: str) -> str:
    if source == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise Refused("standard input is closed: nothing to read")
        return sys.stdin.read()
    try:
        with open(source, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise Refused(f"cannot read {source}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise Refused(f"{source}: not UTF-8 ({e.reason} at byte {e.start})") from None


def read_lines(source: str, type_name: str | None) -> list[Message]:
    """Every line checked; L{Refused} (reporting each bad line on stderr) if any is bad."""
    messages: list[Message] = []
    bad: list[str] = []
    for number, line in enumerate(_read(source).splitlines(), 1):
        if not line.strip():
            continue
        try:
            messages.append(build_message(parse_value(line, f"line {number}"), type_name, f"line {number}"))
        except Refused as e:
            bad.append(str(e))
    if bad:
        for text in bad[:MAX_REPORTED]:
            print(f"scbus: {text}", file=sys.stderr)
        more = f" ({len(bad) - MAX_REPORTED} more not shown)" if len(bad) > MAX_REPORTED else ""
        raise Refused(f"nothing sent: {len(bad)} bad line(s) of {len(bad) + len(messages)}{more}")
    return messages


# --- sending --------------------------------------------------------------------------


class Sender(Protocol):
    def send(self, message: Message) -> str: ...

    def close(self) -> None: ...


class AMQPSender:
    def __init__(self, settings: Any) -> None:
        from ..client import Publisher

        self._publisher = Publisher(settings=settings, connection_name="scbus publish")

    def send(self, message: Message) -> str:
        return self._publisher.publish(message)

    def close(self) -> None:
        self._publisher.close()


class HTTPSender:
    """Posts each envelope to the bus's C{POST /messages} (the in-memory transport)."""

    def __init__(self, endpoint: BusEndpoint) -> None:
        self._endpoint = endpoint
        self._token = endpoint.token("publish")

    def send(self, message: Message) -> str:
        try:
            code, answer = self._endpoint.call(
                "POST", "/messages", codec.encode(message), self._token, codec.CONTENT_TYPE
            )
        except Refused as e:  # cannot reach it: what a broker that went away is to AMQPSender
            raise TransportError(str(e)) from None
        if code != 202:
            raise TransportError(f"the bus answered {code}: {answer.get('error', answer)}")
        return str(answer.get("id", message.id))

    def close(self) -> None:
        pass


def make_sender(config: Config) -> Sender:
    way = reach(config, "publish")
    if way == BROKER:
        return AMQPSender(config.transport.amqp)
    if way == FILE:
        from .overfile import FileSender, live_bus

        if not (live_bus(config)[0] and config.http.port is not None):
            return FileSender(config)
    return HTTPSender(BusEndpoint(config, timeout=30.0))


# --- the command ----------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    if args.lines is not None and args.data is not None:
        raise Refused("give the data or --lines, not both")
    if args.lines is None and args.type is None:
        raise Refused("name the message TYPE (or use --lines)")
    config, _apps = load_bus(args.config)
    if args.lines is not None:
        messages = read_lines(args.lines, args.type)
    else:
        source = args.data if args.data is not None else "-"
        text = _read(source[1:]) if source.startswith("@") else _read("-") if source == "-" else source
        messages = [build_message(parse_value(text, "the data"), args.type, "the data")]
    sender = make_sender(config)
    progress = Progress(len(messages)) if args.lines is not None and sys.stderr.isatty() else None
    sent = 0
    try:
        for message in messages:
            message_id = sender.send(message)
            sent += 1
            if args.lines is None:
                print(message_id)
            elif progress is not None:
                progress.update(sent)
    except (TransportError, PublishReturned, PublishRefused, EncodeError) as e:
        if progress is not None:
            progress.done()
        stopped = f"published {sent} of {len(messages)}; " if args.lines is not None else ""
        raise Refused(f"{stopped}{e}", EXIT_BROKER) from None
    finally:
        sender.close()
    if progress is not None:
        progress.done()
    if args.lines is not None:
        print(f"published {sent} message(s)")
    return 0


class Progress:
    """A bar on stderr, redrawn at most ten times a second (only on a terminal)."""

    WIDTH = 30

    def __init__(self, total: int) -> None:
        self.total = total
        self._drawn = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if done < self.total and now - self._drawn < 0.1:
            return
        self._drawn = now
        filled = self.WIDTH * done // max(self.total, 1)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{self.total}")
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()
