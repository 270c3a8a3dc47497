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

from twisted.application import service
from twisted.conch import manhole, telnet
from twisted.conch.insults import insults
from twisted.cred import credentials, error, portal
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import protocol
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import CannotListenError, ConnectionClosed
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
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


#: Failed logins allowed on one connection before it is closed.
MAX_LOGIN_ATTEMPTS = 3
#: After a failed login the answer waits this long, doubled for each recent failure from
#: the same address (up to LOGIN_DELAY_MAX); failures older than LOGIN_FORGET_AFTER count
#: no more, and a successful login clears them.
LOGIN_DELAY = 0.5
LOGIN_DELAY_MAX = 30.0
LOGIN_FORGET_AFTER = 900.0
#: Addresses remembered at once (the oldest is forgotten first): a bound on memory.
LOGIN_SOURCES_KEPT = 10_000


class LoginGuard:
    """
    Failed logins per source address, and how long the next answer to that address
    waits: guessing gets slower with every failure, across connections.
    """

    def __init__(
        self,
        clock: Any,
        delay: float = LOGIN_DELAY,
        max_delay: float = LOGIN_DELAY_MAX,
        forget_after: float = LOGIN_FORGET_AFTER,
        sources_kept: int = LOGIN_SOURCES_KEPT,
    ) -> None:
        self._clock = clock
        self._delay = delay
        self._max_delay = max_delay
        self._forget_after = forget_after
        self._sources_kept = sources_kept
        self._failures: dict[str, tuple[int, float]] = {}

    def failures(self, source: str) -> int:
        count, last = self._failures.get(source, (0, 0.0))
        if count and self._clock.seconds() - last > self._forget_after:
            del self._failures[source]
            return 0
        return count

    def failed(self, source: str) -> float:
        """Count a failure; the seconds to wait before answering it."""
        count = self.failures(source) + 1
        self._failures.pop(source, None)
        self._failures[source] = (count, self._clock.seconds())
        while len(self._failures) > self._sources_kept:
            del self._failures[next(iter(self._failures))]
        return min(self._max_delay, self._delay * 2 ** (count - 1))

    def succeeded(self, source: str) -> None:
        self._failures.pop(source, None)


def _negotiation_over(failure: Failure, option: bytes) -> None:
    """A client may refuse an option, never answer, or leave while asked: none is an error."""
    failure.trap(telnet.NegotiationError, ConnectionClosed)
    log.debug("console: telnet option {option!r} not agreed", option=option)


