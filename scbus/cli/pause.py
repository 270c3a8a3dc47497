"""
C{scbus pause APP} and C{scbus resume APP}: every process that runs the app, now and
later. The pause is kept on the broker first (a process that starts while it is there
starts paused), then announced over the control plane to the processes running now.
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import sys
from collections.abc import Callable
from typing import Any
from .argtypes import seconds

__all__ = ["add_commands"]


def add_commands(
    commands: Any,
    control_client: Callable[[argparse.Namespace], Any],
    by_transport: Callable[[str, Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]],
) -> None:
    """C{by_transport(verb, over_broker)}: the command, reaching the bus the way its transport allows."""
    for verb, help_text in (
        ("pause", "pause an app in every process (and in processes that start later)"),
        ("resume", "resume an app in every process"),
    ):
        parser = commands.add_parser(verb, help=help_text)
        parser.add_argument("app", help="the app's name in the config")
        parser.add_argument("--config", required=True, help="the bus config (to find the broker and the apps)")
        parser.add_argument("--timeout", type=seconds, default=2.0, help="seconds to wait for answers")
        over_broker = functools.partial(_run, paused=verb == "pause", control_client=control_client)
        parser.set_defaults(run=by_transport(verb, over_broker))


def _run(args: argparse.Namespace, paused: bool, control_client: Callable[[argparse.Namespace], Any]) -> int:
    made = control_client(args)
    if isinstance(made, int):
        return made
    config, client = made
    try:
        if args.app not in config.apps:
            print(
                f"scbus: {config.source}: no app named {args.app!r} (apps: {', '.join(sorted(config.apps))})",
                file=sys.stderr,
            )
            return 2
        client.mark_paused(args.app, paused, by=f"scbus pause@{socket.gethostname()}:{os.getpid()}")
        answers = [answer for _, answer in client.ask({"op": "pause" if paused else "resume", "app": args.app}, args.timeout)]
    finally:
        client.close()
    from ..pausing import summary  # here: every scbus command imports this module, without Twisted

    print(summary(args.app, paused, answers))
    return 0
