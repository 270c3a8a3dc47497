"""
Messages: typed, JSON-shaped data classes with a stable wire name.

Every subclass of L{Message} becomes a keyword-only dataclass and is registered under its
wire name, so a body read off the wire can be turned back into the right class. Field
types are checked when the class is defined (only what JSON carries); values against
them when a message is built, when a field is assigned and when a message is decoded, so
a bad message is caught where it is made rather than where it is read.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import itertools
import math
import os
import sys
import time
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, Union

from .errors import FieldTypeError, MalformedMessage, MissingField, UnknownMessageType

__all__ = [
    "Message",
    "AppErrorOccurredMessage",
    "HeartbeatMessage",
    "HeartbeatResponseMessage",
    "lookup",
    "registered_types",
    "snapshot",
    "from_snapshot",
    "envelope_problem",
    "is_wire_id",
    "MAX_ID_BYTES",
]

M = TypeVar("M", bound="Message")

#: Names an envelope uses; a subclass may not declare fields with these names.
RESERVED_NAMES = frozenset({"type", "id", "created_at", "correlation_id", "data"})

#: The longest id or correlation id, in UTF-8 bytes: over AMQP each travels as a short
#: string (the message_id and correlation_id properties), which holds at most 255.
MAX_ID_BYTES = 255

#: created_at travels as an AMQP timestamp, unsigned 64-bit seconds: from 0 to below this.
CREATED_AT_END = 2.0**64

#: The longest wire name, in UTF-8 bytes: its exchange, C{scbus.type.<wire name>}, is named
#: by a short string too.
MAX_WIRE_NAME_BYTES = MAX_ID_BYTES - len("scbus.type.")

_registry: dict[str, type[Message]] = {}


def lookup(wire_name: str) -> type[Message]:
    """The class registered under C{wire_name}; L{UnknownMessageType} if there is none."""
    try:
        return _registry[wire_name]
    except KeyError:
        raise UnknownMessageType(f"unknown message type {wire_name!r}") from None


def registered_types() -> dict[str, type[Message]]:
    """A copy of the registry: wire name to class."""
    return dict(_registry)


# Ids are 32 hex digits: 80 random bits drawn once per process (again in a forked child)
# and a 48-bit counter. Unique across processes as random ids are, at a fraction of the
# cost of reading 16 random bytes per message.
_ID_COUNTER_LIMIT = 1 << 48
_id_prefix = ""
_id_counter = itertools.count()


def _reseed_ids() -> None:
    global _id_prefix, _id_counter
    _id_prefix = os.urandom(10).hex()
    _id_counter = itertools.count()


_reseed_ids()
os.register_at_fork(after_in_child=_reseed_ids)


def _new_id() -> str:
    n = next(_id_counter)
    if n >= _ID_COUNTER_LIMIT:
        _reseed_ids()
        n = next(_id_counter)
    return _id_prefix + "%012x" % n


# --- field checking -------------------------------------------------------------------

# A checker takes the value and the field path (for error text) and answers the value
# to store, converted where JSON is looser than Python (an int for a float field, a
# nested envelope for a message field).
Checker = Callable[[Any, str], Any]


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _expected(kind: str) -> Checker:
    def fail(value: Any, path: str) -> Any:
        raise FieldTypeError(f"field {path!r}: expected {kind}, got {_describe(value)}")

    return fail


def _check_int(value: Any, path: str) -> Any:
    if type(value) is int:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return _expected("int")(value, path)


def _check_float(value: Any, path: str) -> Any:
    if type(value) is float:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise FieldTypeError(f"field {path!r}: {_describe(value)} is too large for a float") from None
    return _expected("float")(value, path)


def _check_exact(kind: type) -> Checker:
    def check(value: Any, path: str) -> Any:
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return value
        return _expected(kind.__name__)(value, path)

    return check


def _check_none(value: Any, path: str) -> Any:
    if value is None:
        return None
    return _expected("null")(value, path)


def _check_any(value: Any, path: str) -> Any:
    return value


def _check_list(item: Checker, kind: str) -> Checker:
    def check(value: Any, path: str) -> Any:
        if not isinstance(value, (list, tuple)):
            return _expected(kind)(value, path)
        return [item(v, f"{path}[{i}]") for i, v in enumerate(value)]

    return check


def _check_dict(item: Checker, kind: str) -> Checker:
    def check(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            return _expected(kind)(value, path)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise FieldTypeError(f"field {path!r}: keys must be str, got {_describe(k)}")
            out[k] = item(v, f"{path}.{k}")
        return out

    return check


def _check_union(options: list[Checker], kind: str) -> Checker:
    def check(value: Any, path: str) -> Any:
        for option in options:
            try:
                return option(value, path)
            except FieldTypeError:
                continue
        return _expected(kind)(value, path)

    return check


def _check_optional(inner: Checker) -> Checker:
    """C{X | None}: None, or whatever C{X} accepts, with C{X}'s own error text."""

    def check(value: Any, path: str) -> Any:
        return None if value is None else inner(value, path)

    return check


