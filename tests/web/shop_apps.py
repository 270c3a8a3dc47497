"""Apps for the HTTP end-to-end tests: a shop that fails on one item, and a mailroom."""

from scbus import Message


class Order(Message, wire_name="test.shop.Order"):
    item: str
    quantity: int = 1


class Shipped(Message, wire_name="test.shop.Shipped"):
    item: str


def make_shop(name, root, config):
    def on_order(order):
        if order.item == "bad":
            raise ValueError("no such item")
        return Shipped(item=order.item)

    return {Order: on_order}


def make_mailroom(name, root, config):
    return {Shipped: lambda msg: None}
