"""The transport contract, against LocalTransport on the real reactor."""

from twisted.trial import unittest

from scbus.transports.local import LocalTransport

from .transport_contract import TransportContract


class LocalTransportContractTests(TransportContract, unittest.TestCase):
    def make_transport(self):
        transport = LocalTransport()
        transport.startService()
        self.addCleanup(transport.stopService)
        return transport

    def lose_consumers(self, transport, app_name):
        transport.recover(app_name)