def _check_message(cls: type[Message]) -> Checker:
    def check(value: Any, path: str) -> Any:
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            try:
                return cls.from_dict(value)
            except (MalformedMessage, UnknownMessageType, MissingField, FieldTypeError) as e:
                raise FieldTypeError(f"field {path!r}: {e}") from None
        return _expected(cls.__name__)(value, path)

    return check


#: What a field may be declared as, for the error refusing any other type.
SUPPORTED_FIELD_TYPES = (
    "int, float, str, bool, None, Any, list[T], tuple[T, ...], Sequence[T], dict[str, T], "
    "unions of these (T | None included) and Message classes"
)


class _Unsupported(Exception):
    """A part of a field's type the wire cannot carry: the part, and why when not plain."""

    def __init__(self, part: Any, detail: str = "") -> None:
        super().__init__(part, detail)
        self.part = part
        self.detail = detail


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__qualname__
    return str(annotation).replace("typing.", "")


def _field_checker(annotation: Any, owner: str) -> Checker:
    """
    The checker of a field declared C{annotation} (C{owner} is C{Class.field}), or one
    TypeError naming the field, its type and the types that travel.
    """
    try:
        return _checker_for(annotation)
    except _Unsupported as e:
        why = [e.detail] if e.detail else []
        if e.part is not annotation:
            why.insert(0, f"{_type_name(e.part)} in it")
        raise TypeError(
            f"{owner}: field type {_type_name(annotation)} cannot travel as JSON"
            + (f" ({': '.join(why)})" if why else "")
            + f"; supported: {SUPPORTED_FIELD_TYPES}"
        ) from None


