"""
End to end: a real `twistd -n scbus` process with the example apps, a real telnet
session into its console, and SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

from scbus.passwords import hash_password

from ..telnet import TelnetSession
from .conftest import ROOT, free_port, twistd_command, wait_for_port

CONFIG = """
[bus]
name = "e2e"
grace_period = 5

[console]
telnet_port = {port}
users = {{ operator = "{hash}" }}

[apps.clock]
builder = "apps.clock:make_clock"
config = {{ every = 0.1 }}

[apps.squares]
builder = "apps.squares:make_squares"

[apps.flaky]
builder = "apps.flaky:make_flaky"
config = {{ unlucky = 3 }}

[apps.errors]
builder = "apps.error_collector:make_error_collector"
threads = 1
config = {{ path = "{errors}" }}
"""


def test_twistd_lists_the_plugin_and_requires_config():
    out = subprocess.run([*twistd_command(), "--help"], capture_output=True, text=True, timeout=60, cwd="/")
    assert re.search(r"^\s+scbus\s+A message bus", out.stdout, re.M), out.stdout
    out = subprocess.run([*twistd_command(), "scbus"], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode != 0 and "--config=FILE is required" in out.stdout + out.stderr


def test_a_bad_config_is_one_line_and_a_non_zero_exit(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[apps.x]\nbuilder = "apps.clock:make_clock"\nthreads = "many"\n')
    out = subprocess.run(
        [*twistd_command(), "-n", "--pidfile=", "scbus", f"--config={path}"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == f"scbus: {path}: apps.x.threads: must be an integer, got str 'many'"
    assert "Traceback" not in out.stdout + out.stderr


def test_run_the_bus_log_into_the_console_and_stop_it(tmp_path, run_twistd):
    port = free_port()
    errors = tmp_path / "errors.jsonl"
    config = tmp_path / "scbus.toml"
    config.write_text(
        CONFIG.format(port=port, hash=hash_password("open sesame", iterations=10_000), errors=errors)
    )
    bus = run_twistd(str(tmp_path), str(config))
    wait_for_port(port, bus.process)

    with TelnetSession("127.0.0.1", port) as session:
        session.read_until("Username: ")
        session.send_line("operator")
        session.read_until("Password: ")
        session.send_line("wrong")
        session.read_until("Authentication failed", since=0)
        mark = len(session.text)
        session.read_until("Username: ", since=mark - 20)
        session.send_line("operator")
        session.read_until("Password: ", since=mark)
        session.send_line("open sesame")
        session.read_until(">>> ", since=mark)

        # Messages flow: wait until flaky has failed at least once.
        deadline = time.monotonic() + 30
        while True:
            answer = session.run("print('errors=%d' % app_status('flaky').errors)", r"errors=\d+")
            if int(re.search(r"errors=(\d+)", answer).group(1)) >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        table = session.run("status()", r"heartbeat|errors\s+\d+.*\n.*squares|squares")
        assert "clock" in table and "flaky" in table and "handled" in table

        answer = session.run("pause('clock')", ">>> ")
        answer = session.run("print(app_status('clock').paused)", "True|False")
        assert "True" in answer
        session.run("resume('clock')", ">>> ")

        answer = session.run(
            "send(messages['clock.Tick'](count=300))", r"sent Tick\(count=300\) as [0-9a-f]{32}"
        )
        answer = session.run("print(len(unrouted()))", r"\n\d+")
        answer = session.run("1 + 1", r"\n2")

    # The error was captured, with the handler's log lines, and collected to a file.
    deadline = time.monotonic() + 10
    while not (errors.exists() and errors.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.1)
    report = json.loads(errors.read_text().splitlines()[0])
    assert report["type"] == "scbus.AppErrorOccurred"
    data = report["data"]
    assert data["app_name"] == "flaky" and data["error_type"] == "ValueError"
    assert "is a multiple of 3" in data["error"]
    assert data["traceback"][-1]["function"] == "on_squared"
    assert [r["message"] for r in data["log"]][-1].endswith("looks unlucky")

    # twistd shuts down in order, then ends itself with the signal it got, as daemons do.
    assert bus.terminate() == -signal.SIGTERM
    log = bus.log()
    assert "Received SIGTERM" in log and "Server Shut Down" in log
    assert "Traceback" not in log
    assert "open sesame" not in log
    # The handler's error reached the log with its traceback and its captured lines.
    entry = re.search(r"flaky: handler \S+ failed on squares\.Squared: ValueError: .*\n(?:\t.*\n)*?\tValueError: .*", log)
    assert entry is not None, log
    assert "log line(s) captured)" in entry.group(0) and ", in on_squared" in entry.group(0)


def test_the_example_config_runs_as_the_readme_says(tmp_path, run_twistd):
    """`twistd -n scbus --config=scbus.toml` from the repository root."""
    bus = run_twistd(ROOT, os.path.join(ROOT, "scbus.toml"))
    deadline = time.monotonic() + 30
    while "checking 2" not in bus.log():
        assert bus.process.poll() is None, bus.log()
        assert time.monotonic() < deadline, bus.log()
        time.sleep(0.2)
    assert bus.terminate() == -signal.SIGTERM
    assert "Server Shut Down" in bus.log()


SLOW_CONFIG = """
[bus]
name = "drain"
grace_period = 10

[apps.slow]
builder = "tests.noloss_app:make_numbers"
threads = 4
max_in_flight = 4
config = {{ slow_at_start = 4, slow_seconds = {seconds} }}
"""


def test_sigterm_lets_in_flight_handlers_send_and_acknowledge(tmp_path, run_twistd):
    """The transport stays up while the bus drains: no output lost, nothing released."""
    config = tmp_path / "scbus.toml"
    config.write_text(SLOW_CONFIG.format(seconds=3))
    bus = run_twistd(str(tmp_path), str(config))
    deadline = time.monotonic() + 30
    while "slow: subscribed" not in bus.log():
        assert bus.process.poll() is None, bus.log()
        assert time.monotonic() < deadline, bus.log()
        time.sleep(0.1)
    time.sleep(1.0)
    assert bus.terminate() == -signal.SIGTERM
    log = bus.log()
    assert "stopping: 4 delivery(ies) in flight" in log, log
    # The four outputs were sent (nobody takes them here, so each is kept as unrouted)...
    assert log.count("unrouted: no app subscribes to noloss.Handled") == 4, log
    # ...and the four inputs acknowledged, none released to be delivered again.
    assert "of 4 delivery(ies) in flight at stop, 4 acknowledged, 0 not sent" in log, log
    assert "not sent" not in log.replace("0 not sent", "")
    assert "grace period over" not in log and "Traceback" not in log
