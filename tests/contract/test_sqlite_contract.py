"""The transport contract, against SQLiteTransport on a real file and the real reactor."""

import os

from twisted.trial import unittest

from scbus.transports.sqlite import SQLiteSettings, SQLiteTransport

from .transport_contract import TransportContract


class SQLiteTransportContractTests(TransportContract, unittest.TestCase):
    def make_transport(self):
        directory = self.mktemp()
        os.makedirs(directory)
        # The limit the config gives every transport by default (transport.max_message_size).
        transport = SQLiteTransport(SQLiteSettings(path=f"{directory}/scbus.db", max_message_size=1024 * 1024))
        transport.startService()
        self.addCleanup(transport.stopService)
        return transport

    def lose_consumers(self, transport, app_name):
        # What a restart does: every claim of the process goes back to the queue.
        return transport.recover(app_name)
