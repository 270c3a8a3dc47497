"""
Route stdlib C{logging} (apps, pika) into C{twisted.logger}, so one log holds everything,
and filter that one log by level, per logger namespace (C{bus.log_level},
C{bus.log_levels}): Twisted events and bridged stdlib records alike.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
)
from twisted.python.components import Componentized

from .capture import FROM_STDLIB

__all__ = [
    "StdlibToTwisted",
    "route_stdlib_logging",
    "level_filter",
    "effective_levels",
    "FilteredLogRoot",
    "DEFAULT_NAMESPACE_LEVELS",
    "twistd_observer",
]

#: pika tells at info about every channel it opens and closes (each ``scbus status``
#: call adds lines to every bus's log), and at warn about each channel the broker closes,
#: including the passive declarations the bus makes on purpose (three on a fresh vhost);
#: the bus reports failures of its own calls in its own words.
DEFAULT_NAMESPACE_LEVELS = {"pika": "warn", "pika.channel": "error"}


_LEVELS = [
    (logging.CRITICAL, LogLevel.critical),
    (logging.ERROR, LogLevel.error),
    (logging.WARNING, LogLevel.warn),
    (logging.INFO, LogLevel.info),
    (0, LogLevel.debug),
]


def _twisted_level(levelno: int) -> LogLevel:
    for threshold, level in _LEVELS:
        if levelno >= threshold:
            return level
    return LogLevel.debug


class StdlibToTwisted(logging.Handler):
    """A stdlib handler that re-emits each record as a Twisted event in its namespace."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) if self.formatter else record.getMessage()
        except Exception as e:
            text = f"{record.msg!r} (unformattable: {e})"
        kwargs = {FROM_STDLIB: True}
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        Logger(namespace=record.name).emit(
            _twisted_level(record.levelno), "{scbus_text}", scbus_text=text, **kwargs
        )


_bridge: StdlibToTwisted | None = None


def effective_levels(namespace_levels: Mapping[str, str] | None = None) -> dict[str, str]:
    """Per-namespace levels: the config's, and the defaults for namespaces it leaves alone."""
    configured = dict(namespace_levels or {})
    defaults = {
        namespace: name
        for namespace, name in DEFAULT_NAMESPACE_LEVELS.items()
        if not any(namespace == c or namespace.startswith(c + ".") for c in configured)
    }
    return {**defaults, **configured}


def route_stdlib_logging(level: str = "info", namespace_levels: Mapping[str, str] | None = None) -> None:
    """Send stdlib records at C{level} (or their namespace's level) to twisted.logger; idempotent."""
    global _bridge
    root = logging.getLogger()
    root.setLevel(_stdlib_level(level))
    for namespace, name in effective_levels(namespace_levels).items():
        logging.getLogger(namespace).setLevel(_stdlib_level(name))
    if _bridge is None:
        _bridge = StdlibToTwisted()
        root.addHandler(_bridge)


def _stdlib_level(name: str) -> int:
    return logging.WARNING if name == "warn" else getattr(logging, name.upper())


def level_filter(level: str, namespace_levels: Mapping[str, str] | None = None) -> LogLevelFilterPredicate:
    """The Twisted filter for C{level}, with a level per namespace (a prefix covers its children)."""
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    for namespace, name in effective_levels(namespace_levels).items():
        predicate.setLogLevelForNamespace(namespace, LogLevel.levelWithName(name))
    return predicate


class FilteredLogRoot(MultiService):
    """
    The top of the service tree under twistd. twistd attaches the tree to its application
    and only then starts logging, with the application's ILogObserver component when it
    has one: so this root hands twistd its own observer (stdout, file or syslog, as its
    options say) behind the level filter. twistd has no other hook before logging begins.
    """

    def __init__(self, child: MultiService, observer: ILogObserver) -> None:
        super().__init__()
        self.observer = observer
        self.bus = getattr(child, "bus", None)
        child.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        if isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.observer)
        super().setServiceParent(parent)


def twistd_observer(twistd_options: Any, predicate: LogLevelFilterPredicate) -> ILogObserver:
    """The observer twistd would make from its own options, behind C{predicate}."""
    from twisted.scripts.twistd import _SomeApplicationRunner

    default = _SomeApplicationRunner.loggerFactory(twistd_options)._getLogObserver()
    return FilteringLogObserver(default, [predicate])
