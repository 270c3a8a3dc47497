"""The transport contract, against LocalTransport on the real reactor."""

from twisted.trial import unittest

from scbus.transports.local import LocalTransport

from .trace_carrier_contract import TraceCarrierContract
from .transport_contract import TransportContract


class LocalTransportContractTests(TransportContract, TraceCarrierContract, unittest.TestCase):
    def make_transport(self):
        # The limit the config gives both transports by default (transport.max_message_size).
        transport = LocalTransport(max_message_size=1024 * 1024)
        transport.startService()
        self.addCleanup(transport.stopService)
        return transport

    def lose_consumers(self, transport, app_name):
        transport.recover(app_name)
