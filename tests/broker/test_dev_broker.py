"""
`scbus dev-broker`, as the README says to run it: it prints the [transport] table, a
bus whose config holds that table connects, and Ctrl-C stops the node and removes its
data.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from scbus.cli.rabbitnode import available

from ..e2e.conftest import Twistd, free_port
from ..web.http_client import BusHTTP


def read_until(process: subprocess.Popen, pattern: str, timeout: float) -> str:
    """What the command printed, once C{pattern} shows in it (bounded)."""
    seen = ""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, seen):
        left = deadline - time.monotonic()
        assert left > 0 and process.poll() is None, f"exit {process.poll()}; printed: {seen!r}"
        ready, _, _ = select.select([process.stdout], [], [], min(left, 0.5))
        if ready:
            seen += os.read(process.stdout.fileno(), 65536).decode()
    return seen


def test_dev_broker_prints_a_transport_a_bus_connects_with(tmp_path):
    reason = available()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the broker tests: {reason}")
        pytest.skip(reason)
    broker = subprocess.Popen(
        [sys.executable, "-m", "scbus.cli", "dev-broker", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        printed = read_until(broker, r"Ctrl-C stops it and deletes its data\.", 120)
        table = re.search(r'(?m)^\[transport\]\ntype = "amqp"\nurl = "(amqp://[^"]+)"\n', printed)
        assert table, printed
        port = int(re.search(r"127\.0\.0\.1:(\d+)/", table.group(1)).group(1))
        data = re.search(r"\(data in (\S+)\)", broker.stderr.read1().decode()).group(1)
        assert os.path.isdir(data)

        http = free_port()
        config = tmp_path / "scbus.toml"
        config.write_text(
            f'[bus]\nname = "dev"\ngrace_period = 1\n\n{table.group(0)}\n[http]\nport = {http}\n\n'
            '[apps.shop]\nbuilder = "tests.console_app:make_shop"\n'
        )
        bus = Twistd(str(tmp_path), str(config))
        try:
            BusHTTP(http).wait("/ready", 200)  # connected to the node, the app consuming
            assert bus.terminate() == -signal.SIGTERM
        finally:
            bus.kill()

        broker.send_signal(signal.SIGINT)  # Ctrl-C
        assert broker.wait(90) == 0, broker.stderr.read().decode()
        assert not os.path.exists(data)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if broker.poll() is None:
            broker.send_signal(signal.SIGTERM)
            broker.wait(90)
