"""
Who may use the console: password hashes from the config or a passwd-format file, checked
off the reactor thread, and a back-off per source address for failed logins.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from ..passwords import read_passwd_file, verify_password  # read_passwd_file: kept importable here

__all__ = ["MAX_LOGIN_ATTEMPTS", "LoginGuard", "PasswordHashChecker", "read_passwd_file"]

log = Logger()


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

    def requestAvatarId(self, creds: credentials.IUsernamePassword) -> Deferred[bytes | tuple[()]]:
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
            log.debug("console: login refused for user {user!r}", user=username)
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


@dataclasses.dataclass
class _Source:
    failures: int = 0
    last_failure: float = 0.0
    #: No password from this address is checked before this time.
    not_before: float = 0.0


class LoginGuard:
    """
    Failed logins per source address. After a failure the answer waits, longer with every
    recent failure from that address, and the address's next password is checked no
    sooner: parallel connections from one address are checked one delay apart, so
    guessing cannot go faster by opening more of them.
    """

    def __init__(
        self,
        clock: IReactorTime,
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
        self._sources: dict[str, _Source] = {}

    def _known(self, source: str) -> _Source | None:
        record = self._sources.get(source)
        if record is not None and self._clock.seconds() - record.last_failure > self._forget_after:
            del self._sources[source]
            return None
        return record

    def _delay_for(self, failures: int) -> float:
        return min(self._max_delay, self._delay * 2 ** (failures - 1))

    def failures(self, source: str) -> int:
        record = self._known(source)
        return record.failures if record is not None else 0

    def wait_before_check(self, source: str) -> float:
        """Seconds until a password from C{source} may be checked (and that slot is taken)."""
        record = self._known(source)
        if record is None:
            return 0.0
        now = self._clock.seconds()
        start = max(now, record.not_before)
        record.not_before = start + self._delay_for(record.failures)
        return start - now

    def failed(self, source: str) -> float:
        """Count a failure; the seconds to wait before answering it."""
        now = self._clock.seconds()
        record = self._known(source) or _Source()
        record.failures += 1
        record.last_failure = now
        delay = self._delay_for(record.failures)
        record.not_before = max(record.not_before, now + delay)
        self._sources.pop(source, None)
        self._sources[source] = record  # the most recent last: the oldest is forgotten first
        while len(self._sources) > self._sources_kept:
            del self._sources[next(iter(self._sources))]
        return delay

    def succeeded(self, source: str) -> None:
        self._sources.pop(source, None)