class _Login(telnet.AuthenticatingTelnetProtocol):
    """
    Asks for a user name and password; a failed login is answered only after the source's
    back-off delay, and the connection is closed after C{max_attempts} failures. It works
    with clients that do not negotiate (C{nc}): the password prompt does not wait for
    their answer about echo.
    """

    def __init__(self, the_portal: portal.Portal, guard: LoginGuard, clock: Any, max_attempts: int) -> None:
        super().__init__(the_portal)
        self._guard = guard
        self._clock = clock
        self._max_attempts = max_attempts
        self._attempts = 0
        self._answer: Any = None
        self._source = "?"
        self._gone = False

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self._source = getattr(peer, "host", str(peer))
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if self.protocol is None and (_CTRL_D in data or _CTRL_C in data):
            self.transport.loseConnection()  # Ctrl-D or Ctrl-C at the login prompts: leave
            return
        super().dataReceived(data)

    def telnet_User(self, line: bytes) -> str:
        self.username = line.rstrip(b"\r")
        self.transport.will(telnet.ECHO).addErrback(_negotiation_over, telnet.ECHO)
        self.transport.write(b"Password: ")
        return "Password"

    def telnet_Password(self, line: bytes) -> str:
        username, password = self.username, line.rstrip(b"\r")
        del self.username
        self.transport.wont(telnet.ECHO).addErrback(_negotiation_over, telnet.ECHO)
        d = self.portal.login(credentials.UsernamePassword(username, password), None, telnet.ITelnetProtocol)
        d.addCallbacks(self._cbLogin, self._ebLogin)
        return "Discard"

    def _cbLogin(self, ial: Any) -> None:
        if self._gone:  # left while the password was checked
            ial[2]()
            return
        self._guard.succeeded(self._source)
        super()._cbLogin(ial)

    def _ebLogin(self, failure: Failure) -> None:
        failure.trap(error.UnauthorizedLogin, error.UnhandledCredentials)
        self._attempts += 1
        delay = self._guard.failed(self._source)
        log.warn(
            "console: failed login {attempt} of {allowed} from {source}; next answer in {delay:.1f} s",
            attempt=self._attempts, allowed=self._max_attempts, source=self._source, delay=delay,
        )
        self._answer = self._clock.callLater(delay, self._answer_failure)

    def _answer_failure(self) -> None:
        self._answer = None
        if self._attempts >= self._max_attempts:
            log.warn("console: {source} disconnected after {n} failed logins", source=self._source, n=self._attempts)
            self.transport.write(b"\r\nAuthentication failed; too many attempts\r\n")
            self.transport.loseConnection()
            return
        self.transport.write(b"\r\nAuthentication failed\r\nUsername: ")
        self.state = "User"

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._gone = True
        if self._answer is not None and self._answer.active():
            self._answer.cancel()
        self._answer = None
        super().connectionLost(reason)


_CTRL_C, _CTRL_D = b"\x03", b"\x04"
_IAC = telnet.IAC[0]
#: Telnet commands that Twisted's parser does not know (it raises on them), as the keys a
#: person pressed: Debian's telnet sends Ctrl-D as IAC EOF and Ctrl-C as IAC IP or ABORT
#: once line mode is on.
_COMMAND_KEYS = {
    telnet.LINEMODE_EOF[0]: _CTRL_D,
    telnet.IP[0]: _CTRL_C,
    238: _CTRL_C,  # ABORT
    237: b"",  # SUSP: nothing to suspend
}


class _ConsoleTelnet(telnet.TelnetTransport):
    """Twisted's telnet transport that understands the commands real clients send."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._after_iac = False

    def dataReceived(self, data: bytes) -> None:
        if self._after_iac or telnet.IAC in data:
            data = self._translate(data)
        try:
            super().dataReceived(data)
        except ValueError as e:  # a command byte the parser cannot place
            log.warn("console: closing a telnet connection that sent {what}", what=e.args)
            self.transport.loseConnection()

    def _translate(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            if self._after_iac:
                self._after_iac = False
                if byte in _COMMAND_KEYS:
                    out += _COMMAND_KEYS[byte]
                else:
                    out += bytes((_IAC, byte))
            elif byte == _IAC:
                self._after_iac = True
            else:
                out.append(byte)
        return bytes(out)


class _TelnetBootstrap(telnet.TelnetBootstrapProtocol):
    """
    Twisted's bootstrap, minus the critical-level traceback it logs whenever a client
    declines an option (line mode, window size) or leaves while one is asked: plain
    clients do, and the manhole works.
    """

    def connectionMade(self) -> None:
        transport = self.transport
        transport.negotiationMap[telnet.NAWS] = self.telnet_NAWS
        transport.negotiationMap[telnet.LINEMODE] = self.telnet_LINEMODE
        for option in (telnet.LINEMODE, telnet.NAWS, telnet.SGA):
            transport.do(option).addErrback(_negotiation_over, option)
        transport.will(telnet.ECHO).addErrback(_negotiation_over, telnet.ECHO)
        self.protocol = self.protocolFactory(*self.protocolArgs, **self.protocolKwArgs)
        factory = getattr(self, "factory", None)
        if factory is not None:
            self.protocol.factory = factory
        self.protocol.makeConnection(self)


class _Interpreter(manhole.ManholeInterpreter):
    """C{exit()} and C{quit()} end this session (and log nothing), not the bus."""

    def runcode(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().runcode(*args, **kwargs)
        except SystemExit:
            self.handler.terminal.loseConnection()


class ConsoleManhole(manhole.ColoredManhole):
    """The manhole with L{_Interpreter}."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.interpreter = _Interpreter(self, self.namespace)


