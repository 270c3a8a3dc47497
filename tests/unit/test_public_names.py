"""
The public surface, pinned: a name added to or dropped from a public module is a
decision, made here, not a side effect of moving code (as klein's test_exports does).
Everything outside these modules is the bus's own and free to change.
"""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest

import scbus

PUBLIC = {
    "scbus": {
        "Message", "AppErrorOccurredMessage", "HeartbeatMessage", "HeartbeatResponseMessage",
        "ApplicationMessageBus", "MainMessageBus", "ScbusError", "ConfigError", "DecodeError",
        "EncodeError", "MalformedMessage", "MessageTooLarge", "UnknownMessageType", "MissingField",
        "FieldTypeError", "TransportError",
    },
    "scbus.interfaces": {
        "ITransport", "IMessageTransport", "IQueueStatistics", "IControlPlane", "ISetAsideStores",
        "IDelivery", "ISetAside", "IReadyDeliveries", "IImmediateSend", "IImmediateAck", "IReportedSend",
        "IPrefetchHold", "IPauseMarks", "IIdleLease", "IIdleLeases", "IConnectionState", "IBoundedSetAside",
        "ITransactionalSettle",
        "ITraceCarrier",
    },
    "scbus.tracing": {"BusTracing", "MODES", "SCBUS_SYSTEM", "tracing_wanted"},
    "scbus.testing": {"BusHarness", "ClockEventLoop", "SynchronousThreadPool", "ThreadClock", "result_of", "run_handler"},
    "scbus.testing.amqp": {"FakeChannel", "FakeConnection", "FakeConsumer", "connected_transport"},
    "scbus.client": {
        "BrokerUnreachable", "PublishRefused", "PublishReturned", "Publisher", "TwistedPublisher",
        "connect_blocking", "settings_from_url",
    },
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_each_public_module_exports_exactly_its_names(name):
    module = importlib.import_module(name)
    assert set(module.__all__) == PUBLIC[name]
    for exported in module.__all__:
        assert getattr(module, exported) is not None


def _layout() -> str:
    readme = (pathlib.Path(scbus.__file__).parent.parent / "README.md").read_text()
    return readme.split("## Layout", 1)[1].split("\n## ", 1)[0]


def test_the_readme_layout_names_every_part_of_the_top_level_and_nothing_gone():
    # The README's Layout is how a newcomer finds a part by its name: it must name every
    # module and package at the top of scbus/, and every path it names must exist.
    root = pathlib.Path(scbus.__file__).parent
    layout = _layout()
    named = set(re.findall(r"^\s{4}(scbus/[\w/.]+)", layout, re.M))
    parts = {
        f"scbus/{p.name}" + ("/" if p.is_dir() else "")
        for p in root.iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert parts - named == set(), "missing from the README's Layout"
    for path in named:
        assert (root.parent / path).exists(), f"the README's Layout names {path}, which is gone"
