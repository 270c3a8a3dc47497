"""
End to end on Twisted's asyncio reactor: a real `twistd -n scbus` process whose coroutine
handlers await asyncio.sleep, an asyncio.Queue and a Deferred, and whose time limit
cancels a slow one inside; chosen on the command line or in the config. On the default
reactor the same app gets one line naming --reactor=asyncio.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from scbus.coroutines import REACTOR_REQUIRED

from .conftest import ROOT, twistd_command

CONFIG = """
[bus]
name = "aio"
grace_period = 2
{reactor_key}

[apps.worker]
builder = "tests.asyncio_app:make_worker"
time_limit = 1.0
config = {{ count = 3, slow = 2 }}

[apps.recorder]
builder = "tests.asyncio_app:make_recorder"
config = {{ path = "{path}" }}
"""


def records(path, until, timeout=30.0):
    """The recorder's lines once C{until(lines)} holds (or at the deadline)."""
    deadline = time.monotonic() + timeout
    lines: list[dict] = []
    while time.monotonic() < deadline:
        if path.exists():
            lines = [json.loads(line) for line in path.read_text().splitlines()]
            if until(lines):
                break
        time.sleep(0.1)
    return lines


def start(tmp_path, run_twistd, reactor_key="", twistd_args=()):
    path = tmp_path / "records.jsonl"
    config = tmp_path / "scbus.toml"
    config.write_text(CONFIG.format(reactor_key=reactor_key, path=path))
    return run_twistd(str(tmp_path), str(config), twistd_args), path


@pytest.mark.parametrize(
    "reactor_key, twistd_args",
    [("", ("--reactor=asyncio",)), ('reactor = "asyncio"', ())],
    ids=["command-line", "config-key"],
)
def test_coroutines_await_asyncio_and_deferreds_and_a_time_limit_cancels_one(
    tmp_path, run_twistd, reactor_key, twistd_args
):
    bus, path = start(tmp_path, run_twistd, reactor_key, twistd_args)
    lines = records(path, lambda ls: len(ls) >= 3)
    assert bus.terminate() == -signal.SIGTERM  # twistd's clean exit: it ends itself with the signal
    log = bus.log()
    assert "reactor class: twisted.internet.asyncioreactor.AsyncioSelectorReactor" in log

    worked = sorted((r for r in lines if r["type"] == "e2e.aio.Worked"), key=lambda r: r["n"])
    errors = [r for r in lines if r["type"] == "scbus.AppErrorOccurred"]
    assert [(r["n"], r["ticket"], r["deferred"]) for r in worked] == [(1, 1, "from a Deferred"), (3, 3, "from a Deferred")]
    assert {r["loop"] for r in worked} == {"_UnixSelectorEventLoop"}
    [timeout] = errors
    assert (timeout["app_name"], timeout["error_type"]) == ("worker", "scbus.errors.HandlerTimeout")
    assert timeout["message"]["data"] == {"n": 2}
    assert timeout["error"] == "the handler ran past its time limit of 1.0s"
    assert [r["message"] for r in timeout["log"]] == ["job 2 cancelled inside the coroutine"]
    assert len(lines) == 3  # nothing else: no duplicate, no other error
    assert "Traceback" not in log.split("Received SIGTERM")[0].replace("handler traceback", "")


def test_on_the_default_reactor_asyncio_is_one_line_naming_the_option(tmp_path, run_twistd):
    bus, path = start(tmp_path, run_twistd)
    lines = records(path, lambda ls: len(ls) >= 3)
    time.sleep(0.5)  # the producer gives up after 3 runs: no fourth report comes
    lines = records(path, lambda ls: True)
    assert bus.terminate() == -signal.SIGTERM
    assert "reactor class: twisted.internet.asyncioreactor" not in bus.log()
    assert len(lines) == 3
    for report in lines:
        assert report["type"] == "scbus.AppErrorOccurred"
        assert (report["app_name"], report["interval"]) == ("worker", 0.1)
        assert report["error_type"] == "scbus.coroutines.AsyncioReactorRequired"
        assert report["error"] == REACTOR_REQUIRED
        assert "--reactor=asyncio" in report["error"] and "\n" not in report["error"]


def test_the_key_with_another_reactor_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    config = tmp_path / "scbus.toml"
    config.write_text(CONFIG.format(reactor_key='reactor = "asyncio"', path=tmp_path / "records.jsonl"))
    out = subprocess.run(
        [*twistd_command(), "-n", "--pidfile=", "--reactor=select", "scbus", f"--config={config}"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f'scbus: {config}: bus.reactor: "asyncio" cannot be honoured: the reactor is already '
        "twisted.internet.selectreactor.SelectReactor (twistd's --reactor, or an import); "
        "run twistd --reactor=asyncio -n scbus ..."
    )
    assert "Traceback" not in out.stdout + out.stderr
