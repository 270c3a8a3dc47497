"""
``scbus schema``: the JSON Schema of every registered type's envelope, or (with
``--asyncapi``) an AsyncAPI 3.0 document of the bus, for producers in other languages.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import __version__
from ..schema import asyncapi_document, json_schema
from .common import load_bus, run_refusing

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "schema", help="JSON Schema (or AsyncAPI) of the bus's messages",
        description="Print a JSON Schema (2020-12) of every registered message type's envelope, "
        "or with --asyncapi an AsyncAPI 3.0 document of the bus.",
    )
    p.add_argument("--config", required=True)
    p.add_argument("--asyncapi", action="store_true", help="an AsyncAPI 3.0 document instead")
    p.set_defaults(run=lambda args: run_refusing(run, args))


def run(args: argparse.Namespace) -> int:
    config, apps = load_bus(args.config)
    if args.asyncapi:
        document = asyncapi_document(
            bus_name=config.bus.name, version=__version__, apps=apps, amqp=config.transport.amqp,
        )
    else:
        document = json_schema(title=f"{config.bus.name} messages")
    print(json.dumps(document, indent=2, ensure_ascii=False))
    return 0
