"""`scbus status` and `scbus ping` without a broker: what they say when they cannot ask."""

import os
import socket
import subprocess
import sys

import pytest

SCBUS = os.path.join(os.path.dirname(sys.executable), "scbus")

CONFIG = """
[transport]
type = "amqp"
url = "{url}"

[apps.clock]
builder = "apps.clock:make_clock"
"""


def scbus(*args, stdout=subprocess.PIPE):
    return subprocess.run([SCBUS, *args], stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60)


@pytest.fixture
def config_for(tmp_path):
    def write(url):
        path = tmp_path / "scbus.toml"
        path.write_text(CONFIG.format(url=url))
        return str(path)

    return write


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_version():
    from scbus import __version__

    out = scbus("--version")
    assert (out.returncode, out.stdout) == (0, f"scbus {__version__}\n")


def test_ping_an_app_the_config_does_not_have(config_for):
    path = config_for(f"amqp://127.0.0.1:{closed_port()}/")
    out = scbus("ping", "--config", path, "--app", "nosuch")
    assert out.returncode == 2
    assert out.stderr == f"scbus: {path}: apps.nosuch: the config has no app 'nosuch' (its apps: clock)\n"


def test_a_refused_connection_says_so(config_for):
    port = closed_port()
    out = scbus("status", "--config", config_for(f"amqp://u:secret@127.0.0.1:{port}/"))
    assert out.returncode == 3
    assert out.stderr == (
        f"scbus: cannot reach the broker: amqp://127.0.0.1:{port}: connection refused: nothing "
        "listens there (is RabbitMQ running, and is the port right?)\n"
    )


def test_a_silent_address_times_out_and_says_so(config_for):
    with socket.socket() as silent:  # accepts connections (the kernel does) and never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        out = scbus("ping", "--config", config_for(f"amqp://127.0.0.1:{port}/"), "--timeout", "1")
    assert out.returncode == 3
    assert out.stderr.startswith(f"scbus: cannot reach the broker: amqp://127.0.0.1:{port}: no answer within 1s")


def test_a_reader_that_leaves_early_costs_no_traceback(tmp_path):
    path = tmp_path / "scbus.toml"
    path.write_text('[apps.clock]\nbuilder = "apps.clock:make_clock"\n')
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head` does once it has its lines
    try:
        out = scbus("check-config", str(path), stdout=write_end)
    finally:
        os.close(write_end)
    assert out.returncode == 1 and out.stderr == ""


def test_status_and_ping_start_without_twisted():
    """Start-up is most of their wall time (bench/cli_latency.py): they import no Twisted."""
    code = (
        "import contextlib, io, sys, scbus.cli, scbus.config, scbus.control, scbus.cli.control_client\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    scbus.cli.main(['--version'])  # every subcommand registered, as for status\n"
        "print(sorted(m for m in sys.modules if m.startswith('twisted')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
