"""
The console over telnet: the login prompts (attempts limited, failures slowed), the
telnet commands real clients send, and option negotiation that tolerates clients which
refuse or never answer (C{nc}).
"""

from __future__ import annotations

from typing import Any

from twisted.conch import telnet
from twisted.conch.insults import insults
from twisted.cred import credentials, error, portal
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import protocol
from twisted.internet.error import ConnectionClosed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .auth import MAX_LOGIN_ATTEMPTS, LoginGuard
from .shell import ConsoleManhole, PlainConsole

__all__ = ["telnet_factory"]

log = Logger()


def _negotiation_over(failure: Failure, option: bytes) -> None:
    """A client may refuse an option, never answer, or leave while asked: none is an error."""
    failure.trap(telnet.NegotiationError, ConnectionClosed)
    log.debug("console: telnet option {option!r} not agreed", option=option)


class _Login(telnet.AuthenticatingTelnetProtocol):
    """
    Asks for a user name and password; a password is checked and a failed login answered
    only when the source's back-off allows, and the connection is closed after
    C{max_attempts} failures. It works
    with clients that do not negotiate (C{nc}): the password prompt does not wait for
    their answer about echo.
    """

    transport: Any  # Twisted types it as an optional ITransport; here it is set and richer

    def __init__(self, the_portal: portal.Portal, guard: LoginGuard, clock: IReactorTime, max_attempts: int) -> None:
        super().__init__(the_portal)
        self._guard = guard
        self._clock = clock
        self._max_attempts = max_attempts
        self._attempts = 0
        self._pending: Any = None  # a password check or a failure's answer, waiting its turn
        self._source = "?"
        self._user = "?"
        self._gone = False
        self._plain = False

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
        # A plain client (nc, a script: see _ConsoleTelnet.speaks_telnet) gets no
        # negotiation, and lines instead of a terminal's escape codes once logged in.
        self._plain = isinstance(self.transport, _ConsoleTelnet) and not self.transport.speaks_telnet
        self.username = line.rstrip(b"\r")
        if not self._plain:
            self.transport.will(telnet.ECHO).addErrback(_negotiation_over, telnet.ECHO)
        self.transport.write(b"Password: ")
        return "Password"

    def telnet_Password(self, line: bytes) -> str:
        username, password = self.username, line.rstrip(b"\r")
        del self.username
        if not self._plain:
            self.transport.wont(telnet.ECHO).addErrback(_negotiation_over, telnet.ECHO)
        wait = self._guard.wait_before_check(self._source)
        if wait > 0:
            self._pending = self._clock.callLater(wait, self._check, username, password)
        else:
            self._check(username, password)
        return "Discard"

    def _check(self, username: bytes, password: bytes) -> None:
        self._pending = None
        self._user = username.decode("utf-8", "replace")
        mind = PLAIN if self._plain else None
        d = self.portal.login(credentials.UsernamePassword(username, password), mind, telnet.ITelnetProtocol)
        d.addCallbacks(self._cbLogin, self._ebLogin)

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
            "console: failed login {attempt} of {allowed} for user {user!r} from {source}; "
            "next answer in {delay:.1f} s",
            attempt=self._attempts, allowed=self._max_attempts, user=self._user, source=self._source, delay=delay,
        )
        self._pending = self._clock.callLater(delay, self._answer_failure)

    def _answer_failure(self) -> None:
        self._pending = None
        if self._attempts >= self._max_attempts:
            log.warn("console: {source} disconnected after {n} failed logins", source=self._source, n=self._attempts)
            self.transport.write(b"\r\nAuthentication failed; too many attempts\r\n")
            self.transport.loseConnection()
            return
        self.transport.write(b"\r\nAuthentication failed\r\nUsername: ")
        self.state = "User"

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._gone = True
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        super().connectionLost(reason)


_CTRL_C, _CTRL_D = b"\x03", b"\x04"
#: The login's word to the realm: this client is no terminal (see L{_Login.telnet_User}).
PLAIN = object()
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

    transport: Any  # Twisted types it as an optional ITransport; here it is set and richer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._after_iac = False
        #: The client has sent a telnet command, or ended a line with CR (CR LF, CR NUL) as
        #: telnet clients do: it speaks telnet. C{nc} and scripts send LF alone, and nothing else.
        self.speaks_telnet = False

    def dataReceived(self, data: bytes) -> None:
        if not self.speaks_telnet and (telnet.IAC in data or b"\r" in data):
            self.speaks_telnet = True
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

    transport: Any  # Twisted types it as an optional ITransport; here it is set and richer

    def connectionMade(self) -> None:
        transport = self.transport
        transport.negotiationMap[telnet.NAWS] = self.telnet_NAWS
        transport.negotiationMap[telnet.LINEMODE] = self.telnet_LINEMODE
        for option in (telnet.LINEMODE, telnet.NAWS, telnet.SGA):
            transport.do(option).addErrback(_negotiation_over, option)
        transport.will(telnet.ECHO).addErrback(_negotiation_over, telnet.ECHO)
        terminal = self.protocolFactory(*self.protocolArgs, **self.protocolKwArgs)
        factory = getattr(self, "factory", None)
        if factory is not None:
            terminal.factory = factory
        self.protocol = terminal
        terminal.makeConnection(self)


@implementer(portal.IRealm)
class _TelnetRealm:
    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace

    def requestAvatar(self, avatar_id: bytes | tuple[()], mind: Any, *interfaces: Any) -> Any:
        if telnet.ITelnetProtocol in interfaces:
            if mind is PLAIN:
                return telnet.ITelnetProtocol, PlainConsole(self.namespace), lambda: None
            proto = _TelnetBootstrap(insults.ServerProtocol, ConsoleManhole, self.namespace)
            return telnet.ITelnetProtocol, proto, lambda: None
        raise NotImplementedError(interfaces)


def telnet_factory(
    namespace: dict[str, Any], checker: ICredentialsChecker, clock: IReactorTime, max_attempts: int = MAX_LOGIN_ATTEMPTS
) -> protocol.ServerFactory:
    the_portal = portal.Portal(_TelnetRealm(namespace), [checker])
    guard = LoginGuard(clock)
    factory = protocol.ServerFactory()
    factory.protocol = lambda: _ConsoleTelnet(_Login, the_portal, guard, clock, max_attempts)
    return factory