@implementer(portal.IRealm)
class _TelnetRealm:
    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace

    def requestAvatar(self, avatar_id: bytes, mind: Any, *interfaces: Any) -> Any:
        if telnet.ITelnetProtocol in interfaces:
            proto = _TelnetBootstrap(insults.ServerProtocol, ConsoleManhole, self.namespace)
            return telnet.ITelnetProtocol, proto, lambda: None
        raise NotImplementedError(interfaces)


# --- what the operator gets ---------------------------------------------------------------


def _settled(d: Deferred[Any]) -> Any:
    """
    The result now if the Deferred has fired (the in-memory transport), else the Deferred
    itself, still carrying its result for the manhole to print when it comes (RabbitMQ).
    """
    fired: list[Any] = []
    waiting = False

    def now_or_later(result: Any) -> Any:
        if waiting:
            return result
        fired.append(result)
        return None  # taken here: nothing is left unhandled in this Deferred

    d.addBoth(now_or_later)
    if not fired:
        waiting = True
        return d
    outcome = fired[0]
    if isinstance(outcome, Failure):
        outcome.raiseException()
    return outcome


class Reply(str):
    """A console answer that prints as plain text (no quotes), now or when a Deferred fires."""

    def __repr__(self) -> str:
        return str(self)


def age(moment: float | None, now: float) -> str:
    """How long ago, as a person reads it: '0.4 s ago', '3 s ago', '5 min ago'."""
    if moment is None:
        return "never"
    seconds = max(0.0, now - moment)
    if seconds < 10:
        return f"{seconds:.1f} s ago"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _seconds(interval: str) -> str:
    """'0:00:00.500000' (a timedelta as text) as '0.5 s'."""
    hours, _, rest = interval.rpartition(":")
    hours, _, minutes = hours.rpartition(":")
    try:
        total = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(rest)
    except ValueError:
        return interval
    return f"{total:g} s"


def size(n: int) -> str:
    return f"{n} bytes" if n < 10_000 else f"{n / 1024:.0f} KiB"


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


class AppStatusView:
    """One app's L{AppStatus} (as C{.status}, and its fields as attributes), printed as a block with ages."""

    def __init__(self, status: AppStatus, now: float) -> None:
        self.status = status
        self._now = now

    def __getattr__(self, name: str) -> Any:
        return getattr(self.status, name)

    def __repr__(self) -> str:
        s, now = self.status, self._now
        oldest = "" if s.oldest_in_flight_age is None else f" (oldest {s.oldest_in_flight_age:.1f} s)"
        rows = [
            ("handled", str(s.handled)),
            ("errors", str(s.errors)),
            ("in flight", f"{s.in_flight}/{s.max_in_flight}{oldest}"),
            ("queued", "?" if s.queued is None else str(s.queued)),
            ("prefetched", str(s.buffered)),
            ("acknowledged", str(s.acked)),
            ("redelivered", str(s.redelivered)),
            ("send failures", str(s.send_failures)),
            ("last handled", age(s.last_handled_at, now)),
            ("paused", "yes" if s.paused else "no"),
            ("threads", str(s.threads) if s.threads else "none (handlers run in the reactor)"),
        ]
        for interval, last_run in s.idle.items():
            rows.append((f"idle every {_seconds(interval)}", f"last ran {age(last_run, now)}"))
        lag = "none measured" if s.heartbeat_lag is None else (
            f"{s.heartbeat_lag:.3f} s, measured {age(s.heartbeat_at, now)}"
        )
        rows.append(("heartbeat lag", lag))
        rows.append(("last error", s.last_error or "none"))
        width = max(len(label) for label, _ in rows)
        return "\n".join([f"app {s.name}"] + [f"  {label.ljust(width)}  {value}" for label, value in rows])


