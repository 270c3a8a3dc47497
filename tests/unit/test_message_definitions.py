"""A message class the wire cannot carry is refused where it is defined, not at its first instance."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from scbus import codec
from scbus.errors import UnknownMessageType
from scbus.message import SUPPORTED_FIELD_TYPES, AppErrorOccurredMessage, Message, lookup


def test_a_field_type_json_cannot_carry_is_refused_with_the_class_field_type_and_what_travels():
    with pytest.raises(TypeError) as raised:

        class Event(Message, wire_name="test.defs.Event"):
            name: str
            when: datetime.datetime

    assert str(raised.value) == (
        f"test_a_field_type_json_cannot_carry_is_refused_with_the_class_field_type_and_what_travels"
        f".<locals>.Event.when: field type datetime cannot travel as JSON; supported: {SUPPORTED_FIELD_TYPES}"
    )
    assert "list[T]" in SUPPORTED_FIELD_TYPES and "Message classes" in SUPPORTED_FIELD_TYPES
    with pytest.raises(UnknownMessageType):
        lookup("test.defs.Event")  # not registered: a corrected class may take the name


@pytest.mark.parametrize(
    "annotation, text",
    [
        ("set[int]", "Bad.f: field type set[int] cannot travel as JSON;"),
        ("list[datetime.date]", "Bad.f: field type list[datetime.date] cannot travel as JSON (date in it);"),
        ("dict[str, bytes] | None", "field type dict[str, bytes] | None cannot travel as JSON (bytes in it);"),
        ("tuple[int, str]", "field type tuple[int, str] cannot travel as JSON (a tuple must be tuple[T, ...]);"),
        ("dict[int, str]", "field type dict[int, str] cannot travel as JSON (dict keys must be str);"),
        (
            "list[tuple[int, int]]",
            "field type list[tuple[int, int]] cannot travel as JSON (tuple[int, int] in it: a tuple must be tuple[T, ...]);",
        ),
    ],
)
def test_each_unsupported_type_is_named_even_inside_another(annotation, text):
    with pytest.raises(TypeError) as raised:
        exec(f"class Bad(Message, wire_name='test.defs.Bad'):\n    f: {annotation}\n", globals(), {})
    assert text in str(raised.value)
    assert str(raised.value).endswith(f"supported: {SUPPORTED_FIELD_TYPES}")


def test_a_default_that_does_not_fit_its_type_is_refused_at_definition():
    with pytest.raises(TypeError, match=r"Order: the default of field 'qty': expected int, got str 'one'$"):

        class Order(Message, wire_name="test.defs.Order"):
            qty: int = "one"  # type: ignore[assignment]

    class Fine(Message, wire_name="test.defs.Fine"):
        price: float = 1
        note: str | None = None

    assert Fine().price == 1.0 and type(Fine().price) is float


def test_a_field_left_out_of_init_needs_a_default():
    with pytest.raises(TypeError, match=r"Totals.total: a field with init=False needs a default"):

        class Totals(Message, wire_name="test.defs.Totals"):
            total: int = dataclasses.field(init=False)


def test_a_class_that_refers_to_itself_is_complete_at_definition_even_inside_a_function():
    class Node(Message, wire_name="test.defs.Node"):
        children: list[Node] = dataclasses.field(default_factory=list)

    tree = Node(children=[Node(), Node(children=[Node()])])
    back = codec.decode(codec.encode(tree))
    assert [len(c.children) for c in back.children] == [0, 1] and type(back.children[1].children[0]) is Node


def test_inherited_fields_are_read_where_they_were_written():
    # AppErrorOccurredMessage's fields name Any, which this module does not import.
    class ShopError(AppErrorOccurredMessage, wire_name="test.defs.ShopError"):
        shop: str = "main"

    report = ShopError(app_name="a", message=None, error="e", error_type="E", traceback=[], log=[{"x": 1}])
    assert codec.decode(codec.encode(report)).log == [{"x": 1}]


# Module level: a field naming a class defined further down can only be checked once
# that class exists, so it is checked on first use; every other field of it at once.


class Early(Message, wire_name="test.defs.Early"):
    later: Later | None = None


class Later(Message, wire_name="test.defs.Later"):
    n: int


class WaitsForAlias(Message, wire_name="test.defs.WaitsForAlias"):
    when: Stamp


Stamp = datetime.datetime


def test_a_field_naming_a_class_defined_further_down_is_checked_on_first_use():
    back = codec.decode(codec.encode(Early(later=Later(n=3))))
    assert type(back.later) is Later and back.later.n == 3
    with pytest.raises(TypeError, match=r"WaitsForAlias.when: field type datetime cannot travel as JSON; supported"):
        WaitsForAlias(when=datetime.datetime.now())


def test_other_fields_of_such_a_class_are_still_checked_at_definition():
    with pytest.raises(TypeError, match=r"Mixed.when: field type date cannot travel as JSON"):

        class Mixed(Message, wire_name="test.defs.Mixed"):
            later: NotYet  # noqa: F821
            when: datetime.date


def test_a_field_naming_nothing_says_which_field_on_first_use():
    class Dangling(Message, wire_name="test.defs.Dangling"):
        other: Nowhere  # noqa: F821

    with pytest.raises(NameError, match=r"Dangling.other: field type: name 'Nowhere' is not defined"):
        Dangling(other=1)
