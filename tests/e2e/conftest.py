"""Fixtures that run a real twistd process."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import termios
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def twistd_command() -> list[str]:
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    return [beside if os.path.exists(beside) else shutil.which("twistd") or "twistd"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"twistd exited early with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listened on {port} within {timeout}s")


class Twistd:
    """A twistd -n scbus process, its log in a file, always ended by the fixture."""

    def __init__(self, workdir: str, config_path: str, twistd_args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.log_path = os.path.join(workdir, "twistd.log")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [*twistd_command(), "-n", "--pidfile=", "--logfile=-", *twistd_args, "scbus", f"--config={config_path}"],
            cwd=workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def terminate(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@pytest.fixture
def run_twistd():
    started: list[Twistd] = []

    def start(workdir: str, config_path: str, twistd_args: tuple[str, ...] = ()) -> Twistd:
        t = Twistd(workdir, config_path, twistd_args)
        started.append(t)
        return t

    yield start
    for t in started:
        t.kill()


def wait_for_log(bus: Twistd, pattern: str, timeout: float = 60.0) -> re.Match[str]:
    """The first match of C{pattern} in the bus's log, once it shows (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, bus.log())
        if found:
            return found
        if bus.process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} not in the log (exit {bus.process.poll()}):\n{bus.log()[-3000:]}")
        time.sleep(0.1)


def run_on_a_terminal(
    argv: list[str], cwd: str, answers: list[tuple[str, str]], timeout: float = 120.0, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """
    Run C{argv} with a pseudo-terminal as its controlling terminal, as a person at a shell
    would, typing each answer once its prompt shows; the exit status and everything shown.
    """
    master, slave = pty.openpty()

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        preexec_fn=take_terminal,
    )
    os.close(slave)
    seen, pending, answered_at = b"", list(answers), 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # every end of the terminal closed: the program is done
                    break
                if not chunk:
                    break
                seen += chunk
            if pending and seen[answered_at:].endswith(pending[0][0].encode()):
                os.write(master, pending.pop(0)[1].encode() + b"\n")
                answered_at = len(seen)
        return process.wait(timeout=max(1.0, deadline - time.monotonic())), seen.decode("utf-8", "replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(master)
