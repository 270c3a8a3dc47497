"""
The operator's console: Twisted's manhole (a Python prompt inside the running bus) over
telnet, and over SSH when configured.

It is code execution in the bus process, so it always asks for credentials (password
hashes from the config or a passwd-format file; SSH keys for SSH) and listens on
127.0.0.1 unless the config explicitly allows another address.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from twisted.application import service, strports
from twisted.conch import manhole, telnet
from twisted.conch.insults import insults
from twisted.cred import credentials, error, portal
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import protocol
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from .config import ConsoleConfig
from .control import ago, assess, render, table
from .errors import ConfigError
from .mainbus import AppStatus, MainMessageBus
from .message import HeartbeatMessage, Message, registered_types
from .passwords import is_password_hash, verify_password

__all__ = ["PasswordHashChecker", "make_namespace", "make_console_service", "read_passwd_file"]

log = Logger()


# --- authentication -----------------------------------------------------------------------


def read_passwd_file(path: str) -> dict[str, str]:
    """C{user:hash} lines (passwd format; blank lines and C{#} comments ignored)."""
    users: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ConfigError(path, None, f"cannot read the console passwd file: {e.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, stored = line.partition(":")
        stored = stored.split(":", 1)[0]
        if not sep or not user or not is_password_hash(stored):
            raise ConfigError(
                path, f"line {number}",
                "expected 'user:HASH' with a hash from 'scbus hash-password'",
            )
        users[user] = stored
    return users


@implementer(ICredentialsChecker)
class PasswordHashChecker:
    """
    Checks user names and passwords against stored hashes, in a thread: a slow hash must
    not stall the bus, and an unknown user costs the same time as a wrong password.
    """

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, users: dict[str, str], verify_in: Callable[..., Deferred[bool]] = deferToThread):
        self._users = dict(users)
        self._verify_in = verify_in

    def requestAvatarId(self, creds: credentials.IUsernamePassword) -> Deferred[bytes]:
        username = creds.username.decode("utf-8", "replace") if isinstance(
            creds.username, bytes
        ) else creds.username
        stored = self._users.get(username)
        try:
            d = self._verify_in(verify_password, creds.password, stored)
        except Exception:
            return fail(error.UnauthorizedLogin())
        return d.addCallback(self._verdict, username)

    @staticmethod
    def _verdict(ok: bool, username: str) -> bytes:
        if not ok:
            log.warn("console: login refused for user {user!r}", user=username)
            raise error.UnauthorizedLogin()
        log.info("console: {user!r} logged in", user=username)
        return username.encode("utf-8")


class _TelnetBootstrap(telnet.TelnetBootstrapProtocol):
    """
    Twisted's bootstrap, minus the critical-level traceback it logs whenever a client
    declines an option (line mode, window size): plain clients do, and the manhole works.
    """

    def connectionMade(self) -> None:
        transport = self.transport
        transport.negotiationMap[telnet.NAWS] = self.telnet_NAWS
        transport.negotiationMap[telnet.LINEMODE] = self.telnet_LINEMODE
        for option in (telnet.LINEMODE, telnet.NAWS, telnet.SGA):
            transport.do(option).addErrback(self._declined, option)
        transport.will(telnet.ECHO).addErrback(self._declined, telnet.ECHO)
        self.protocol = self.protocolFactory(*self.protocolArgs, **self.protocolKwArgs)
        factory = getattr(self, "factory", None)
        if factory is not None:
            self.protocol.factory = factory
        self.protocol.makeConnection(self)

    @staticmethod
    def _declined(failure: Any, option: bytes) -> None:
        failure.trap(telnet.OptionRefused, telnet.AlreadyNegotiating, telnet.AlreadyEnabled)
        log.debug("console: telnet client declined option {option!r}", option=option)


@implementer(portal.IRealm)
class _TelnetRealm:
    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace

    def requestAvatar(self, avatar_id: bytes, mind: Any, *interfaces: Any) -> Any:
        if telnet.ITelnetProtocol in interfaces:
            proto = _TelnetBootstrap(
                insults.ServerProtocol, manhole.ColoredManhole, self.namespace
            )
            return telnet.ITelnetProtocol, proto, lambda: None
        raise NotImplementedError(interfaces)


# --- what the operator gets ---------------------------------------------------------------


def _settled(d: Deferred[Any]) -> Any:
    """The result now if the Deferred has fired (the in-memory transport), else the Deferred."""
    result: list[Any] = []
    d.addBoth(result.append)
    if result:
        outcome = result[0]
        if hasattr(outcome, "raiseException"):
            outcome.raiseException()
        return outcome
    return d


class StatusTable(list):
    """A list of L{AppStatus} that prints as a table in the console."""

    def __repr__(self) -> str:
        now = time.time()
        header = ("app", "handled", "errors", "in flight", "queued", "redelivered", "last handled", "paused")
        rows = [header]
        for s in self:
            rows.append(
                (
                    s.name,
                    str(s.handled),
                    str(s.errors),
                    f"{s.in_flight}/{s.max_in_flight}",
                    "?" if s.queued is None else str(s.queued),
                    str(s.redelivered),
                    ago(s.last_handled_at, now),
                    "yes" if s.paused else "no",
                )
            )
        return "\n".join(table(rows))


class HealthView:
    """What processes() found, printed as the same tables as 'scbus status'."""

    def __init__(self, health: Any) -> None:
        self.health = health

    def __repr__(self) -> str:
        return render(self.health)


class SetAsideList(list):
    def __repr__(self) -> str:
        if not self:
            return "(none)"
        return "\n".join(repr(entry) for entry in self)


HELP = """\
scbus console: Python inside the running bus.
  status()                 one line per app: handled, errors, in flight, queued, ...
  app_status('name')       one app's full status
  send(msg)                send a message, e.g. send(messages['apps.clock.Tick'](count=1))
  pause('name'), resume('name')
  unrouted(), dead_letters()   messages set aside, with ids and reasons
  replay('unrouted'|'dead', id)  publish a set-aside message again
  heartbeat(app=None)      send a HeartbeatMessage through app queues (measures lag)
  processes()              every live bus process and its apps (the control plane)
  lag(app=None)            send heartbeats, then show each app's lag (time in its queue)
  messages                 wire name -> message class
  bus, transport, apps     the live objects
"""


def make_namespace(bus: MainMessageBus) -> dict[str, Any]:
    """The names an operator finds at the console prompt."""
    transport = bus.transport

    def status() -> Any:
        return _settled(bus.status().addCallback(StatusTable))

    def app_status(name: str) -> Any:
        bus._app(name)
        return _settled(
            bus.status().addCallback(lambda all_: next(s for s in all_ if s.name == name))
        )

    def send(message: Message) -> Any:
        if not isinstance(message, Message):
            raise TypeError(f"send() takes a Message, not {type(message).__name__}")
        return _settled(
            bus.send(message).addCallback(lambda _: f"sent {message!r} as {message.id}")
        )

    def unrouted() -> Any:
        return _settled(transport.set_aside("unrouted").addCallback(SetAsideList))

    def dead_letters() -> Any:
        return _settled(transport.set_aside("dead").addCallback(SetAsideList))

    def replay(kind: str, entry_id: str) -> Any:
        return _settled(
            transport.replay(kind, entry_id).addCallback(
                lambda found: f"replayed {entry_id}" if found else f"no {kind} message {entry_id}"
            )
        )

    def heartbeat(app: str | None = None) -> Any:
        return send(HeartbeatMessage(app_name=app))

    def processes(timeout: float = 1.0) -> Any:
        """Every live bus process (over the control plane) and its apps."""
        expected = {name: 1 for name in bus.app_names()}
        return transport.ask({"op": "status"}, timeout).addCallback(
            lambda answers: HealthView(assess(answers, expected))
        )

    def lag(app: str | None = None, wait: float = 2.0) -> Any:
        """Send heartbeats through the app queues; after C{wait} s show each app's lag."""
        bus.send(HeartbeatMessage(app_name=app))
        return deferLater(bus.clock, wait, lambda: None).addCallback(lambda _: processes())

    class _Help:
        def __repr__(self) -> str:
            return HELP

        def __call__(self, *args: Any) -> Any:
            if args:
                import pydoc

                return pydoc.help(*args)
            return self

    return {
        "bus": bus,
        "transport": transport,
        "apps": bus.apps,
        "messages": registered_types(),
        "status": status,
        "app_status": app_status,
        "send": send,
        "pause": bus.pause,
        "resume": bus.resume,
        "unrouted": unrouted,
        "dead_letters": dead_letters,
        "replay": replay,
        "heartbeat": heartbeat,
        "processes": processes,
        "lag": lag,
        "help": _Help(),
        "AppStatus": AppStatus,
    }


# --- the listening services ---------------------------------------------------------------


def _telnet_factory(namespace: dict[str, Any], checker: ICredentialsChecker) -> protocol.ServerFactory:
    the_portal = portal.Portal(_TelnetRealm(namespace), [checker])
    factory = protocol.ServerFactory()
    factory.protocol = lambda: telnet.TelnetTransport(telnet.AuthenticatingTelnetProtocol, the_portal)
    return factory


def _ssh_factory(namespace: dict[str, Any], config: ConsoleConfig) -> protocol.ServerFactory:
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
    realm.chainedProtocolFactory = lambda: insults.ServerProtocol(manhole.ColoredManhole, namespace)
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


def make_console_service(bus: MainMessageBus, config: ConsoleConfig) -> service.MultiService:
    """The console listeners the config asks for, as one service."""
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
    interface = config.interface.replace(":", "\\:")
    if config.telnet_port is not None:
        factory = _telnet_factory(namespace, PasswordHashChecker(users))
        strports.service(f"tcp:{config.telnet_port}:interface={interface}", factory).setServiceParent(console)
    if config.ssh_port is not None:
        factory = _ssh_factory(namespace, config)
        strports.service(f"tcp:{config.ssh_port}:interface={interface}", factory).setServiceParent(console)
    return console