class HealthView:
    """What processes() found, printed as the same tables as 'scbus status'."""

    def __init__(self, health: Any) -> None:
        self.health = health

    def __repr__(self) -> str:
        return render(self.health)


class SetAsideList(list):
    """Set-aside messages, printed as a table: id, why, type, from which app, age, size."""

    def __repr__(self) -> str:
        if not self:
            return "(none)"
        now = time.time()
        rows = [("id", "code", "type", "app", "age", "size", "reason")]
        for entry in self:
            reason = entry.reason if len(entry.reason) <= 80 else entry.reason[:77] + "..."
            rows.append((
                entry.id, entry.code, entry.type_name or "?", entry.app_name or "-",
                age(entry.at, now) if entry.at else "?", size(len(entry.body)), reason,
            ))
        return "\n".join(table(rows))


HELP = """\
scbus console: Python inside the running bus. exit() or Ctrl-D leaves it; the bus runs on.
  status()                 one line per app: handled, errors, in flight, queued, ...
  app_status('name')       one app's full status
  send(msg)                send a message, e.g. send(messages['clock.Tick'](count=1))
  pause('name'), resume('name')
  unrouted(), dead_letters()   messages set aside: id, reason, type, age, size
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
            bus.status().addCallback(
                lambda all_: AppStatusView(next(s for s in all_ if s.name == name), bus.clock.seconds())
            )
        )

    def send(message: Message) -> Any:
        if not isinstance(message, Message):
            raise TypeError(f"send() takes a Message, not {type(message).__name__}")
        return _settled(
            bus.send(message).addCallback(lambda _: Reply(f"sent {message!r} as {message.id}"))
        )

    def pause(name: str) -> Reply:
        bus.pause(name)
        return Reply(f"paused {name}")

    def resume(name: str) -> Reply:
        bus.resume(name)
        return Reply(f"resumed {name}")

    def unrouted() -> Any:
        return _settled(transport.set_aside("unrouted").addCallback(SetAsideList))

    def dead_letters() -> Any:
        return _settled(transport.set_aside("dead").addCallback(SetAsideList))

    def replay(kind: str, entry_id: str) -> Any:
        return _settled(
            transport.replay(kind, entry_id).addCallback(
                lambda found: Reply(f"replayed {entry_id}" if found else f"no {kind} message {entry_id}")
            )
        )

    def heartbeat(app: str | None = None) -> Any:
        return send(HeartbeatMessage(app_name=app))

    def processes(timeout: float = 1.0) -> Any:
        """Every live bus process (over the control plane) and its apps."""
        expected = {name: 1 for name in bus.app_names()}
        return _settled(
            transport.ask({"op": "status"}, timeout).addCallback(
                lambda answers: HealthView(assess(answers, expected))
            )
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
        "pause": pause,
        "resume": resume,
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


def _telnet_factory(
    namespace: dict[str, Any], checker: ICredentialsChecker, clock: Any, max_attempts: int = MAX_LOGIN_ATTEMPTS
) -> protocol.ServerFactory:
    the_portal = portal.Portal(_TelnetRealm(namespace), [checker])
    guard = LoginGuard(clock)
    factory = protocol.ServerFactory()
    factory.protocol = lambda: _ConsoleTelnet(_Login, the_portal, guard, clock, max_attempts)
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
        factory = _telnet_factory(namespace, PasswordHashChecker(users), reactor)
        Listener("telnet_port", config.telnet_port, config.interface, factory, reactor).setServiceParent(console)
    if config.ssh_port is not None:
        factory = _ssh_factory(namespace, config)
        Listener("ssh_port", config.ssh_port, config.interface, factory, reactor).setServiceParent(console)
    return console
