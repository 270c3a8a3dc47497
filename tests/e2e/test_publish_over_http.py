"""
``scbus publish`` into a real ``twistd -n scbus`` on the in-memory transport: it has no
broker, so the command posts to the bus's ``POST /messages`` with the bearer token.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
import uuid

from ..broker.test_client_cli import wait_for_lines
from .conftest import ROOT, free_port, wait_for_port

TOKEN = "publish-token-" + uuid.uuid4().hex
CONFIG = """
[bus]
name = "publish-http"
grace_period = 2

[http]
port = {port}
token_env = "SCBUS_TEST_PUBLISH_TOKEN"

[apps.shipping]
builder = "tests.client_app:make_shipping"
config = {{ path = "{handled}" }}
"""


def scbus(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("SCBUS_TEST_PUBLISH_TOKEN", None)
    if token is not None:
        env["SCBUS_TEST_PUBLISH_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "scbus.cli", *args], capture_output=True, text=True, timeout=60,
        env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
    )


def test_publish_posts_to_the_in_memory_bus(tmp_path, run_twistd, monkeypatch):
    monkeypatch.setenv("SCBUS_TEST_PUBLISH_TOKEN", TOKEN)
    port = free_port()
    handled = tmp_path / "handled.jsonl"
    config = tmp_path / "scbus.toml"
    config.write_text(CONFIG.format(port=port, handled=handled))
    bus = run_twistd(str(tmp_path), str(config))
    wait_for_port(port, bus.process)

    out = scbus("publish", "--config", str(config), "client_test.Order", '{"item": "tea", "quantity": 2}')
    assert out.returncode == 0, out.stderr
    message_id = out.stdout.strip()
    assert wait_for_lines(handled, 1) == [{"id": message_id, "item": "tea", "quantity": 2}]

    lines = tmp_path / "orders.jsonl"
    lines.write_text("".join(json.dumps({"item": f"i{n}", "quantity": n}) + "\n" for n in range(5)))
    out = scbus("publish", "--config", str(config), "client_test.Order", "--lines", str(lines))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "published 5 message(s)"
    assert out.stderr == ""  # no progress bar without a terminal
    assert [r["item"] for r in wait_for_lines(handled, 6)][1:] == [f"i{n}" for n in range(5)]
    bar = progress_on_a_terminal("publish", "--config", str(config), "client_test.Order", "--lines", str(lines))
    assert "5/5" in bar and "#" * 30 in bar
    assert len(wait_for_lines(handled, 11)) == 11

    # Refused before posting: nothing reaches the bus.
    out = scbus("publish", "--config", str(config), "client_test.Order", '{"item": "tea", "quantity": "2"}')
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1 and "quantity" in out.stderr
    # A wrong token: the bus refuses, the command says so in one line.
    out = scbus("publish", "--config", str(config), "client_test.Order", '{"item": "x", "quantity": 1}', token="wrong")
    assert out.returncode == 3 and len(out.stderr.splitlines()) == 1 and "401" in out.stderr
    time.sleep(1)
    assert len(wait_for_lines(handled, 11)) == 11
    assert TOKEN not in bus.log()


def progress_on_a_terminal(*args: str) -> str:
    """What the command writes to stderr when stderr is a terminal."""
    controller, terminal = pty.openpty()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), SCBUS_TEST_PUBLISH_TOKEN=TOKEN)
    process = subprocess.Popen(
        [sys.executable, "-m", "scbus.cli", *args], stdout=subprocess.PIPE, stderr=terminal,
        stdin=subprocess.DEVNULL, env=env, cwd=ROOT,
    )
    os.close(terminal)
    written = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        written += chunk
    process.wait(60)
    os.close(controller)
    assert process.returncode == 0, written
    return written.decode("utf-8", "replace")


def test_without_a_token_in_the_environment_it_says_which_variable(tmp_path):
    config = tmp_path / "scbus.toml"
    config.write_text(CONFIG.format(port=free_port(), handled=tmp_path / "h"))
    out = scbus("publish", "--config", str(config), "client_test.Order", '{"item": "x", "quantity": 1}', token=None)
    assert out.returncode == 2
    [line] = out.stderr.splitlines()
    assert "SCBUS_TEST_PUBLISH_TOKEN" in line
