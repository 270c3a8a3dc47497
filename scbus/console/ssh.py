"""The console over SSH: public keys from an authorized_keys file, no passwords."""

from __future__ import annotations

from typing import Any

from twisted.conch.insults import insults
from twisted.cred import portal
from twisted.internet import protocol
from zope.interface import implementer

from ..config import ConsoleConfig
from ..errors import ConfigError
from .shell import ConsoleManhole

__all__ = ["ssh_factory"]


def ssh_factory(namespace: dict[str, Any], config: ConsoleConfig) -> protocol.ServerFactory:
    try:
        from twisted.conch import manhole_ssh
        from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker
        from twisted.conch.ssh import keys
    except ImportError as e:
        raise ConfigError(
            "console", "ssh_port", f"the SSH console needs twisted[conch] installed ({e})"
        ) from None

    authorized = _read_authorized_keys(config.ssh_authorized_keys or "", keys)

    @implementer(IAuthorizedKeysDB)
    class _AnyUserKeys:
        def getAuthorizedKeys(self, username: bytes) -> list[Any]:
            return list(authorized)

    realm = manhole_ssh.TerminalRealm()
    realm.chainedProtocolFactory = lambda: insults.ServerProtocol(ConsoleManhole, namespace)
    factory = manhole_ssh.ConchFactory(portal.Portal(realm, [SSHPublicKeyChecker(_AnyUserKeys())]))
    try:
        host_key = keys.Key.fromFile(config.ssh_host_key)
    except (OSError, keys.BadKeyError) as e:
        raise ConfigError("console", "ssh_host_key", f"cannot load {config.ssh_host_key!r}: {e}") from None
    factory.publicKeys[host_key.sshType()] = host_key.public()
    factory.privateKeys[host_key.sshType()] = host_key
    return factory


def _read_authorized_keys(path: str, keys: Any) -> list[Any]:
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
