"""
Who may use the console: password hashes from the config or a passwd-format file, checked
off the reactor thread, and a back-off per source address for failed logins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from ..errors import ConfigError
from ..passwords import is_password_hash, verify_password

__all__ = ["MAX_LOGIN_ATTEMPTS", "LoginGuard", "PasswordHashChecker", "read_passwd_file"]

log = Logger()


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
