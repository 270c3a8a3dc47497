"""The tests' private RabbitMQ nodes: scbus.cli.rabbitnode, which `scbus dev-broker` runs too."""

from scbus.cli.rabbitnode import RabbitNode, available, free_port

__all__ = ["RabbitNode", "available", "free_port"]
