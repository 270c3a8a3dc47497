"""Fixtures that run a real twistd process."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
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

    def __init__(self, workdir: str, config_path: str) -> None:
        self.workdir = workdir
        self.log_path = os.path.join(workdir, "twistd.log")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [*twistd_command(), "-n", "--pidfile=", "--logfile=-", "scbus", f"--config={config_path}"],
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

    def start(workdir: str, config_path: str) -> Twistd:
        t = Twistd(workdir, config_path)
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
