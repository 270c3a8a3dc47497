"""The SSH console: key authentication only, a real ssh client, a real twistd."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from .conftest import free_port, wait_for_port
from .test_console import assert_clean

pytest.importorskip("bcrypt")  # twisted[conch]
SSH = shutil.which("ssh")
KEYGEN = shutil.which("ssh-keygen")

CONFIG = """
[console]
ssh_port = {port}
ssh_host_key = "host_key"
ssh_authorized_keys = "authorized_keys"

[apps.clock]
builder = "apps.clock:make_clock"
config = {{ every = 0.2 }}
"""


def keygen(path):
    subprocess.run([KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)


def ssh(port, key, script, timeout=20):
    return subprocess.run(
        [SSH, "-tt", "-i", str(key), "-p", str(port), "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         "operator@127.0.0.1"],
        input=script, capture_output=True, timeout=timeout,
    )


@pytest.mark.skipif(SSH is None or KEYGEN is None, reason="needs the OpenSSH client (apt-get install openssh-client)")
def test_ssh_console_takes_authorized_keys_only(tmp_path, run_twistd):
    keygen(tmp_path / "host_key")
    keygen(tmp_path / "operator")
    keygen(tmp_path / "stranger")
    (tmp_path / "authorized_keys").write_text((tmp_path / "operator.pub").read_text())
    port = free_port()
    config = tmp_path / "scbus.toml"
    config.write_text(CONFIG.format(port=port))
    bus = run_twistd(str(tmp_path), str(config))
    wait_for_port(port, bus.process)

    refused = ssh(port, tmp_path / "stranger", b"")
    assert refused.returncode == 255 and b"Permission denied" in refused.stderr

    # Type a line, give the manhole a moment, then end the session.
    script = b"print('answer', 6 * 7)\r"
    proc = subprocess.Popen(
        [SSH, "-tt", "-i", str(tmp_path / "operator"), "-p", str(port), "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         "operator@127.0.0.1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.5)
        proc.stdin.write(script)
        proc.stdin.flush()
        time.sleep(1.5)
        proc.stdin.write(b"\x04")  # ^D ends the manhole session
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert b"answer 42" in out, out[-2000:]
    assert proc.returncode == 0  # leaving with Ctrl-D is a normal end, not a lost connection

    # exit() ends the session too, and so does the end of ssh's input: ssh returns by itself.
    left = ssh(port, tmp_path / "operator", b"exit()\r", timeout=30)
    assert left.returncode == 0, left.stderr[-2000:]
    time.sleep(0.5)
    assert_clean(bus.log())
