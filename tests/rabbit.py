"""The tests' private RabbitMQ nodes: scbus.devbroker, which `scbus dev-broker` runs too."""

from scbus.devbroker import RabbitNode, available, free_port

__all__ = ["RabbitNode", "available", "free_port"]
