"""
Files the SQLite transport cannot use: each is refused at start with one line naming the
file and what to do (under twistd that line ends start-up with exit status 2).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess

import pytest

from scbus.errors import StartupProblem
from scbus.transports.sqlite.schema import APPLICATION_ID, SCHEMA_VERSION

from .sqlite_helpers import make_transport, settle


def refusal(path, **options) -> str:
    with pytest.raises(StartupProblem) as caught:
        make_transport(path, **options)
    text = str(caught.value)
    assert "\n" not in text and text.startswith("transport.path: ")
    return text


def made(path):
    """A file the transport made and left, as a stopped bus does."""
    t, clock = make_transport(path)
    t.stopService()
    settle(clock)


def test_a_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "scbus.db"
    path.write_bytes(b"these are not the pages you are looking for" * 100)
    assert refusal(path) == (
        f"transport.path: {path} is not an SQLite database (file is not a database): point transport.path "
        "at another file, or move this one away"
    )


def test_a_corrupt_file(tmp_path):
    path = tmp_path / "scbus.db"
    made(path)
    connection = sqlite3.connect(str(path))
    page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    [(root,)] = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = 'queues'").fetchall()
    connection.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)
    text = refusal(path)
    assert text.startswith(f"transport.path: {path} is corrupt (")
    assert text.endswith(f"(`sqlite3 {path} .recover` may save what it holds)")


def test_a_file_of_a_newer_schema_is_not_touched(tmp_path):
    path = tmp_path / "scbus.db"
    made(path)
    connection = sqlite3.connect(str(path))
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.commit()
    connection.close()
    before = path.read_bytes()
    assert refusal(path) == (
        f"transport.path: {path} has schema version {SCHEMA_VERSION + 1}, newer than this scbus knows "
        f"({SCHEMA_VERSION}): run the newer scbus that wrote it, or point transport.path at another file"
    )
    assert path.read_bytes() == before


def test_another_programs_database(tmp_path):
    path = tmp_path / "app.db"
    connection = sqlite3.connect(str(path))
    connection.execute("CREATE TABLE customers (name TEXT)")
    connection.commit()
    connection.close()
    assert refusal(path) == (
        f"transport.path: {path} is an SQLite database of another program (application_id 0x0, tables "
        "customers): point transport.path at a file of its own"
    )


def test_a_file_the_bus_made_is_marked_as_its_own(tmp_path):
    path = tmp_path / "scbus.db"
    made(path)
    connection = sqlite3.connect(str(path))
    assert connection.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert connection.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    connection.close()


def test_a_missing_directory_and_a_directory(tmp_path):
    missing = tmp_path / "nowhere" / "scbus.db"
    assert refusal(missing) == (
        f"transport.path: {missing}: its directory {missing.parent} does not exist: create it, or name another path"
    )
    assert refusal(tmp_path) == (
        f"transport.path: {tmp_path} is a directory: name a file in it (e.g. {tmp_path / 'scbus.db'})"
    )


def test_a_file_another_program_holds_locked(tmp_path):
    path = tmp_path / "scbus.db"
    made(path)
    other = sqlite3.connect(str(path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        text = refusal(path, busy_timeout=0.05)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert text.startswith(f"transport.path: {path} is locked by another program (database is locked")
    assert text.endswith("end that program's transaction (an sqlite3 shell, a backup tool) and start the bus again")


@pytest.fixture
def read_only_directory(tmp_path):
    """A directory holding a bus's file that cannot be written (a read-only mount for root)."""
    directory = tmp_path / "ro"
    directory.mkdir()
    made(directory / "scbus.db")
    if os.geteuid() != 0:
        os.chmod(directory / "scbus.db", 0o444)
        os.chmod(directory, 0o555)
        yield directory, "chmod"
        os.chmod(directory, 0o755)
        return
    if subprocess.run(["mount", "--bind", str(directory), str(directory)], capture_output=True).returncode != 0:
        pytest.skip("running as root and cannot make a read-only mount here")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield directory, "mount"
    finally:
        subprocess.run(["umount", str(directory)], capture_output=True)


def test_a_file_that_cannot_be_written(read_only_directory):
    directory, how = read_only_directory
    path = directory / "scbus.db"
    text = refusal(path)
    assert text.startswith(f"transport.path: {path}")
    assert "write access" in text, text


@pytest.fixture
def read_only_file(tmp_path):
    """A bus's file that cannot be written, in a directory that can (immutable for root)."""
    path = tmp_path / "scbus.db"
    made(path)
    if os.geteuid() != 0:
        os.chmod(path, 0o444)
        yield path
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root and cannot make the file immutable here")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def test_a_read_only_file_in_a_writable_directory(read_only_file):
    assert refusal(read_only_file) == (
        f"transport.path: {read_only_file} cannot be written (attempt to write a readonly database): the bus "
        "writes the file and, in its directory, its -wal, -shm and .lock files: give the bus's user write "
        "access to both (and a file system not mounted read-only)"
    )
