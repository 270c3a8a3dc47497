"""
What the subcommands share: loading the config with every app's message classes
registered (the builders are imported and called as check-config does), and one-line
refusals with the exit codes the commands document.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ..config import Config, build_subscriptions, load_config
from ..errors import ConfigError, UnknownMessageType
from ..message import HeartbeatMessage, Message, lookup, registered_types

__all__ = ["Refused", "load_bus", "message_type", "say", "EXIT_REFUSED", "EXIT_CONFIG", "EXIT_BROKER"]

#: A bad value or a refused action; the config is bad; the broker (or bus) cannot be reached.
EXIT_REFUSED, EXIT_CONFIG, EXIT_BROKER = 1, 2, 3


class Refused(Exception):
    """A one-line reason to stop, and the exit status that goes with it."""

    def __init__(self, text: str, status: int = EXIT_REFUSED) -> None:
        super().__init__(text)
        self.status = status


def say(text: str) -> None:
    print(f"scbus: {text}", file=sys.stderr)


def load_bus(path: str) -> tuple[Config, dict[str, list[type[Message]]]]:
    """
    The config, and each enabled app's subscribed message classes (plus the heartbeats the
    bus answers for it). Importing the builders registers every type the apps know.
    """
    try:
        config = load_config(path)
        apps = {}
        for app in config.apps.values():
            if app.enabled:
                subscriptions = build_subscriptions(config, app)
                subscribed = [k for k in subscriptions if isinstance(k, type) and issubclass(k, Message)]
                apps[app.name] = [*subscribed, HeartbeatMessage]
    except ConfigError as e:
        raise Refused(str(e), EXIT_CONFIG) from None
    return config, apps


def message_type(name: str) -> type[Message]:
    """The registered class of wire type C{name}, or a refusal listing the known ones."""
    try:
        cls = lookup(name)
    except UnknownMessageType:
        known = sorted(n for n in registered_types() if n != Message.wire_name)
        raise Refused(f"unknown message type {name!r} (known: {', '.join(known)})") from None
    if cls is Message:
        raise Refused("scbus.Message is the base of every type, not a type to publish")
    return cls


def run_refusing(action: Any, args: Any) -> int:
    """Run C{action(args)}; a L{Refused} becomes its one line on stderr and its status."""
    try:
        return action(args)
    except Refused as e:
        say(str(e))
        return e.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader (head, less) went away: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
