"""
Console password hashes.

New hashes are scrypt (OWASP's N=2**14, r=8, p=5: 16 MiB and the work of N=2**17, p=1),
stored as C{scrypt$LOG2_N$R$P$SALT$HASH}. Hashes of the first scheme,
C{pbkdf2_sha256$ITERATIONS$SALT$HASH}, are still verified. Only hashes are ever
configured or stored; C{scbus hash-password} makes one.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import stat
import tempfile
from collections.abc import Callable

from .errors import ConfigError

__all__ = ["hash_password", "verify_password", "is_password_hash", "read_passwd_file", "write_passwd_entry", "SCHEME"]

SCHEME = "scrypt"
LOG2_N, BLOCK_SIZE, PARALLELISM = 14, 8, 5
PBKDF2_SCHEME = "pbkdf2_sha256"
#: Stored parameters are bounded, so a hash cannot ask for more than 256 MiB.
_SCRYPT_BOUNDS = {"log2_n": (10, 17), "r": (1, 16), "p": (1, 16)}
_MAX_MEMORY = 512 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(
    password: str, *, iterations: int | None = None, salt: bytes | None = None
) -> str:
    """
    A scrypt hash of C{password}. With C{iterations}, a PBKDF2-SHA256 hash of the first
    scheme instead (tests use a few iterations to stay fast).
    """
    salt = salt if salt is not None else os.urandom(16)
    secret = password.encode("utf-8")
    if iterations is not None:
        digest = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations)
        return f"{PBKDF2_SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"
    digest = _scrypt(secret, salt, LOG2_N, BLOCK_SIZE, PARALLELISM)
    return f"{SCHEME}${LOG2_N}${BLOCK_SIZE}${PARALLELISM}${_b64(salt)}${_b64(digest)}"


def _scrypt(secret: bytes, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(secret, salt=salt, n=2**log2_n, r=r, p=p, maxmem=_MAX_MEMORY, dklen=32)


#: A parsed hash: a function of the password's bytes, and the digest it must give.
_Parsed = tuple[Callable[[bytes], bytes], bytes]


def _parse(stored: str) -> _Parsed | None:
    parts = stored.split("$")
    try:
        if parts[0] == SCHEME and len(parts) == 6:
            log2_n, r, p = (int(x) for x in parts[1:4])
            if any(
                not low <= value <= high
                for value, (low, high) in zip((log2_n, r, p), _SCRYPT_BOUNDS.values(), strict=True)
            ):
                return None
            salt, digest = _decode(parts[4]), _decode(parts[5])
            if not salt or len(digest) != 32:
                return None
            return functools.partial(_scrypt_of, salt=salt, log2_n=log2_n, r=r, p=p), digest
        if parts[0] == PBKDF2_SCHEME and len(parts) == 4:
            iterations = int(parts[1])
            salt, digest = _decode(parts[2]), _decode(parts[3])
            if iterations < 1 or not salt or len(digest) != 32:
                return None
            return functools.partial(hashlib.pbkdf2_hmac, "sha256", salt=salt, iterations=iterations), digest
    except ValueError:
        return None
    return None


def _scrypt_of(secret: bytes, *, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return _scrypt(secret, salt, log2_n, r, p)


def _decode(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def is_password_hash(stored: str) -> bool:
    return _parse(stored) is not None


@functools.cache
def _dummy() -> _Parsed:
    """Made at the first failed lookup, not at import: every C{scbus} command imports us."""
    parsed = _parse(hash_password("scbus-unknown-user", salt=b"\0" * 16))
    assert parsed is not None
    return parsed


def verify_password(password: str | bytes, stored: str | None) -> bool:
    """
    True when C{password} matches C{stored}. With C{stored} None (an unknown user) or
    unreadable, the same work is done, so timing does not tell which user names exist.
    """
    parsed = _parse(stored) if stored is not None else None
    known = parsed is not None
    derive, expected = parsed if parsed is not None else _dummy()
    if isinstance(password, str):
        password = password.encode("utf-8")
    return hmac.compare_digest(derive(password), expected) and known


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


def check_user_name(user: str) -> str | None:
    """Why C{user} cannot be a passwd file's user name, or None when it can."""
    if not user:
        return "the user name is empty"
    if ":" in user or any(c.isspace() for c in user) or not user.isprintable():
        return f"the user name {user!r} has a colon, a space or a control character"
    return None


def write_passwd_entry(path: str, user: str, stored: str) -> bool:
    """
    Set C{user}'s hash in the passwd file at C{path}, creating it readable by its owner
    only (mode 600, whatever the umask), or replacing the user's line in place (other lines
    and comments kept; the file keeps its owner and group, and its mode less any bit the
    console refuses). The file is replaced in one rename, so the bus never reads half of
    it. Answers True when the user was already there.
    """
    problem = check_user_name(user)
    if problem is not None:
        raise ValueError(problem)
    if not is_password_hash(stored):
        raise ValueError("not a password hash from hash_password()")
    try:
        before = os.stat(path)
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        before, lines = None, []
    replaced = False
    kept: list[str] = []
    for line in lines:
        if line.partition(":")[0] == user and not line.lstrip().startswith("#"):
            if not replaced:
                kept.append(f"{user}:{stored}")
            replaced = True
            continue
        kept.append(line)
    if not replaced:
        kept.append(f"{user}:{stored}")
    # The console refuses group write and any bit for others; group read may stay (640).
    mode = 0o600 if before is None else (stat.S_IMODE(before.st_mode) & 0o640) | 0o600
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".passwd-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            if before is not None and (before.st_uid, before.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(f.fileno(), before.st_uid, before.st_gid)
                except PermissionError:
                    pass  # only root gives a file away: then it is ours
            f.write("\n".join(kept) + "\n")
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    return replaced
