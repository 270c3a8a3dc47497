"""
Messages are mutable, and every field is checked when assigned as when constructed: a
message holds values of its declared types at all times. Each receiver gets its own copy,
so a handler changing its input changes nobody else's.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from scbus import codec
from scbus.errors import FieldTypeError
from scbus.message import Message
from scbus.testing import BusHarness


class Part(Message, wire_name="test.assign.Part"):
    name: str


class Order(Message, wire_name="test.assign.Order"):
    sku: str
    qty: int = 1
    price: float = 0.0
    note: str | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    parts: list[Part] = dataclasses.field(default_factory=list)


def test_a_wrong_type_assigned_is_refused_as_at_construction_and_the_value_kept():
    order = Order(sku="a", qty=2)
    with pytest.raises(FieldTypeError, match=r"^Order: field 'qty': expected int, got str 'five'$"):
        order.qty = "five"  # type: ignore[assignment]
    with pytest.raises(FieldTypeError, match=r"^Order: field 'qty': expected int, got bool True$"):
        order.qty = True
    with pytest.raises(FieldTypeError, match=r"^Order: field 'tags\[1\]': expected str, got int 3$"):
        order.tags = ["x", 3]  # type: ignore[list-item]
    with pytest.raises(FieldTypeError, match=r"field 'parts\[0\]': expected Part"):
        order.parts = ["p"]  # type: ignore[list-item]
    assert (order.qty, order.tags, order.parts) == (2, [], [])


def test_an_assigned_value_is_stored_as_the_constructor_stores_it():
    order = Order(sku="a")
    order.price = 3
    assert order.price == 3.0 and type(order.price) is float
    order.note = None
    order.note = "fragile"
    order.parts = (Part(name="p"),)  # type: ignore[assignment]
    assert order.parts == [Part(name="p")] and type(order.parts) is list
    back = codec.decode(codec.encode(order))
    assert (back.price, back.note, back.parts) == (3.0, "fragile", [Part(name="p")])


def test_a_name_that_is_no_field_is_refused_listing_the_fields():
    order = Order(sku="a")
    with pytest.raises(AttributeError) as raised:
        order.qyt = 5  # type: ignore[attr-defined]
    assert str(raised.value) == (
        "Order has no field 'qyt'; its fields: sku, qty, price, note, tags, parts, id, created_at, correlation_id"
    )
    with pytest.raises(AttributeError, match="Order has no field 'wire_name'"):
        order.wire_name = "elsewhere"  # type: ignore[misc]
    assert order.wire_name == "test.assign.Order" and "qyt" not in order.__dict__


def test_private_attributes_and_property_setters_still_work():
    class Cached(Message, wire_name="test.assign.Cached"):
        cents: int = 0

        @property
        def euros(self) -> float:
            return self.cents / 100

        @euros.setter
        def euros(self, value: float) -> None:
            self.cents = round(value * 100)

    message = Cached()
    message._seen = True  # type: ignore[attr-defined]
    message.euros = 1.5
    assert message.cents == 150 and message._seen  # type: ignore[attr-defined]
    assert codec.decode(codec.encode(message)).to_dict()["data"] == {"cents": 150}
    del message._seen  # type: ignore[attr-defined]


def test_fields_cannot_be_deleted():
    order = Order(sku="a")
    for name in ("qty", "correlation_id"):
        with pytest.raises(AttributeError, match=f"Order.{name} is a field: it cannot be deleted"):
            delattr(order, name)
    assert codec.decode(codec.encode(order)) == order


def test_the_envelope_fields_are_assigned_freely_and_checked_when_sent():
    # The bus sets the correlation id of each message a handler returns; what the wire
    # cannot carry is refused at encode (tests/unit/test_wire_limits.py).
    order = Order(sku="a")
    order.correlation_id = "c1"
    order.id = "my-id"
    assert codec.decode(codec.encode(order)).to_dict()["correlation_id"] == "c1"


def test_messages_compare_by_value_and_are_not_hashable():
    first, second = Order(sku="a"), Order(sku="a")
    assert first == second and first.id != second.id  # the envelope is not compared
    with pytest.raises(TypeError, match="unhashable"):
        hash(first)
    assert {m.id: m for m in (first, second)}[first.id] is first


def test_a_handler_changing_its_input_changes_no_other_receivers_copy():
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def changer(name):
        def handle(order: Order) -> None:
            order.qty += 10
            order.tags.append(name)
            seen[name].append(order.qty)

        return handle

    harness = BusHarness()
    harness.add_app("a", lambda *_: {Order: changer("a")})
    harness.add_app("b", lambda *_: {Order: changer("b")})
    harness.start()
    sent = Order(sku="a", qty=1)
    harness.send(sent)
    assert seen == {"a": [11], "b": [11]}
    assert (sent.qty, sent.tags) == (1, [])


# --- the constructor: the dataclass's, storing past the assignment check ---------------


def test_the_constructor_has_the_dataclass_signature():
    parameters = inspect.signature(Order).parameters
    assert list(parameters) == ["id", "created_at", "correlation_id", "sku", "qty", "price", "note", "tags", "parts"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    assert parameters["sku"].default is inspect.Parameter.empty and parameters["qty"].default == 1
    assert parameters["tags"].annotation == "list[str]"
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'sku'"):
        Order()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'sku_'"):
        Order(sku_="a")  # type: ignore[call-arg]


def test_factories_give_each_message_its_own_value():
    first, second = Order(sku="a"), Order(sku="b")
    first.tags.append("x")
    assert second.tags == [] and first.id != second.id and first.created_at <= second.created_at


def test_positional_and_init_false_fields_as_the_dataclass_makes_them():
    class Line(Message, wire_name="test.assign.Line"):
        sku: str = dataclasses.field(kw_only=False)
        total: int = dataclasses.field(init=False, default=0)
        marks: list[int] = dataclasses.field(init=False, default_factory=list)

    line = Line("a")
    assert (line.sku, line.total, line.marks) == ("a", 0, [])
    assert codec.decode(codec.encode(line)) == line
    with pytest.raises(FieldTypeError, match="Line: field 'sku': expected str, got int 1"):
        Line(1)  # type: ignore[arg-type]
    assert dataclasses.replace(line, sku="b").sku == "b"


def test_a_post_init_of_the_class_runs_after_the_checks_and_its_assignments_are_checked():
    class Priced(Message, wire_name="test.assign.Priced"):
        qty: int
        unit: float
        total: float = 0.0

        def __post_init__(self) -> None:
            super().__post_init__()
            self.total = self.qty * self.unit

    priced = Priced(qty=3, unit=2)
    assert priced.total == 6.0 and type(priced.unit) is float
    with pytest.raises(FieldTypeError, match="Priced: field 'unit': expected float"):
        Priced(qty=3, unit="2")  # type: ignore[arg-type]


def test_an_init_of_the_class_is_kept_and_its_assignments_are_checked():
    class Built(Message, wire_name="test.assign.Built"):
        text: str = ""

        def __init__(self, value: object) -> None:
            self.text = value  # type: ignore[assignment]
            super().__init__()

    assert Built("a b").text == "a b" and len(Built("a").id) == 32
    with pytest.raises(FieldTypeError, match="Built: field 'text': expected str, got int 3"):
        Built(3)
