"""
Two processes of one config on one host, started as the README's "Many processes"
section says, from the same directory: no pidfile or port clash, each logs where its
page and console are, both answer there, and `scbus status` lists both (over RabbitMQ).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time

from ..web.http_client import BusHTTP
from .conftest import ROOT, free_port, twistd_command

CONFIG = """
[bus]
name = "onehost"
grace_period = 1

[transport]
type = "amqp"
url = "{url}"
heartbeat = 5
reconnect_max_delay = 2

[http]
port = {http}

[console]
telnet_port = {telnet}
users = {{ admin = "{hash}" }}

[apps.onehost]
builder = "tests.console_app:make_shop"
"""

PAGE = r"http: the status page is at http://127\.0\.0\.1:(\d+)/"
CONSOLE = r"console: telnet 127\.0\.0\.1 (\d+) to log in"


def documented_commands() -> list[list[str]]:
    """The README's foreground twistd lines for several processes of one config."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme[readme.index("### Many processes"):]
    lines = re.findall(r"^    (twistd -n .*?)\s+#", section, re.M)
    assert len(lines) == 2, lines
    return [shlex.split(line) for line in lines]


def wait_for(pattern: str, log_path: str, process: subprocess.Popen, timeout: float = 60.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        found = re.search(pattern, text)
        if found:
            return found
        assert process.poll() is None and time.monotonic() < deadline, f"exit {process.poll()}:\n{text[-3000:]}"
        time.sleep(0.1)


def test_two_processes_of_one_config_in_one_directory(rabbit, tmp_path):
    from scbus.passwords import hash_password

    from ..broker.test_status import fresh_vhost, scbus

    http_port, telnet_port = free_port(), free_port()
    config = tmp_path / "scbus.toml"
    config.write_text(CONFIG.format(
        url=fresh_vhost(rabbit, "one-host"), http=http_port, telnet=telnet_port,
        hash=hash_password("pw", iterations=1000),
    ))
    env = dict(os.environ, PYTHONPATH=ROOT)
    started: list[tuple[subprocess.Popen, str]] = []
    try:
        for number, argv in enumerate(documented_commands()):
            assert argv[0] == "twistd" and "--config=scbus.toml" in argv
            log_path = str(tmp_path / f"twistd-{number}.log")
            with open(log_path, "wb") as log:
                process = subprocess.Popen(
                    [*twistd_command(), *argv[1:]], cwd=str(tmp_path), env=env, stdout=log, stderr=subprocess.STDOUT,
                )
            started.append((process, log_path))
            wait_for("onehost: subscribed", log_path, process)
        pages = [int(wait_for(PAGE, log, p).group(1)) for p, log in started]
        consoles = [int(wait_for(CONSOLE, log, p).group(1)) for p, log in started]
        assert pages[0] == http_port and consoles[0] == telnet_port  # the first on the config's ports
        assert len(set(pages)) == 2 and len(set(consoles)) == 2 and 0 not in pages + consoles
        for port in pages:
            BusHTTP(port).wait("/ready", 200)
        assert not os.path.exists(tmp_path / "twistd.pid")

        out = scbus("status", "--config", str(config), "--json", "--timeout", "10")
        assert out.returncode == 0, out.stdout + out.stderr
        processes = sorted(answer["pid"] for answer in json.loads(out.stdout)["processes"])
        assert processes == sorted(p.pid for p, _ in started), out.stdout
        table = scbus("status", "--config", str(config), "--timeout", "10").stdout
        assert all(f":{p.pid}" in table for p, _ in started), table
    finally:
        for process, _ in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = [process.wait(30) for process, _ in started]
    assert codes == [-signal.SIGTERM] * 2, codes


def test_a_port_option_is_checked(tmp_path):
    config = tmp_path / "scbus.toml"
    config.write_text('[apps.onehost]\nbuilder = "tests.console_app:make_shop"\n')
    env = dict(os.environ, PYTHONPATH=ROOT)
    for option, problem in (
        ("--http-port=99999", "--http-port: expected a port from 0 to 65535, got '99999'"),
        ("--telnet-port=0", f"--telnet-port: {config} has no console.telnet_port to move"),
    ):
        out = subprocess.run(
            [*twistd_command(), "-n", "--pidfile=", "scbus", f"--config={config}", option],
            cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=60,
        )
        assert out.returncode != 0 and problem in out.stdout + out.stderr, out.stdout + out.stderr
