"""`scbus hash-password` in a script: --stdin, line endings, no terminal, new scheme."""

import os
import subprocess
import sys

import pytest

from scbus.passwords import hash_password, is_password_hash, verify_password

SCBUS = os.path.join(os.path.dirname(sys.executable), "scbus")


def hash_password_cli(*args, stdin=None, input=None):
    return subprocess.run(
        [SCBUS, "hash-password", *args], input=input, stdin=stdin, capture_output=True, text=True,
        timeout=60, start_new_session=True,  # no controlling terminal, as in a container build
    )


@pytest.mark.parametrize("typed", ["pw\n", "pw\r\n", "pw"])
def test_stdin_takes_one_line_without_its_ending(typed):
    out = hash_password_cli("--stdin", input=typed)
    assert out.returncode == 0, out.stderr
    stored = out.stdout.strip()
    assert verify_password("pw", stored) and not verify_password("pw\r", stored)


def test_only_one_ending_is_taken():
    stored = hash_password_cli("--stdin", input="pw \r\n").stdout.strip()
    assert verify_password("pw ", stored) and not verify_password("pw", stored)


def test_without_a_terminal_it_says_so_in_one_line():
    out = hash_password_cli(stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "--stdin" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_new_hashes_are_scrypt_and_old_ones_still_verify():
    new = hash_password("s3cret")
    assert new.startswith("scrypt$14$8$5$") and is_password_hash(new)
    assert verify_password("s3cret", new) and not verify_password("s3crets", new)
    old = "pbkdf2_sha256$200000$AAAAAAAAAAAAAAAAAAAAAA==$" + hash_password("s3cret", iterations=200_000, salt=b"\0" * 16).rsplit("$", 1)[1]
    assert is_password_hash(old) and verify_password("s3cret", old) and not verify_password("x", old)


@pytest.mark.parametrize(
    "stored",
    ["scrypt$30$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 43 + "=", "scrypt$14$8$5$$", "scrypt$14$8$5", "md5$x"],
)
def test_hashes_out_of_bounds_or_malformed_are_not_hashes(stored):
    assert not is_password_hash(stored) and not verify_password("pw", stored)


def test_importing_makes_no_hash():
    """The dummy hash for unknown users is made at the first failed lookup, not at start-up."""
    code = (
        "import hashlib\n"
        "calls = []\n"
        "for name in ('pbkdf2_hmac', 'scrypt'):\n"
        "    real = getattr(hashlib, name)\n"
        "    setattr(hashlib, name, lambda *a, real=real, **k: calls.append(1) or real(*a, **k))\n"
        "import scbus.cli, scbus.passwords\n"
        "print(len(calls))\n"
        "scbus.passwords.verify_password('pw', None)\n"
        "print(len(calls))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    at_import, after_lookup = out.stdout.split()
    assert (at_import, int(after_lookup) > 0) == ("0", True), out.stderr
