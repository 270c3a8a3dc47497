"""Messages, their fields, the registry and the JSON codec."""

import json

import pytest

from scbus import codec
from scbus.errors import (
    EncodeError,
    FieldTypeError,
    MalformedMessage,
    MessageTooLarge,
    MissingField,
    UnknownMessageType,
)
from scbus.message import AppErrorOccurredMessage, Message, lookup, registered_types


class Point(Message, wire_name="test.Point"):
    x: int
    y: float = 0.0
    label: str | None = None


class Shape(Message, wire_name="test.Shape"):
    points: list[Point]
    tags: dict[str, int] | None = None


class Loose(Message, wire_name="test.Loose"):
    anything: object
    flags: list[bool] | None = None


def roundtrip(message):
    return codec.decode(codec.encode(message))


def test_fields_metadata_and_round_trip():
    p = Point(x=1, y=2.5, label="a")
    assert len(p.id) == 32 and p.created_at > 0 and p.correlation_id is None
    back = roundtrip(p)
    assert type(back) is Point
    assert (back.x, back.y, back.label) == (1, 2.5, "a")
    assert (back.id, back.created_at, back.correlation_id) == (p.id, p.created_at, None)


def test_envelope_shape_is_the_documented_one():
    p = Point(x=3, correlation_id="c1")
    envelope = json.loads(codec.encode(p))
    assert envelope == {
        "type": "test.Point",
        "id": p.id,
        "created_at": p.created_at,
        "correlation_id": "c1",
        "data": {"x": 3, "y": 0.0, "label": None},
    }


def test_nested_messages_and_containers():
    s = Shape(points=[Point(x=1), Point(x=2, y=1)], tags={"a": 1})
    back = roundtrip(s)
    assert [pt.x for pt in back.points] == [1, 2] and isinstance(back.points[0], Point)
    assert back.tags == {"a": 1}


def test_non_ascii_text_survives():
    back = roundtrip(Point(x=1, label="José ☃ 漢字"))
    assert back.label == "José ☃ 漢字"


def test_registry_maps_wire_names_to_classes():
    assert lookup("test.Point") is Point
    assert registered_types()["scbus.AppErrorOccurred"] is AppErrorOccurredMessage
    with pytest.raises(UnknownMessageType, match="nope"):
        lookup("nope")


def test_default_wire_name_is_module_and_qualname():
    class Local(Message):
        n: int

    assert Local.wire_name == f"{__name__}.test_default_wire_name_is_module_and_qualname.<locals>.Local"


def test_a_taken_wire_name_is_refused():
    with pytest.raises(TypeError, match="already taken"):

        class Other(Message, wire_name="test.Point"):
            z: int


def test_reserved_field_names_are_refused():
    with pytest.raises(TypeError, match="reserved"):

        class Bad(Message, wire_name="test.BadReserved"):
            type: str


def test_unsupported_field_type_is_refused_where_the_class_is_defined():
    with pytest.raises(TypeError, match="Odd.when: field type set cannot travel as JSON"):

        class Odd(Message, wire_name="test.Odd"):
            when: set


def test_constructor_checks_types():
    with pytest.raises(FieldTypeError, match=r"Point: field 'x': expected int, got str 'one'"):
        Point(x="one")
    with pytest.raises(FieldTypeError, match="expected int, got bool"):
        Point(x=True)
    assert Point(x=1, y=2).y == 2.0 and isinstance(Point(x=1, y=2).y, float)


