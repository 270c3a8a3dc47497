"""
Where a message goes in the file: the queues whose routes name its type or one of its
base types, as the rows to write, or its unrouted entry; and the set-aside rows the
transport writes when it sets a delivery aside. On the reactor thread, no SQL: the
routes are the file's (read at start) and this process's set-ups (at once, so what is
sent after a set-up reaches the queue even before the set-up is committed).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from twisted.logger import Logger

from ... import codec
from ...errors import UnknownMessageType
from ...message import AppErrorOccurredMessage, HeartbeatResponseMessage, Message, lookup
from ..setaside import DEAD, UNROUTED
from .batch import Prepared, SetAsideRow

__all__ = ["Router", "dead_row", "quarantine_row"]

log = Logger()

_encode = codec.encode


class Router:
    """
    @param clock: what set-aside entries are timed by.
    @param max_size: a message that encodes larger fails (EncodeError) at the sender.
    """

    def __init__(self, clock: Any, max_size: int | None) -> None:
        self._clock = clock
        self._max_size = max_size
        #: Wire name -> the queues subscribed to it.
        self._routes: dict[str, set[str]] = {}
        self._targets: dict[type[Message], tuple[str, ...]] = {}

    def load(self, routes: Iterable[tuple[str, str]]) -> None:
        """The file's routes, (type, queue) each, replacing what was known."""
        self._routes = {}
        for type_name, queue in routes:
            self._routes.setdefault(type_name, set()).add(queue)
        self._targets.clear()

    def subscribe(self, queue: str, type_names: Iterable[str], replace: bool) -> None:
        """C{queue} receives these types (from now on; C{replace}: only these)."""
        if replace:
            for queues in self._routes.values():
                queues.discard(queue)
        for name in type_names:
            self._routes.setdefault(name, set()).add(queue)
        self._targets.clear()

    def prepare(self, message: Message) -> Prepared:
        """The message encoded and routed. @raise EncodeError: it cannot be encoded."""
        body = _encode(message, self._max_size)
        cls = type(message)
        targets = self._targets.get(cls)
        if targets is None:
            targets = self._targets_of(cls)
        if len(targets) == 1:
            return ((targets[0], body),), None
        if targets:
            return tuple([(queue, body) for queue in targets]), None
        return self.unrouted(body, message.wire_name, cls)

    def prepare_raw(self, body: bytes, name: str) -> Prepared:
        """Bytes from outside, routed by the type they are published as."""
        try:
            cls = lookup(name)
        except UnknownMessageType:
            # No app can subscribe to a type nobody here knows: as on the broker, unrouted.
            return self.unrouted(body, name, None)
        targets = self._targets.get(cls)
        if targets is None:
            targets = self._targets_of(cls)
        if targets:
            return tuple([(queue, body) for queue in targets]), None
        return self.unrouted(body, name, cls)

    def subscribed(self, cls: type[Message]) -> bool:
        """Some app's queue in the file takes C{cls} (whichever process runs the app)."""
        targets = self._targets.get(cls)
        return bool(targets if targets is not None else self._targets_of(cls))

    def _targets_of(self, cls: type[Message]) -> tuple[str, ...]:
        found: set[str] = set()
        for base in cls.__mro__:
            name = getattr(base, "wire_name", None)
            if isinstance(name, str) and isinstance(base, type) and issubclass(base, Message):
                found |= self._routes.get(name, set())
        targets = self._targets[cls] = tuple(sorted(found))
        return targets

    def unrouted(self, body: bytes, type_name: str, cls: type[Message] | None) -> Prepared:
        if cls is not None and issubclass(cls, HeartbeatResponseMessage):
            return (), None  # an answer nobody asked for here: nothing to keep or replay
        entry_id = _entry_id()
        log.warn(
            "unrouted: no app subscribes to {type}; kept as {id} (replay it from the console once an "
            "app subscribes)",
            type=type_name, id=entry_id,
        )
        row = SetAsideRow(
            UNROUTED, entry_id, body, UNROUTED, f"no app subscribes to {type_name}", type_name, None,
            self._clock.seconds(),
        )
        return (), row


def _entry_id() -> str:
    return uuid.uuid4().hex[:12]


def dead_row(body: bytes, code: str, reason: str, type_name: str | None, app_name: str, at: float) -> SetAsideRow:
    """A dead-store entry for a delivery of C{app_name}, logged once."""
    row = SetAsideRow(DEAD, _entry_id(), body, code, reason, type_name, app_name, at)
    log.error("dead-lettered {id} from {app} [{code}]: {reason}", id=row.id, app=app_name, code=code, reason=reason)
    return row


def quarantine_row(
    body: bytes, app_name: str, deliveries: int, limit: int, at: float, max_size: int | None
) -> tuple[SetAsideRow, AppErrorOccurredMessage]:
    """The dead-store entry of a message delivered past the limit, and the report that says so."""
    text = (
        f"quarantined: delivered {deliveries - 1} times (transport.delivery_limit is {limit}) without being "
        "acknowledged: its handler's process died or hung on it each time; set aside in the dead store, "
        "replay it once the cause is fixed"
    )
    row = SetAsideRow(DEAD, _entry_id(), body, "delivery_limit", text, codec.peek_type(body), app_name, at)
    log.error("{app}: {text} (kept as {id})", app=app_name, text=text, id=row.id)
    report = AppErrorOccurredMessage(
        app_name=app_name,
        message=codec.embeddable(body, max_bytes=max_size // 2 if max_size else None),
        error=text,
        error_type="scbus.Quarantined",
        traceback=[],
        log=[],
    )
    return row, report
