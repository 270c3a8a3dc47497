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
    IControlPlane,
    IImmediateAck,
    IImmediateSend,
    IMessageTransport,
    IQueueStatistics,
    IReadyDeliveries,
    ISetAsideStores,
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
        (lambda: LocalTransport(MemoryReactorClock()), (IReadyDeliveries, IImmediateSend, IImmediateAck)),
        (amqp_transport, (IReadyDeliveries, IImmediateAck)),
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
