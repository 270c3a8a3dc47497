"""
Console password hashes: PBKDF2-SHA256, stored as C{pbkdf2_sha256$ITERATIONS$SALT$HASH}.

Only hashes are ever configured or stored; C{scbus hash-password} makes one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

__all__ = ["hash_password", "verify_password", "is_password_hash", "SCHEME"]

SCHEME = "pbkdf2_sha256"
ITERATIONS = 200_000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


def _parse(stored: str) -> tuple[int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 4 or parts[0] != SCHEME:
        return None
    try:
        iterations = int(parts[1])
        salt = base64.b64decode(parts[2], validate=True)
        digest = base64.b64decode(parts[3], validate=True)
    except ValueError:
        return None
    if iterations < 1 or not salt or len(digest) != 32:
        return None
    return iterations, salt, digest


def is_password_hash(stored: str) -> bool:
    return _parse(stored) is not None


_DUMMY = hash_password("scbus-unknown-user", salt=b"\0" * 16)


def verify_password(password: str | bytes, stored: str | None) -> bool:
    """
    True when C{password} matches C{stored}. With C{stored} None (an unknown user) the
    same work is done, so timing does not tell which user names exist.
    """
    parsed = _parse(stored if stored is not None else _DUMMY)
    if parsed is None:
        parsed = _parse(_DUMMY)
        stored = None
    assert parsed is not None
    iterations, salt, expected = parsed
    if isinstance(password, str):
        password = password.encode("utf-8")
    digest = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
    return hmac.compare_digest(digest, expected) and stored is not None
