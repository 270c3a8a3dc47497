"""
The wire encoding: a message is one UTF-8 JSON object (see docs/wire.md).

Decoding never raises anything but a L{DecodeError} subclass, whatever the bytes, so a
transport can set a bad body aside with C{error.reason} and carry on. What JSON allows
but a message cannot carry is refused at the door: non-finite numbers (C{1e999} reads as
infinity), duplicate keys (which one wins is up to each parser) and nesting deeper than
the configured limit (every later step, encoding an error report included, recurses).
"""

from __future__ import annotations

import json
import math
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
import reprlib
from typing import Any

from .errors import DecodeError, EncodeError, MalformedMessage, MessageTooLarge
from .message import Message, envelope_problem

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_MAX_NESTING",
    "encode",
    "decode",
    "peek_type",
    "embeddable",
    "json_safe",
]

#: The AMQP content type (and the only one accepted) of an scbus body.
CONTENT_TYPE = "application/json"

#: Deepest nesting of objects and arrays a body may have, the envelope counting as 1
#: (``transport.max_nesting``).
DEFAULT_MAX_NESTING = 64

#: Characters of a message's text kept in the safe form of an error report.
SAFE_TEXT_LIMIT = 1000

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        shown = text if len(text) <= 30 else text[:27] + "..."
        raise ValueError(f"number {shown} is out of range (non-finite numbers are refused)")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                shown = key if len(key) <= 40 else key[:37] + "..."
                raise ValueError(f"duplicate key {shown!r} in an object")
            seen.add(key)
    return obj


_decoder = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_finite_float, object_pairs_hook=_unique_keys
)
# The decoder's scanner, called directly for a body that is one value with nothing
# around it (every body scbus writes): JSONDecoder.decode adds two regex matches and two
# Python frames per body. Anything else, errors included, goes through decode() itself,
# so the text of every refusal is the decoder's own.
_scan_once = _decoder.scan_once  # type: ignore[attr-defined]


def _make_one_shot_encoder() -> Any:
    """
    The C encoder JSONEncoder.encode builds anew for every call, built once: a third of
    the cost of encoding a small message. No circular-reference markers: a failure is
    encoded again by C{_encoder} to get its own error text. None without the C module.
    """
    if c_make_encoder is None:
        return None
    try:
        return c_make_encoder(
            None, _encoder.default, encode_basestring, None, _encoder.key_separator,
            _encoder.item_separator, False, False, False,
        )
    except TypeError:  # another signature: JSONEncoder.encode is the reference anyway
        return None


_one_shot_encoder = _make_one_shot_encoder()


def encode(message: Message, max_size: int | None = None) -> bytes:
    """
    The message as UTF-8 JSON bytes; L{EncodeError} if a value cannot travel (its id,
    created_at or correlation id past the wire's limits included: a handler may have
    changed them since the message was built), or if the body is longer than
    C{max_size}: every transport refuses it at the sender, where the error can still be
    handled, rather than setting it aside at the receiver.
    """
    problem = envelope_problem(message)
    if problem is not None:
        raise EncodeError(f"{message.wire_name}: cannot encode: {problem}")
    try:
        body = _dumps(message.to_dict()).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError, RecursionError) as e:
        raise EncodeError(f"{message.wire_name}: cannot encode as JSON: {e}") from None
    if max_size is not None and len(body) > max_size:
        raise EncodeError(f"{message.wire_name}: {len(body)} bytes is over the limit of {max_size}")
    return body


def _dumps(envelope: dict[str, Any]) -> str:
    """C{_encoder.encode(envelope)}, through the encoder built once when it can."""
    if _one_shot_encoder is not None:
        try:
            return "".join(_one_shot_encoder(envelope, 0))
        except Exception:
            pass
    return _encoder.encode(envelope)


def _parse(text: str) -> Any:
    try:
        value, end = _scan_once(text, 0)
        if end == len(text):
            return value
    except Exception:
        pass
    return _decoder.decode(text)


