"""Log levels apply to Twisted events as well as stdlib records, per namespace."""

import logging

import pytest
from twisted.logger import FilteringLogObserver, Logger, LogLevel, LogPublisher

from scbus.logs.bridge import effective_levels, level_filter, route_stdlib_logging


def seen_through(level, namespace_levels, events):
    """Which (namespace, level) events pass a filter made from the config's levels."""
    passed = []
    publisher = LogPublisher(FilteringLogObserver(passed.append, [level_filter(level, namespace_levels)]))
    for namespace, event_level in events:
        Logger(namespace=namespace, observer=publisher).emit(event_level, "x")
    return [(e["log_namespace"], e["log_level"]) for e in passed]


def test_twisted_events_obey_the_bus_level():
    events = [("scbus.mainbus", LogLevel.info), ("scbus.mainbus", LogLevel.error), ("scbus.x", LogLevel.debug)]
    assert seen_through("error", {}, events) == [("scbus.mainbus", LogLevel.error)]
    assert seen_through("info", {}, events) == events[:2]


def test_a_level_per_namespace_covers_its_children():
    events = [("scbus.transports.amqp.transport", LogLevel.debug), ("scbus.mainbus", LogLevel.debug)]
    assert seen_through("info", {"scbus.transports.amqp": "debug"}, events) == events[:1]
    assert seen_through("debug", {"scbus": "warn"}, events) == []


def test_pika_is_at_warn_and_its_channel_closes_at_error_by_default():
    events = [("pika.connection", LogLevel.info), ("pika.channel", LogLevel.warn), ("pika.connection", LogLevel.warn)]
    assert seen_through("info", {}, events) == [("pika.connection", LogLevel.warn)]
    # Naming pika in the config replaces both defaults.
    assert effective_levels({"pika": "info"}) == {"pika": "info"}
    assert seen_through("info", {"pika": "info"}, events) == events


@pytest.fixture
def restore_stdlib_levels():
    saved = {name: logging.getLogger(name).level for name in ("", "pika", "pika.channel")}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def test_stdlib_loggers_get_the_same_levels(restore_stdlib_levels):
    route_stdlib_logging("error", {"scbus.test": "debug"})
    assert logging.getLogger().level == logging.ERROR
    assert logging.getLogger("pika").level == logging.WARNING
    assert logging.getLogger("pika.channel").getEffectiveLevel() == logging.ERROR
    assert logging.getLogger("scbus.test.deeper").getEffectiveLevel() == logging.DEBUG
