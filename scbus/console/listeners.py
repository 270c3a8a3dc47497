"""
The console's ports, as one service under the bus: which listeners the config asks for
(scbus/listening.py reports a port that cannot be had in one line).
"""

from __future__ import annotations

import os

from twisted.application import service
from twisted.logger import Logger

from ..config import ConsoleConfig
from ..errors import ConfigError
from ..listening import Listener
from ..mainbus import MainMessageBus
from ..reactors import IBusReactor, running_reactor
from .auth import PasswordHashChecker, read_passwd_file
from .namespace import make_namespace
from .telnet import telnet_factory

__all__ = ["Listener", "make_console_service"]

log = Logger()


def make_console_service(bus: MainMessageBus, config: ConsoleConfig, reactor: IBusReactor | None = None) -> service.MultiService:
    """The console listeners the config asks for, as one service."""
    if reactor is None:
        reactor = running_reactor()
    console = service.MultiService()
    console.setName("console")
    users = dict(config.users)
    if config.passwd_file:
        if not users and not os.path.exists(config.passwd_file):
            log.warn(
                "console not started: {path} does not exist; create it with "
                "'scbus hash-password --write {path} --user admin' and restart",
                path=config.passwd_file,
            )
            return console
        users.update(read_passwd_file(config.passwd_file))
    namespace = make_namespace(bus)
    if config.telnet_port is not None:
        telnet = telnet_factory(namespace, PasswordHashChecker(users), reactor)
        Listener(
            "console.telnet_port", config.telnet_port, config.interface, telnet, reactor,
            announce="console: telnet {host} {port} to log in",
        ).setServiceParent(console)
    if config.ssh_port is not None:
        try:
            from .ssh import ssh_factory
        except ImportError as e:
            raise ConfigError(
                "console", "ssh_port", f"the SSH console needs twisted[conch] installed ({e})"
            ) from None
        ssh = ssh_factory(namespace, config)
        Listener(
            "console.ssh_port", config.ssh_port, config.interface, ssh, reactor,
            announce="console: ssh -p {port} USER@{host} to log in",
        ).setServiceParent(console)
    return console
