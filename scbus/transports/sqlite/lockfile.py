"""
The lock that says which live process uses a database file: ``PATH.lock``, locked with
C{flock} on one descriptor held for the process's life. The kernel drops it when the
process ends, however it ends (SIGKILL included), so the next process to take it knows
that every claim left in the file belongs to a process that is gone.

It is a file of its own: SQLite's locks on the database are POSIX locks, which a process
loses when it closes any descriptor of that file.
"""

from __future__ import annotations

import errno
import fcntl
import os

from ...errors import StartupProblem

__all__ = ["ProcessLock", "holder"]


class ProcessLock:
    """C{acquire()} or one line saying who holds it; C{release()} at stop."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.path = database + ".lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StartupProblem(
                "transport.path",
                f"{self.database}: cannot open its lock file {self.path} ({e.strerror}): the bus writes the "
                f"database, its -wal, -shm and .lock files in {os.path.dirname(self.path)}: give the bus's "
                "user write access there",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StartupProblem(
                    "transport.path", f"{self.database}: cannot lock {self.path} ({e.strerror})"
                ) from None
            raise StartupProblem(
                "transport.path",
                f"another bus process uses {self.database} (pid {holder or 'unknown'}): stop it, or give this "
                "bus another transport.path",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # the lock goes with the descriptor


def _read_pid(fd: int) -> str | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return text if text.isdigit() else None


def holder(database: str) -> tuple[bool, str | None]:
    """
    (held, pid): whether a live process holds C{database}'s lock, and the pid it wrote.
    Tried without blocking and released at once; a missing lock file means no holder.
    """
    try:
        fd = os.open(database + ".lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False, None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True, _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, None
    finally:
        os.close(fd)