def _checker_for(annotation: Any) -> Checker:
    if annotation is Any or annotation is object:
        return _check_any
    if annotation is None or annotation is type(None):
        return _check_none
    if annotation is int:
        return _check_int
    if annotation is float:
        return _check_float
    if annotation in (str, bool):
        return _check_exact(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Message):
        return _check_message(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    kind = _type_name(annotation)
    if origin in (list, tuple, collections.abc.Sequence):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise _Unsupported(annotation, "a tuple must be tuple[T, ...]")
        return _check_list(_checker_for(args[0]) if args else _check_any, kind)
    if origin is dict:
        if args and args[0] is not str:
            raise _Unsupported(annotation, "dict keys must be str")
        return _check_dict(_checker_for(args[1]) if args else _check_any, kind)
    if origin is Union or origin is types.UnionType:
        others = [a for a in args if a is not type(None)]
        if len(others) == 1 and len(args) == 2:
            return _check_optional(_checker_for(others[0]))
        return _check_union([_checker_for(a) for a in args], kind)
    if annotation is list:
        return _check_list(_check_any, "list")
    if annotation is dict:
        return _check_dict(_check_any, "dict")
    raise _Unsupported(annotation)


class _Annotations:
    """One field's annotation, for C{typing.get_type_hints} to evaluate on its own."""

    def __init__(self, name: str, annotation: Any) -> None:
        self.__annotations__ = {name: annotation}


def _field_hints(cls: type[Message]) -> tuple[dict[str, Any], dict[str, Exception]]:
    """
    Each field's type, evaluated where it was written: its class's module, that class's
    own name included (in its class statement the name is not bound yet). Fields whose
    type names something not defined yet come apart, with the NameError.
    """
    names = {f.name for f in dataclasses.fields(cls)} - _ENVELOPE_FIELDS
    hints: dict[str, Any] = {}
    unresolved: dict[str, Exception] = {}
    for base in reversed(cls.__mro__):
        annotations = base.__dict__.get("__annotations__", {})
        mine = names.intersection(annotations)
        if not mine:
            continue
        module = sys.modules.get(base.__module__)
        class_names = dict(vars(base))
        names_in_scope = collections.ChainMap({base.__name__: base}, vars(module) if module else {})
        for name in mine:
            hints.pop(name, None)
            unresolved.pop(name, None)
            try:
                hints[name] = typing.get_type_hints(
                    _Annotations(name, annotations[name]), class_names, names_in_scope
                )[name]
            except NameError as e:
                unresolved[name] = e
            except Exception as e:
                raise TypeError(
                    f"{cls.__qualname__}.{name}: field type {annotations[name]!r} cannot be read: {e}"
                ) from None
    return hints, unresolved


def _to_json(value: Any) -> Any:
    """Values as JSON can carry them: nested messages become envelopes."""
    if isinstance(value, Message):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


class _Plan:
    """
    Per-class field plan: built when the class is defined, or on first use when a field's
    type names a class defined further down (see L{_check_definition}).
    """

    __slots__ = ("fields", "by_name", "checks", "required", "needs_conversion", "flat")

    def __init__(self, cls: type[Message], hints: dict[str, Any], checkers: dict[str, Checker]) -> None:
        self.fields: list[tuple[str, Checker]] = []
        #: (name, the one type its checker passes through unchanged or None, checker):
        #: a value of exactly that type needs no call.
        self.checks: list[tuple[str, type | None, Checker]] = []
        self.required: set[str] = set()
        plain = {int, float, str, bool, type(None)}
        self.needs_conversion: list[str] = []
        for f in dataclasses.fields(cls):
            if f.name in _ENVELOPE_FIELDS:
                continue
            annotation = hints[f.name]
            check = checkers[f.name]
            self.fields.append((f.name, check))
            self.checks.append((f.name, annotation if annotation in _UNCHANGED else None, check))
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.required.add(f.name)
            if annotation not in plain:
                self.needs_conversion.append(f.name)
        self.by_name = dict(self.fields)
        #: (name, type) of every field when each is declared int, str, bool or float:
        #: values of exactly those types come back from JSON as they were (see snapshot).
        #: None too for a class with its own to_dict: its body is not just these values.
        self.flat: tuple[tuple[str, type], ...] | None = None
        if cls.to_dict is Message.to_dict and all(hints[name] in _FLAT for name, _ in self.fields):
            self.flat = tuple((name, hints[name]) for name, _ in self.fields)


#: Annotations whose checker answers a value of exactly that type as it is.
_UNCHANGED = (int, str, bool)

#: Annotations whose values, of exactly that type, decode to equal values of that type.
_FLAT = (int, str, bool, float)

#: Stands for a field absent from an envelope's data.
_ABSENT = object()


def _plan(cls: type[Message]) -> _Plan:
    plan = cls.__dict__.get("_scbus_plan")
    if plan is None:
        hints, unresolved = _field_hints(cls)
        if unresolved:
            name, error = next(iter(unresolved.items()))
            raise NameError(f"{cls.__qualname__}.{name}: field type: {error}")
        plan = _Plan(cls, hints, _checkers(cls, hints))
        setattr(cls, "_scbus_plan", plan)  # noqa: B010 - per class, not inherited
    return plan


def _checkers(cls: type[Message], hints: dict[str, Any]) -> dict[str, Checker]:
    return {name: _field_checker(annotation, f"{cls.__qualname__}.{name}") for name, annotation in hints.items()}


def _check_definition(cls: type[Message]) -> None:
    """
    Refuse, as the class is defined, a field the wire cannot carry: a type that does not
    travel, a default that does not fit its type, a field left out of __init__ with no
    default. The plan is built now too, unless a field's type names a class defined
    further down: that field is checked on first use.
    """
    owner = cls.__qualname__
    hints, unresolved = _field_hints(cls)
    checkers = _checkers(cls, hints)
    for f in dataclasses.fields(cls):
        if f.name in _ENVELOPE_FIELDS:
            continue
        if not f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TypeError(f"{owner}.{f.name}: a field with init=False needs a default (every field travels)")
        if f.default is not dataclasses.MISSING and f.name in checkers:
            try:
                checkers[f.name](f.default, f.name)
            except FieldTypeError as e:
                raise TypeError(f"{owner}: the default of {e}") from None
    if not unresolved:
        setattr(cls, "_scbus_plan", _Plan(cls, hints, checkers))  # noqa: B010 - per class


# --- the base class -------------------------------------------------------------------


@typing.dataclass_transform(kw_only_default=True, field_specifiers=(dataclasses.field,))
@dataclasses.dataclass(kw_only=True)
class Message:
    """
    Base of every message.

    Declare fields as class annotations; subclasses become keyword-only dataclasses::

        class Tick(Message):
            count: int

    The wire name defaults to C{module.QualName}; pass C{wire_name="..."} in the class
    statement to keep it stable across refactors (C{class Tick(Message, wire_name="clock.Tick")}).
    C{id}, C{created_at} (Unix time) and C{correlation_id} are set for you; the bus copies a
    handled message's correlation id (or its id) onto the messages its handler returns.
    Defaults are written as in a dataclass, with C{dataclasses.field} for a default
    factory (C{tags: list[str] = field(default_factory=list)}). An assigned field is
    checked as at construction; a name that is no field is refused.
    """

    wire_name: ClassVar[str] = "scbus.Message"

    id: str = dataclasses.field(default_factory=_new_id, repr=False, compare=False)
    created_at: float = dataclasses.field(default_factory=time.time, repr=False, compare=False)
    correlation_id: str | None = dataclasses.field(default=None, repr=False, compare=False)

    def __init_subclass__(cls, wire_name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        clash = RESERVED_NAMES.intersection(cls.__dict__.get("__annotations__", {}))
        if clash:
            raise TypeError(
                f"{cls.__qualname__}: field name(s) {sorted(clash)} are reserved for the envelope"
            )
        own_init = "__init__" in cls.__dict__
        dataclasses.dataclass(kw_only=True)(cls)
        _check_definition(cls)
        if not own_init:
            setattr(cls, "__init__", _storing_init(cls))  # noqa: B010 - replaces the dataclass's
        name = wire_name or f"{cls.__module__}.{cls.__qualname__}"
        size = _utf8_size(name)
        if size is None or size > MAX_WIRE_NAME_BYTES:
            shown = name if len(name) <= 60 else name[:57] + "..."
            raise TypeError(
                f"wire name {shown!r} of {cls.__qualname__} is "
                + ("not UTF-8 text" if size is None else f"{size} bytes of UTF-8")
                + f": at most {MAX_WIRE_NAME_BYTES} travel (its exchange's name is an AMQP short string)"
            )
        previous = _registry.get(name)
        if previous is not None and (
            previous.__module__ != cls.__module__ or previous.__qualname__ != cls.__qualname__
        ):
            raise TypeError(
                f"wire name {name!r} of {cls.__module__}.{cls.__qualname__} is already taken "
                f"by {previous.__module__}.{previous.__qualname__}"
            )
        cls.wire_name = name
        _registry[name] = cls

    def __post_init__(self) -> None:
        plan = _plan(type(self))
        values = self.__dict__
        if not _fits(values["id"], values["created_at"], values["correlation_id"]):
            values["id"], values["created_at"], values["correlation_id"] = _checked_envelope(
                self.wire_name, values["id"], values["created_at"], values["correlation_id"]
            )
        try:
            for name, unchanged, check in plan.checks:
                value = values[name]
                if type(value) is not unchanged:
                    values[name] = check(value, name)
        except FieldTypeError as e:
            raise FieldTypeError(f"{type(self).__qualname__}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """The envelope: type name, id, created_at, correlation_id and the fields as data."""
        plan = _plan(type(self))
        values = self.__dict__
        data = {name: values[name] for name, _ in plan.fields}
        for name in plan.needs_conversion:
            data[name] = _to_json(data[name])
        return {
            "type": self.wire_name,
            "id": self.id,
            "created_at": self.created_at,
            "correlation_id": self.correlation_id,
            "data": data,
        }

    @classmethod
    def from_dict(cls: type[M], envelope: Any) -> M:
        """
        Build a message from its envelope, checking every field.

        Called on L{Message}, any registered type is accepted; called on a subclass, the
        envelope's type must be that class or one of its subclasses.
        """
        if not isinstance(envelope, dict):
            raise MalformedMessage(
                f"a message must be a JSON object, got {type(envelope).__name__}"
            )
        wire_name = envelope.get("type")
        if not isinstance(wire_name, str):
            raise MalformedMessage("the envelope has no string 'type'")
        target = _registry.get(wire_name) or lookup(wire_name)
        if not issubclass(target, cls):
            raise UnknownMessageType(
                f"message type {wire_name!r} is not a {cls.wire_name!r} message"
            )
        message_id = envelope.get("id")
        created_at = envelope.get("created_at")
        correlation_id = envelope.get("correlation_id")
        if not _fits(message_id, created_at, correlation_id):
            message_id, created_at, correlation_id = _checked_envelope(
                wire_name, message_id, created_at, correlation_id
            )
        data = envelope.get("data", {})
        if not isinstance(data, dict):
            raise MalformedMessage(f"{wire_name}: 'data' must be a JSON object")
        plan = _plan(target)
        if not data.keys() >= plan.required:
            missing = plan.required.difference(data)
            raise MissingField(f"{wire_name}: missing field(s) {', '.join(sorted(missing))}")
        message = target.__new__(target)
        values = message.__dict__
        values["id"] = message_id
        values["created_at"] = created_at
        values["correlation_id"] = correlation_id
        for name, unchanged, check in plan.checks:
            value = data.get(name, _ABSENT)
            if type(value) is unchanged:
                values[name] = value
            elif value is _ABSENT:
                values[name] = _defaults(target)[name]()
            else:
                try:
                    values[name] = check(value, name)
                except FieldTypeError as e:
                    raise FieldTypeError(f"{wire_name}: {e}") from None
        return message


# --- copies without a round trip through JSON ---------------------------------------------


Snapshot = tuple[type["Message"], dict[str, Any]]


def snapshot(message: Message) -> Snapshot | None:
    """
    The message's values, when decoding its encoded body would give exactly these back
    (every field declared int, str, bool or float and holding exactly that type; a string
    id, a float created_at, a string or null correlation id), else None. Take it once the
    message encoded: the in-memory transport builds receivers' copies from it with
    L{from_snapshot} instead of decoding, for the same result at a fraction of the cost.
    """
    cls = type(message)
    plan = cls.__dict__.get("_scbus_plan") or _plan(cls)
    flat = plan.flat
    if flat is None:
        return None
    values = message.__dict__
    message_id = values["id"]
    correlation_id = values["correlation_id"]
    if (
        type(message_id) is not str
        or not message_id
        or type(values["created_at"]) is not float
        or (correlation_id is not None and type(correlation_id) is not str)
    ):
        return None
    copied = {"id": message_id, "created_at": values["created_at"], "correlation_id": correlation_id}
    for name, kind in flat:
        value = values[name]
        if type(value) is not kind:
            return None
        copied[name] = value
    return cls, copied


def from_snapshot(taken: Snapshot) -> Message | None:
    """
    A new message equal to what decoding the body gives, from a L{snapshot}; None when
    the snapshot's class no longer holds its wire name (decode the body then).
    """
    cls, copied = taken
    if _registry.get(cls.wire_name) is not cls:
        return None
    message = cls.__new__(cls)
    message.__dict__.update(copied)
    return message


# --- the envelope's own fields ---------------------------------------------------------


def _fits(message_id: Any, created_at: Any, correlation_id: Any) -> bool:
    """
    The usual envelope, at the cost of a few comparisons: ASCII ids (a byte a character,
    so their length is their size) and a float created_at within the timestamp range
    (which NaN and infinities are not). Anything else takes L{_checked_envelope}.
    """
    return (
        type(message_id) is str and message_id.isascii() and 0 < len(message_id) <= MAX_ID_BYTES
        and type(created_at) is float and 0.0 <= created_at < CREATED_AT_END
        and (
            correlation_id is None
            or (type(correlation_id) is str and correlation_id.isascii() and len(correlation_id) <= MAX_ID_BYTES)
        )
    )


def _utf8_size(text: str) -> int | None:
    """Bytes of C{text} in UTF-8; None when UTF-8 cannot carry it (a lone surrogate)."""
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def _id_problem(value: Any, name: str) -> str | None:
    if not isinstance(value, str):
        return f"'{name}' must be a string" + (" or null" if name == "correlation_id" else "")
    size = _utf8_size(value)
    if size is None:
        return f"'{name}' is not UTF-8 text (it holds a lone surrogate)"
    if size > MAX_ID_BYTES:
        return f"'{name}' is {size} bytes of UTF-8, over the limit of {MAX_ID_BYTES} (an AMQP short string)"
    return None


def is_wire_id(value: Any) -> bool:
    """True when C{value} can travel as a message's id or correlation id (a non-empty one)."""
    return isinstance(value, str) and bool(value) and _id_problem(value, "id") is None


def _time_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "'created_at' must be a number (Unix time)"
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        return "'created_at' must be a finite number (Unix time)"
    if not 0.0 <= seconds < CREATED_AT_END:
        shown = repr(value) if len(repr(value)) <= 30 else f"{seconds:.6g}"
        return (
            f"'created_at' is {shown}: it must be at least 0 and below 2**64 "
            "(Unix time in seconds, an AMQP timestamp)"
        )
    return None


def _envelope_problem(message_id: Any, created_at: Any, correlation_id: Any) -> str | None:
    """What the wire cannot carry of these envelope fields, the first found; None if all travel."""
    if not isinstance(message_id, str) or not message_id:
        return "the envelope has no string 'id'"
    problem = _id_problem(message_id, "id") or _time_problem(created_at)
    if problem is None and correlation_id is not None:
        problem = _id_problem(correlation_id, "correlation_id")
    return problem


def _checked_envelope(
    wire_name: str, message_id: Any, created_at: Any, correlation_id: Any
) -> tuple[str, float, str | None]:
    """
    The envelope's fields as a message holds them (an int created_at as a float), or
    L{MalformedMessage} naming the first field the wire cannot carry and why.
    """
    problem = _envelope_problem(message_id, created_at, correlation_id)
    if problem is not None:
        raise MalformedMessage(f"{wire_name}: {problem}")
    return message_id, float(created_at), correlation_id


def envelope_problem(message: Message) -> str | None:
    """
    Why the message's id, created_at or correlation id cannot travel, or None. They are
    checked when a message is built and decoded; this is for one changed since (a
    handler may set them on the message it returns).
    """
    values = message.__dict__
    message_id, created_at, correlation_id = values["id"], values["created_at"], values["correlation_id"]
    if _fits(message_id, created_at, correlation_id):
        return None
    return _envelope_problem(message_id, created_at, correlation_id)


def _defaults(cls: type[Message]) -> dict[str, Callable[[], Any]]:
    cached = cls.__dict__.get("_scbus_defaults")
    if cached is None:
        cached = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                cached[f.name] = lambda v=f.default: v
            elif f.default_factory is not dataclasses.MISSING:
                cached[f.name] = f.default_factory
        setattr(cls, "_scbus_defaults", cached)  # noqa: B010 - per class, not inherited
    return cached


# --- assignment -------------------------------------------------------------------------
#
# Messages are mutable, not frozen: each receiver gets its own copy (built from values
# or decoded), so a handler changing its input changes nobody else's, and the bus sets
# the correlation id on the messages a handler returns without copying them. A field
# assigned after construction is checked as the constructor checks it, so a message
# holds values of its declared types at all times. The constructor stores straight into
# the instance's dict, with the checks inlined, so construction costs no call per field.
# The envelope's fields are checked when a message is built and decoded, and again by
# codec.encode (see envelope_problem), not on each assignment: the bus assigns them.

class _Factory:
    """Stands for a field with a default factory that was not given to __init__."""

    def __repr__(self) -> str:
        return "<factory>"


_NOT_GIVEN = _Factory()


def _storing_init(cls: type[Message]) -> Callable[..., None]:
    """
    The dataclass's __init__ for C{cls} (same parameters, defaults and factories), storing
    into the instance's dict instead of through the checked __setattr__. With the class's
    plan known, it checks the values itself, as Message.__post_init__ would, with no call
    for a value of exactly its declared plain type, and calls __post_init__ only when it
    is not Message's (whose checks are done). Without the plan (a field naming a class
    defined further down), it calls __post_init__, which checks.
    """
    plan = cls.__dict__.get("_scbus_plan")
    namespace: dict[str, Any] = {
        "__scbus_not_given__": _NOT_GIVEN, "__scbus_fits__": _fits,
        "__scbus_checked_envelope__": _checked_envelope, "__scbus_field_type_error__": FieldTypeError,
    }
    positional: list[str] = []
    keyword: list[str] = []
    lines: list[str] = []
    fields = dataclasses.fields(cls)
    for i, f in enumerate(fields):
        default, factory = f"__scbus_default_{i}__", f"__scbus_factory_{i}__"
        namespace[default], namespace[factory] = f.default, f.default_factory
        has_factory = f.default_factory is not dataclasses.MISSING
        if not f.init:
            lines.append(f"{f.name} = {factory + '()' if has_factory else default}")
        elif has_factory:
            (keyword if f.kw_only else positional).append(f"{f.name}=__scbus_not_given__")
            lines.append(f"if {f.name} is __scbus_not_given__: {f.name} = {factory}()")
        else:
            has_default = f.default is not dataclasses.MISSING
            (keyword if f.kw_only else positional).append(f"{f.name}={default}" if has_default else f.name)
    if plan is not None:
        lines += _inline_checks(cls, plan, namespace)
    lines.append("__scbus_values__ = __scbus_self__.__dict__")
    lines += [f"__scbus_values__[{f.name!r}] = {f.name}" for f in fields]
    if plan is None:
        lines.append("__scbus_self__.__post_init__()")
    else:  # looked up at each call, as the dataclass's __init__ does (it may be patched)
        namespace["__scbus_checks_only__"] = Message.__post_init__
        lines += [
            "if type(__scbus_self__).__post_init__ is not __scbus_checks_only__:",
            "    __scbus_self__.__post_init__()",
        ]
    parameters = ", ".join(["__scbus_self__", *positional, *(["*", *keyword] if keyword else [])])
    source = f"def __init__({parameters}):\n" + "".join(f"    {line}\n" for line in lines)
    exec(source, namespace)  # noqa: S102 - field names only, each an identifier
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = {f.name: f.type for f in fields if f.init} | {"return": None}
    return init


def _inline_checks(cls: type[Message], plan: _Plan, namespace: dict[str, Any]) -> list[str]:
    """Message.__post_init__'s checks as lines of a generated __init__, on its local names."""
    lines = [
        "if not __scbus_fits__(id, created_at, correlation_id):",
        "    id, created_at, correlation_id = __scbus_checked_envelope__("
        "__scbus_self__.wire_name, id, created_at, correlation_id)",
    ]
    if not plan.fields:
        return lines
    lines.append("try:")
    for i, (name, unchanged, _) in enumerate(plan.checks):
        namespace[f"__scbus_check_{i}__"] = plan.by_name[name]
        call = f"{name} = __scbus_check_{i}__({name}, {name!r})"
        if unchanged is None:
            lines.append(f"    {call}")
        else:
            namespace[f"__scbus_type_{i}__"] = unchanged
            lines.append(f"    if type({name}) is not __scbus_type_{i}__: {call}")
    lines += [
        "except __scbus_field_type_error__ as __scbus_error__:",
        f"    raise __scbus_field_type_error__({cls.__qualname__ + ': '!r} + str(__scbus_error__)) from None",
    ]
    return lines


def _checked_setattr(message: Message, name: str, value: Any) -> None:
    """Message.__setattr__: a field's value checked as the constructor checks it."""
    if name in _ENVELOPE_FIELDS:
        message.__dict__[name] = value
        return
    cls = type(message)
    plan = cls.__dict__.get("_scbus_plan") or _plan(cls)
    check = plan.by_name.get(name)
    if check is not None:
        try:
            message.__dict__[name] = check(value, name)
        except FieldTypeError as e:
            raise FieldTypeError(f"{cls.__qualname__}: {e}") from None
    elif name.startswith("_") or hasattr(getattr(cls, name, None), "__set__"):
        object.__setattr__(message, name, value)  # private state, a property's setter
    else:
        raise AttributeError(
            f"{cls.__qualname__} has no field {name!r}; its fields: "
            + ", ".join([*plan.by_name, "id", "created_at", "correlation_id"])
        )


def _checked_delattr(message: Message, name: str) -> None:
    """Message.__delattr__: every field travels, so none can be deleted."""
    cls = type(message)
    if name in _ENVELOPE_FIELDS or name in (cls.__dict__.get("_scbus_plan") or _plan(cls)).by_name:
        raise AttributeError(f"{cls.__qualname__}.{name} is a field: it cannot be deleted")
    object.__delattr__(message, name)


# Installed after the class statement, where type checkers do not look: declared in it,
# a __setattr__ would make them accept any attribute name.
Message.__setattr__ = _checked_setattr  # type: ignore[method-assign,assignment]
Message.__delattr__ = _checked_delattr  # type: ignore[method-assign,assignment]
Message.__init__ = _storing_init(Message)  # type: ignore[method-assign]

_ENVELOPE_FIELDS = frozenset({"id", "created_at", "correlation_id"})
Message.wire_name = "scbus.Message"
_registry["scbus.Message"] = Message


# --- the bus's own messages -----------------------------------------------------------


class AppErrorOccurredMessage(Message, wire_name="scbus.AppErrorOccurred"):
    """
    A handler raised, or returned something that is not a message.

    Data only: the failed message as its envelope, the error text and type name, the
    traceback as frames (file, line, function, source), and the log records captured
    during that one call. A receiver never imports or calls anything from it.
    """

    app_name: str
    message: dict[str, Any] | None
    error: str
    error_type: str
    traceback: list[dict[str, Any]]
    log: list[dict[str, Any]]
    handler: str = ""
    interval: float | None = None
    attempts: int = 1


class HeartbeatMessage(Message, wire_name="scbus.Heartbeat"):
    """
    Sent through an app's queue like any message; the bus answers for the app.

    Because it waits its turn, the answer's delay measures the app's backlog (load), not
    whether the process is alive.
    """

    app_name: str | None = None


class HeartbeatResponseMessage(Message, wire_name="scbus.HeartbeatResponse"):
    """
    The bus's answer to a L{HeartbeatMessage}: who answered, how long the heartbeat
    waited in the app's queue (created to delivered) and then in the process (delivered
    to answered, e.g. for a free in-flight slot). Their sum is the app's lag right now.
    """

    app_name: str
    heartbeat_id: str
    queued_seconds: float = 0.0
    handling_seconds: float = 0.0
    handled: int = 0
    errors: int = 0
