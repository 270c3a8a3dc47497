"""
contrib/: the systemd unit passes systemd's own checks, the container's config passes
check-config, and the image's HEALTHCHECK command, run as written, tells a ready bus
from one that is not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from ..e2e.conftest import ROOT, free_port, twistd_command
from .http_client import BusHTTP

CONTRIB = os.path.join(ROOT, "contrib")


def read(name: str) -> str:
    with open(os.path.join(CONTRIB, name), encoding="utf-8") as f:
        return f.read()


def local_config(port: int) -> str:
    """The image's config on C{port}, on loopback (the image listens on every interface)."""
    return read("docker.toml").replace("port = 8080", f"port = {port}").replace('"0.0.0.0"', '"127.0.0.1"')


def healthcheck_command(port: int) -> list[str]:
    """The Dockerfile's HEALTHCHECK CMD, pointed at C{port}."""
    dockerfile = read("Dockerfile").replace("\\\n", " ")
    (exec_form,) = re.findall(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", dockerfile, re.M)
    argv = json.loads(exec_form)
    assert argv[0] == "python"
    return [sys.executable, *[a.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for a in argv[1:]]]


def test_the_systemd_unit_passes_systemd_analyze(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = read("scbus@.service").replace("/opt/scbus/bin/twistd", twistd_command()[0])
    path = tmp_path / "scbus@orders.service"
    path.write_text(unit)
    out = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr
    assert "--config=/etc/scbus/%i.toml" in unit and "EnvironmentFile=-/etc/scbus/%i.env" in unit


def test_the_image_config_passes_check_config(tmp_path):
    shutil.copy(os.path.join(CONTRIB, "docker.toml"), tmp_path / "scbus.toml")
    scbus = os.path.join(os.path.dirname(sys.executable), "scbus")
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([scbus, "check-config", str(tmp_path / "scbus.toml")], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_healthcheck_follows_ready(tmp_path, run_twistd):
    port = free_port()
    nothing_there = subprocess.run(healthcheck_command(port), capture_output=True, timeout=60)
    assert nothing_there.returncode != 0

    unreachable = f'[transport]\ntype = "amqp"\nurl = "amqp://guest:guest@127.0.0.1:{free_port()}/"\n'
    config = local_config(port).replace('[transport]\ntype = "local"\n', unreachable)
    assert unreachable in config
    (tmp_path / "scbus.toml").write_text(config)
    bus = run_twistd(str(tmp_path), str(tmp_path / "scbus.toml"))
    BusHTTP(port).wait("/ready", 503)
    assert subprocess.run(healthcheck_command(port), capture_output=True, timeout=60).returncode != 0
    bus.terminate()

    (tmp_path / "scbus.toml").write_text(local_config(port))
    run_twistd(str(tmp_path), str(tmp_path / "scbus.toml"))
    BusHTTP(port).wait("/ready", 200)
    ok = subprocess.run(healthcheck_command(port), capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