def _nesting_exceeds(value: Any, limit: int) -> bool:
    """True when objects and arrays in C{value} nest deeper than C{limit} (it counting as 1)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def load_json(body: bytes, max_size: int | None = None, max_nesting: int | None = None) -> Any:
    """
    JSON exactly as the decoder reads a body (UTF-8; no duplicate keys, NaN, Infinity or
    overflowing numbers; bounded nesting), for every door that takes JSON in: what one
    door accepts, the bus must not refuse later. L{MalformedMessage} or
    L{MessageTooLarge} otherwise.
    """
    return _load(body, max_size, max_nesting)


def _load(body: bytes, max_size: int | None, max_nesting: int | None) -> Any:
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise MalformedMessage(f"a body must be bytes, got {type(body).__name__}")
    if max_size is not None and len(body) > max_size:
        raise MessageTooLarge(f"body of {len(body)} bytes exceeds the limit of {max_size}")
    try:
        text = (body if isinstance(body, bytes) else bytes(body)).decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedMessage(f"body is not UTF-8: {e.reason} at byte {e.start}") from None
    try:
        value = _parse(text)
    except json.JSONDecodeError as e:
        raise MalformedMessage(
            f"body is not JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except ValueError as e:
        raise MalformedMessage(f"body is not acceptable JSON: {e}") from None
    except RecursionError:
        raise MalformedMessage(
            f"body is nested deeper than {max_nesting or 'the recursion limit allows'} levels "
            "(transport.max_nesting)"
        ) from None
    # Brackets bound the depth from above: most bodies need no walk at all.
    if (
        max_nesting is not None
        and isinstance(value, (dict, list))
        and text.count("{") + text.count("[") > max_nesting
        and _nesting_exceeds(value, max_nesting)
    ):
        raise MalformedMessage(
            f"body is nested deeper than {max_nesting} levels (transport.max_nesting)"
        )
    return value


def decode(
    body: bytes, max_size: int | None = None, max_nesting: int = DEFAULT_MAX_NESTING
) -> Message:
    """
    The message in C{body}.

    @raise MalformedMessage: not UTF-8, not JSON, not an envelope, a non-finite number,
        a duplicate key, or nested deeper than C{max_nesting}.
    @raise MessageTooLarge: longer than C{max_size} bytes.
    @raise UnknownMessageType: no class is registered for its type.
    @raise MissingField: a required field is absent.
    @raise FieldTypeError: a field has the wrong type.
    """
    envelope = _load(body, max_size, max_nesting)
    try:
        return Message.from_dict(envelope)
    except DecodeError:
        raise
    except Exception as e:  # a message class's own checks: whatever they raise, refused
        raise MalformedMessage(f"unusable message: {type(e).__name__}: {e}") from None


def peek_type(body: bytes) -> str | None:
    """
    The wire type name in C{body}, if one can be read, for logs and routing of raw bodies
    (also of one too deep to decode: it is routed, then set aside with its reason).
    """
    try:
        envelope = _load(body, None, None)
    except DecodeError:
        return None
    name = envelope.get("type") if isinstance(envelope, dict) else None
    return name if isinstance(name, str) else None


# --- what an error report may embed ------------------------------------------------------

_short = reprlib.Repr()
_short.maxlevel = 4
_short.maxstring = _short.maxother = SAFE_TEXT_LIMIT
_short.maxlong = 60


def _text_of(source: Message | bytes) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        text = bytes(source[: SAFE_TEXT_LIMIT * 4]).decode("utf-8", "replace")
    else:
        try:
            text = _short.repr(source.to_dict())
        except Exception:
            text = f"<{type(source).__name__}>"
    return text if len(text) <= SAFE_TEXT_LIMIT else text[: SAFE_TEXT_LIMIT - 3] + "..."


def embeddable(
    source: Message | bytes | None, *, reserve: int = 2, max_bytes: int | None = None
) -> dict[str, Any] | None:
    """
    The envelope an error or quarantine report embeds for C{source} (a message, or the
    raw body the broker set aside): the envelope itself when it encodes, is no longer
    than C{max_bytes} and, nested C{reserve} levels down in the report, stays within the
    default nesting limit; otherwise a safe form (type, id, correlation id, the problem,
    a truncated text), so that a report always encodes and is always decodable.
    """
    if source is None:
        return None
    problem = ""
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            envelope = _load(bytes(source), max_bytes, DEFAULT_MAX_NESTING - reserve)
            if not isinstance(envelope, dict):
                raise MalformedMessage("not a JSON object")
        else:
            envelope = source.to_dict()
            size = len(_encoder.encode(envelope).encode("utf-8"))
            if max_bytes is not None and size > max_bytes:
                raise MessageTooLarge(f"{size} bytes is over {max_bytes}")
            if _nesting_exceeds(envelope, DEFAULT_MAX_NESTING - reserve):
                raise MalformedMessage(f"nested deeper than {DEFAULT_MAX_NESTING - reserve} levels")
        return envelope
    except Exception as e:
        problem = f"{type(e).__name__}: {e}"[:200]
    type_name: str | None
    if isinstance(source, Message):
        type_name, message_id, correlation = source.wire_name, source.id, source.correlation_id
    else:
        type_name, message_id, correlation = peek_type(bytes(source)), None, None
    return {
        "type": type_name if isinstance(type_name, str) else None,
        "id": message_id if isinstance(message_id, str) else None,
        "correlation_id": correlation if isinstance(correlation, str) else None,
        "unembeddable": f"cannot embed this message in a report ({problem})",
        "text": _text_of(source),
    }


def json_safe(value: Any, _depth: int = 0) -> Any:
    """
    A copy of C{value} that JSON can carry and scbus can decode: what cannot travel
    (non-finite numbers, huge integers, objects, nesting past 8 levels) becomes text.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:  # lone surrogates, from a "\\ud800" escape
            return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, int):
        return int(value) if value.bit_length() < 4000 else f"<int of {value.bit_length()} bits>"
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if _depth >= 8:
        return _short.repr(value)[:SAFE_TEXT_LIMIT]
    if isinstance(value, Message):
        return json_safe(value.to_dict(), _depth)
    if isinstance(value, dict):
        return {str(k): json_safe(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, _depth + 1) for v in value]
    try:
        return _short.repr(value)[:SAFE_TEXT_LIMIT]
    except Exception:
        return f"<{type(value).__name__}>"
