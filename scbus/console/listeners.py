"""
The console's ports, as one service under the bus: which listeners the config asks for,
and a port that cannot be had reported in one line.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application import service
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from ..config import ConsoleConfig
from ..mainbus import MainMessageBus
from .auth import PasswordHashChecker, read_passwd_file
from .namespace import make_namespace
from .ssh import ssh_factory
from .telnet import telnet_factory

__all__ = ["Listener", "make_console_service"]

log = Logger()


class Listener(service.Service):
    """
    One console port. A port that cannot be had is one line in the log, and under twistd
    (which listens before it runs the reactor) the process exits with status 2.
    """

    def __init__(self, key: str, port: int, interface: str, factory: protocol.ServerFactory, reactor: Any) -> None:
        self.key = key
        self.port = port
        self.interface = interface
        self.factory = factory
        self._reactor = reactor
        self._listening: Any = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if not self._listen():
            raise SystemExit(2)

    def startService(self) -> None:
        super().startService()
        if self._listening is None:
            self._listen()

    def _listen(self) -> bool:
        try:
            self._listening = self._reactor.listenTCP(self.port, self.factory, interface=self.interface)
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
            log.error(
                "scbus: console.{key}: cannot listen on {interface} port {port}: {reason}",
                key=self.key, interface=self.interface, port=self.port, reason=reason,
            )
            return False
        return True

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        listening, self._listening = self._listening, None
        return listening.stopListening() if listening is not None else None


def make_console_service(bus: MainMessageBus, config: ConsoleConfig, reactor: Any = None) -> service.MultiService:
    """The console listeners the config asks for, as one service."""
    if reactor is None:
        from twisted.internet import reactor
    console = service.MultiService()
    console.setName("console")
    users = dict(config.users)
    if config.passwd_file:
        if not users and not os.path.exists(config.passwd_file):
            log.warn(
                "console not started: {path} does not exist; create it with "
                "'echo \"admin:$(scbus hash-password)\" > {path}'",
                path=config.passwd_file,
            )
            return console
        users.update(read_passwd_file(config.passwd_file))
    namespace = make_namespace(bus)
    if config.telnet_port is not None:
        factory = telnet_factory(namespace, PasswordHashChecker(users), reactor)
        Listener("telnet_port", config.telnet_port, config.interface, factory, reactor).setServiceParent(console)
    if config.ssh_port is not None:
        factory = ssh_factory(namespace, config)
        Listener("ssh_port", config.ssh_port, config.interface, factory, reactor).setServiceParent(console)
    return console