@pytest.mark.parametrize(
    "body, error, text",
    [
        (b"{", MalformedMessage, "not JSON"),
        (b"\xff\xfe", MalformedMessage, "not UTF-8"),
        (b"[1, 2]", MalformedMessage, "must be a JSON object"),
        (b'{"id": "x"}', MalformedMessage, "no string 'type'"),
        (b'{"type": "test.Point", "created_at": 1, "data": {"x": 1}}', MalformedMessage, "'id'"),
        (b'{"type": "test.Point", "id": "i", "created_at": "now", "data": {"x": 1}}', MalformedMessage, "created_at"),
        (b'{"type": "test.Point", "id": "i", "created_at": 1, "data": []}', MalformedMessage, "'data'"),
        (b'{"type": "test.Point", "id": "i", "created_at": 1, "data": {"x": NaN}}', MalformedMessage, "NaN"),
        (b'{"type": "no.Such", "id": "i", "created_at": 1, "data": {}}', UnknownMessageType, "'no.Such'"),
        (b'{"type": "test.Point", "id": "i", "created_at": 1, "data": {}}', MissingField, "missing field(s) x"),
        (b'{"type": "test.Point", "id": "i", "created_at": 1, "data": {"x": "1"}}', FieldTypeError, "field 'x': expected int, got str"),
        (b'{"type": "test.Point", "id": "i", "created_at": 1, "data": {"x": 1.5}}', FieldTypeError, "expected int, got float"),
        (b'{"type": "test.Shape", "id": "i", "created_at": 1, "data": {"points": [{"type": "test.Point"}]}}', FieldTypeError, "points[0]"),
        (b'{"type": "test.Shape", "id": "i", "created_at": 1, "data": {"points": [], "tags": {"a": "b"}}}', FieldTypeError, "tags.a"),
        (b"[" * 100000, MalformedMessage, "nested deeper than 64 levels (transport.max_nesting)"),
        (b'{"type": "test.Point", "id": "i", "created_at": 1, "data": {"x": 1, "y": 1e999}}', MalformedMessage, "number 1e999 is out of range"),
        (b'{"type": "test.Point", "id": "i", "created_at": 1, "data": {"x": 1, "y": -1E400}}', MalformedMessage, "out of range"),
        (b'{"type": "test.Point", "id": "i", "created_at": 1e400, "data": {"x": 1}}', MalformedMessage, "number 1e400 is out of range"),
        (b'{"type": "test.Point", "id": "i", "created_at": 1, "data": {"x": 1, "y": Infinity}}', MalformedMessage, "Infinity is not valid JSON"),
        (b'{"type": "test.Point", "id": "i", "created_at": 1, "data": {"x": 1, "y": -Infinity}}', MalformedMessage, "-Infinity is not valid JSON"),
        (b'{"type": "test.Point", "id": "i", "created_at": ' + b"9" * 400 + b', "data": {"x": 1}}', MalformedMessage, "'created_at' must be a finite number"),
        (b'{"type": "test.Point", "id": "i", "created_at": 1, "data": {"x": 1, "y": ' + b"9" * 400 + b'}}', FieldTypeError, "too large for a float"),
        (b'{"type": "test.Point", "type": "no.Such", "id": "i", "created_at": 1, "data": {"x": 1}}', MalformedMessage, "duplicate key 'type'"),
        (b'{"type": "test.Point", "id": "i", "created_at": 1, "data": {"x": 1, "x": 2}}', MalformedMessage, "duplicate key 'x'"),
    ],
)
def test_decode_errors_are_specific(body, error, text):
    with pytest.raises(error) as info:
        codec.decode(body)
    assert text in str(info.value)
    assert info.value.reason in {"malformed", "unknown-type", "missing-field", "wrong-type"}


def _nested_point(depth):
    """A Loose message whose body nests C{depth} levels, the envelope counting as 1."""
    inner = "[" * (depth - 2) + "]" * (depth - 2)
    return ('{"type": "test.Loose", "id": "i", "created_at": 1, "data": {"anything": %s}}' % inner).encode()


def test_nesting_is_limited_at_decode_and_the_limit_is_configurable():
    assert codec.decode(_nested_point(64)).anything is not None
    with pytest.raises(MalformedMessage, match="nested deeper than 64 levels"):
        codec.decode(_nested_point(65))
    with pytest.raises(MalformedMessage, match="nested deeper than 10 levels"):
        codec.decode(_nested_point(11), max_nesting=10)
    assert codec.decode(_nested_point(200), max_nesting=200).anything is not None
    # brackets inside strings do not count
    text = codec.encode(Loose(anything="[{" * 500))
    assert codec.decode(text).anything == "[{" * 500


def test_a_report_embeds_a_safe_form_of_what_cannot_travel():
    deep = Loose(anything=[[[[[[[[[[]]]]]]]]]], correlation_id="c")
    assert codec.embeddable(deep) == deep.to_dict()
    deeper = Loose.from_dict({"type": "test.Loose", "id": "m1", "created_at": 1, "data": {"anything": 0}})
    deeper.anything = eval("[" * 63 + "]" * 63)
    safe = codec.embeddable(deeper)
    assert (safe["type"], safe["id"], safe["correlation_id"]) == ("test.Loose", "m1", None)
    assert "nested deeper than 62 levels" in safe["unembeddable"] and len(safe["text"]) <= codec.SAFE_TEXT_LIMIT
    infinite = Loose(anything=float("inf"))
    safe = codec.embeddable(infinite)
    assert "Out of range float" in safe["unembeddable"] and safe["id"] == infinite.id
    body = b'{"type": "test.Point", "id": "i", "created_at": 1e999, "data": {}}'
    safe = codec.embeddable(body)
    assert safe["type"] is None and "out of range" in safe["unembeddable"]
    assert safe["text"] == body.decode()
    report = AppErrorOccurredMessage(
        app_name="a", message=safe, error="e", error_type="E", traceback=[], log=[],
    )
    assert codec.decode(codec.encode(report)).message == safe
    assert codec.embeddable(codec.encode(deep)) == deep.to_dict()


