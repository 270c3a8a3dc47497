"""
A message posted over HTTP: the wire envelope of docs/wire.md, or the short form
C{{"type": ..., "data": {...}}} with the envelope fields filled in. Checked exactly as a
transport decodes a body, so what is accepted here is what an app would receive.
"""

from __future__ import annotations

import json
import time
import uuid

from .. import codec
from ..errors import MalformedMessage
from ..message import Message

__all__ = ["message_from_post"]

_SHORT_FORM = frozenset({"type", "data"})


def message_from_post(body: bytes, max_size: int | None) -> Message:
    """
    @raise DecodeError: with one sentence naming the field (C{.reason} is its short code).
    """
    posted = codec.load_json(body, max_size)
    if isinstance(posted, dict) and set(posted) <= _SHORT_FORM:
        if "type" not in posted:
            raise MalformedMessage("the body has no 'type' (the message type's wire name)")
        posted = {
            "type": posted["type"],
            "id": uuid.uuid4().hex,
            "created_at": time.time(),
            "correlation_id": None,
            "data": posted.get("data", {}),
        }
    try:
        envelope = json.dumps(posted, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise MalformedMessage(f"body is not acceptable JSON: {e}") from None
    return codec.decode(envelope, None)


