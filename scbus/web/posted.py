"""
A message posted over HTTP: the wire envelope of docs/wire.md, or the short form
C{{"type": ..., "data": {...}}} with the envelope fields filled in. Checked exactly as a
transport decodes a body, so what is accepted here is what an app would receive.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from .. import codec
from ..errors import MalformedMessage, MessageTooLarge
from ..message import Message

__all__ = ["message_from_post"]

_SHORT_FORM = frozenset({"type", "data"})


def message_from_post(body: bytes, max_size: int | None) -> Message:
    """
    @raise DecodeError: with one sentence naming the field (C{.reason} is its short code).
    """
    if max_size is not None and len(body) > max_size:
        raise MessageTooLarge(f"body of {len(body)} bytes exceeds the limit of {max_size}")
    try:
        posted = json.loads(body.decode("utf-8"), parse_constant=_not_json)
    except UnicodeDecodeError as e:
        raise MalformedMessage(f"body is not UTF-8: {e.reason} at byte {e.start}") from None
    except (ValueError, RecursionError) as e:
        raise MalformedMessage(f"body is not JSON: {e}") from None
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


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")

