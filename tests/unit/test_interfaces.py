"""
Every transport, and every part of one that takes a role, provides the interfaces it
claims, method by method: a role's interface is what the code that needs only that role
may rely on.
"""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock
from zope.interface.verify import verifyClass, verifyObject

from scbus.interfaces import (
    IBoundedSetAside,
    IConnectionState,
    IControlPlane,
    IIdleLease,
    IIdleLeases,
    IImmediateAck,
    IImmediateSend,
    IMessageTransport,
    IPauseMarks,
    IPrefetchHold,
    IQueueStatistics,
    IReadyDeliveries,
    ISetAsideStores,
    IReportedSend,
    ITransport,
)
from scbus.transports.amqp.holding import HoldingAreas
from scbus.transports.amqp.settings import parse_amqp_settings
from scbus.transports.amqp.transport import AMQPTransport
from scbus.transports.local import LocalTransport

ROLES = (IMessageTransport, IQueueStatistics, IControlPlane, ISetAsideStores)


def test_the_transport_interface_is_its_roles_and_nothing_else():
    declared = set(ITransport.names(all=True))
    assert declared == set().union(*(set(role.names(all=True)) for role in ROLES))
    for role in ROLES:
        assert ITransport.isOrExtends(role)
    # No method belongs to two roles: each has one home.
    names = [name for role in ROLES for name in role.names()]
    assert len(names) == len(set(names))


def amqp_transport() -> AMQPTransport:
    settings = parse_amqp_settings({"url": "amqp://guest:guest@127.0.0.1:1/"})
    return AMQPTransport(settings, bus_name="interfaces", reactor=MemoryReactorClock())


@pytest.mark.parametrize(
    "make, extra",
    [
        (lambda: LocalTransport(MemoryReactorClock()), (IReadyDeliveries, IImmediateSend, IImmediateAck, IBoundedSetAside)),
        (
            amqp_transport,
            (IReadyDeliveries, IImmediateAck, IReportedSend, IPrefetchHold, IPauseMarks, IIdleLeases, IConnectionState),
        ),
    ],
    ids=["local", "amqp"],
)
def test_each_transport_provides_every_role(make, extra):
    transport = make()
    for interface in (ITransport, *ROLES, *extra):
        assert verifyObject(interface, transport)


def test_the_amqp_holding_areas_are_the_set_aside_role():
    assert verifyClass(ISetAsideStores, HoldingAreas)
    transport = amqp_transport()
    assert verifyObject(ISetAsideStores, transport._holding)


def test_an_amqp_idle_lease_is_the_idle_lease_interface():
    transport = amqp_transport()
    lease = transport.idle_lease("clock", lambda held: None)
    assert verifyObject(IIdleLease, lease)


def test_the_in_memory_transport_has_none_of_the_shared_capabilities():
    # The bus's fallbacks (one process, nothing prefetched, connected while running) are
    # what an in-memory transport gets: it must not claim what it does not do.
    transport = LocalTransport(MemoryReactorClock())
    for capability in (IPrefetchHold, IPauseMarks, IIdleLeases, IConnectionState, IReportedSend):
        assert capability(transport, None) is None, capability


def test_the_core_finds_capabilities_by_interface_not_by_attribute_name():
    # Every optional capability is an interface in scbus/interfaces.py: a transport author
    # reads that file and knows everything the bus may ask. Probing by name would hide one.
    import pathlib
    import re

    import scbus

    root = pathlib.Path(scbus.__file__).parent
    probes = []
    for path in root.rglob("*.py"):
        if "transports" in path.relative_to(root).parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"getattr\([^,]*transport\b", line):
                probes.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert probes == []