def test_json_safe_turns_what_cannot_travel_into_text():
    value = {"f": float("nan"), "i": 10 ** 5000, 3: [float("-inf"), object], "deep": eval("[" * 50 + "]" * 50)}
    safe = codec.json_safe(value)
    assert safe["f"] == "nan" and safe[str(3)][0] == "-inf" and safe["i"].startswith("<int of")
    assert isinstance(safe[str(3)][1], str)
    codec.decode(codec.encode(Loose(anything=safe)))


def test_decode_size_limit():
    body = codec.encode(Point(x=1, label="a" * 100))
    with pytest.raises(MessageTooLarge, match="exceeds the limit of 50"):
        codec.decode(body, max_size=50)
    assert codec.decode(body, max_size=len(body)).x == 1


def test_unknown_extra_fields_are_ignored_for_forward_compatibility():
    body = b'{"type": "test.Point", "id": "i", "created_at": 1, "data": {"x": 1, "new": 2}}'
    assert codec.decode(body).x == 1


def test_from_dict_on_a_subclass_checks_the_type():
    envelope = Point(x=1).to_dict()
    assert Point.from_dict(envelope).x == 1
    with pytest.raises(UnknownMessageType, match="is not a 'test.Shape' message"):
        Shape.from_dict(envelope)


def test_encode_refuses_what_json_cannot_carry():
    with pytest.raises(EncodeError, match="test.Loose: cannot encode"):
        codec.encode(Loose(anything={1, 2}))
    with pytest.raises(EncodeError):
        codec.encode(Point(x=1, y=float("nan")))


def test_peek_type():
    assert codec.peek_type(codec.encode(Point(x=1))) == "test.Point"
    assert codec.peek_type(b"junk") is None
    assert codec.peek_type(b'{"type": 3}') is None


#: Modules that turn bytes into arbitrary objects: none of them may be imported by scbus.
UNSAFE_SERIALISERS = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle"}


def unsafe_imports(source: str) -> list[str]:
    """Every import of an unsafe serialiser in C{source}: statements and dynamic imports."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + ([alias.name for alias in node.names] if not node.module else [])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("__import__", "import_module") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [name for name in names if name.split(".")[0] in UNSAFE_SERIALISERS]
    return found


def test_the_unsafe_import_finder_sees_every_form():
    for source in (
        "import pickle", "import os, pickle as p", "from pickle import loads", "from cPickle import *",
        "import marshal", "from shelve import open", "import _pickle", "x = __import__('pickle')",
        "import importlib\nimportlib.import_module('marshal')", "def f():\n    from pickle import dumps",
    ):
        assert unsafe_imports(source), source
    assert unsafe_imports("import json\nfrom os import path\npickled = 'import pickle'") == []


def test_no_pickle_anywhere():
    import pathlib

    import scbus

    root = pathlib.Path(scbus.__file__).parent.parent
    sources = sorted((root / "scbus").rglob("*.py")) + [root / "twisted" / "plugins" / "scbus_plugin.py"]
    assert len(sources) > 20
    found = {str(path.relative_to(root)): unsafe_imports(path.read_text()) for path in sources}
    assert {path: names for path, names in found.items() if names} == {}


def _ids_from_a_fork_and_a_new_process(count):
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: ids after a fork must not repeat the parent's
        try:
            os.close(read)
            os.write(write, json.dumps([Point(x=i).id for i in range(count)]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        forked = json.loads(pipe.read())
    os.waitpid(pid, 0)
    fresh = subprocess.run(
        [sys.executable, "-c", f"from scbus.message import _new_id; print(' '.join(_new_id() for _ in range({count})))"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()
    return forked, fresh


def test_ids_are_32_hex_digits_and_unique_across_processes_and_forks():
    count = 1000
    before = [Point(x=i).id for i in range(count)]
    forked, fresh = _ids_from_a_fork_and_a_new_process(count)
    mine = before + [Point(x=i).id for i in range(count)]  # the parent goes on after the fork
    everything = mine + forked + fresh
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in everything)
    assert len(set(everything)) == len(everything) == 4 * count
