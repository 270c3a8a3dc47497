"""
The C{scbus} subcommands that work on a bus from outside it: publish, consume, set-aside
and schema; and dev-broker, a broker to try the AMQP transport with. Each module has one job and an C{add_parser(commands)} that registers it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add every subcommand of this package to C{commands} (argparse subparsers)."""
    from . import consume, devbroker, publish, schema, setaside

    for module in (publish, consume, setaside, schema, devbroker):
        module.add_parser(commands)
