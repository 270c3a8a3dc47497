"""An app for the client tests: it records every Order it handles in a file and ships it."""

import json

from scbus import Message


class Order(Message, wire_name="client_test.Order"):
    item: str
    quantity: int
    note: str | None = None


class Shipped(Message, wire_name="client_test.Shipped"):
    item: str
    quantity: int


class Unwanted(Message, wire_name="client_test.Unwanted"):
    """Nobody subscribes to it: it lands in scbus.unrouted."""

    n: int


def make_shipping(name, root_config, config):
    path = config["path"]

    def on_order(order):
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"id": order.id, "item": order.item, "quantity": order.quantity}) + "\n")
        return Shipped(item=order.item, quantity=order.quantity)

    return {Order: on_order}
