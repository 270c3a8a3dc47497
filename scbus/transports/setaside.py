"""
The record of a message a transport kept aside instead of delivering it.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from zope.interface import implementer

from ..interfaces import ISetAside

if TYPE_CHECKING:
    from ..message import Message

__all__ = ["SetAsideMessage", "SetAsideStore", "UNROUTED", "DEAD", "DEFAULT_LIMIT", "replay_refusal"]

#: Entries an in-memory store keeps by default (``transport.set_aside_limit``).
DEFAULT_LIMIT = 10_000

UNROUTED = "unrouted"
DEAD = "dead"


@implementer(ISetAside)
@dataclasses.dataclass
class SetAsideMessage:
    """An unrouted or dead-lettered body, kept with why it was set aside."""

    body: bytes
    reason: str
    code: str
    type_name: str | None = None
    app_name: str | None = None
    at: float = dataclasses.field(default_factory=time.time)
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])
    #: The trace context it was sent with (ITraceCarrier), for a replay to link to.
    trace_context: dict[str, str] | None = dataclasses.field(default=None, repr=False, compare=False)

    def as_json(self, preview: int | None = None) -> dict[str, Any]:
        """
        The entry as JSON for people and scripts (`scbus set-aside list --json`, the
        status page); the body as text, cut to C{preview} characters if given.
        """
        body = bytes(self.body).decode("utf-8", "replace")
        if preview is not None and len(body) > preview:
            body = body[:preview] + "..."
        return {
            "id": self.id,
            "code": self.code,
            "reason": self.reason,
            "type": self.type_name,
            "app": self.app_name,
            "at": self.at,
            "body": body,
        }

    def __repr__(self) -> str:
        where = f" from {self.app_name}" if self.app_name else ""
        preview = self.body[:60].decode("utf-8", "replace")
        return (
            f"<SetAside {self.id} {self.code}{where} type={self.type_name!r} "
            f"reason={self.reason!r} body={preview!r}{'...' if len(self.body) > 60 else ''}>"
        )


class SetAsideStore:
    """
    An in-memory holding area that cannot grow without bound in a long-running bus:
    past C{limit} entries the oldest is dropped, and counted in C{dropped}.
    """

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self.dropped = 0
        self._entries: deque[SetAsideMessage] = deque(maxlen=limit)

    def append(self, entry: SetAsideMessage) -> bool:
        """Keep C{entry}; True when the oldest entry was dropped to make room."""
        full = len(self._entries) == self.limit
        if full:
            self.dropped += 1
        self._entries.append(entry)
        return full

    def remove(self, entry: SetAsideMessage) -> None:
        self._entries.remove(entry)

    def __iter__(self) -> Iterator[SetAsideMessage]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> SetAsideMessage:
        return self._entries[index]

    def __repr__(self) -> str:
        return f"<SetAsideStore {len(self)}/{self.limit}, {self.dropped} dropped>"


def replay_refusal(
    kind: str,
    entry: ISetAside,
    subscribed: Callable[[type[Message]], bool],
    max_size: int | None,
    max_nesting: int,
) -> str | None:
    """
    Why replaying C{entry} now would only set it aside again, or None: a dead letter whose
    body still does not decode (with this code and these limits), an unrouted message no
    app subscribes to yet (C{subscribed}: whether an app that the caller knows takes the
    class).
    """
    from .. import codec
    from ..errors import DecodeError, UnknownMessageType
    from ..message import lookup

    if kind == DEAD:
        try:
            codec.decode(entry.body, max_size, max_nesting)
        except DecodeError as e:
            return f"{entry.id} still does not decode ({e.reason}: {e}); it stays in {DEAD}"
        return None
    try:
        message_type = lookup(entry.type_name) if entry.type_name else None
    except UnknownMessageType:
        message_type = None
    if message_type is None or not subscribed(message_type):
        return f"no app subscribes to {entry.type_name or 'its type'} yet; {entry.id} stays in {UNROUTED}"
    return None
