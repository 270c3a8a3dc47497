"""The console over SSH: public keys from an authorized_keys file, no passwords."""

from __future__ import annotations

import struct
from typing import Any

from twisted.conch import interfaces as iconch
from twisted.conch import manhole_ssh
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker
from twisted.conch.insults import insults
from twisted.conch.ssh import keys
from twisted.cred import portal
from zope.interface import implementer

from ..config import ConsoleConfig
from ..errors import ConfigError
from .shell import ConsoleManhole

__all__ = ["ssh_factory"]


class _Session(manhole_ssh.TerminalSession):
    """
    Conch's terminal session, which raises (a traceback in the log) when the client
    closes its input or resizes its window, and closes the channel without an exit
    status when the operator leaves, so ssh reports a lost connection. Here the end of
    input leaves as Ctrl-D does, a resize reaches the terminal, and leaving sends exit
    status 0 first.
    """

    chained: Any = None

    def openShell(self, proto: Any) -> None:
        avatar = iconch.IConchUser(self.original)
        self.chained = self.chainedProtocolFactory()
        self.transportFactory(proto, self.chained, avatar, self.width, self.height)

        def leave() -> None:
            avatar.conn.sendRequest(proto.session, b"exit-status", struct.pack(">L", 0))
            proto.loseConnection()

        self.chained.transport.loseConnection = leave

    def eofReceived(self) -> None:
        if self.chained is not None:
            self.chained.transport.loseConnection()

    def windowChanged(self, size: tuple[int, int, int, int]) -> None:
        height, width = size[:2]
        if self.chained is not None and self.chained.terminalProtocol is not None:
            self.chained.terminalProtocol.terminalSize(width, height)


def ssh_factory(namespace: dict[str, Any], config: ConsoleConfig) -> manhole_ssh.ConchFactory:
    authorized = _read_authorized_keys(config.ssh_authorized_keys or "")

    @implementer(IAuthorizedKeysDB)
    class _AnyUserKeys:
        def getAuthorizedKeys(self, username: bytes) -> list[Any]:
            return list(authorized)

    def terminal() -> insults.ServerProtocol:
        return insults.ServerProtocol(ConsoleManhole, namespace)

    realm = manhole_ssh.TerminalRealm()
    realm.sessionFactory = _Session
    realm.chainedProtocolFactory = terminal  # type: ignore[assignment]  # Conch types it as the class
    the_portal = portal.Portal(realm, [SSHPublicKeyChecker(_AnyUserKeys())])  # type: ignore[arg-type]
    factory = manhole_ssh.ConchFactory(the_portal)
    try:
        host_key = keys.Key.fromFile(config.ssh_host_key)
    except (OSError, keys.BadKeyError) as e:
        raise ConfigError("console", "ssh_host_key", f"cannot load {config.ssh_host_key!r}: {e}") from None
    factory.publicKeys[host_key.sshType()] = host_key.public()
    factory.privateKeys[host_key.sshType()] = host_key
    return factory


def _read_authorized_keys(path: str) -> list[Any]:
    found = []
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ConfigError("console", "ssh_authorized_keys", f"cannot read {path!r}: {e.strerror}") from None
    for line in lines:
        line = line.strip()
        if line and not line.startswith(b"#"):
            try:
                found.append(keys.Key.fromString(line))
            except keys.BadKeyError as e:
                raise ConfigError("console", "ssh_authorized_keys", f"bad key in {path!r}: {e}") from None
    return found
