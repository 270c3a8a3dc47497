"""`scbus check-config` and `twistd -n scbus` give the same verdict on the same file."""

import os
import subprocess
import sys

import pytest

from scbus.cli.main import main

BIN = os.path.dirname(sys.executable)

GOOD = """
[bus]
name = "cli-test"

[apps.clock]
builder = "apps.clock:make_clock"
config = { every = 1 }
"""

BAD = {
    "no-app": '[bus]\nname = "x"\n',
    "disabled": GOOD.replace("[apps.clock]", "[apps.clock]\nenabled = false"),
    "several": GOOD.replace('name = "cli-test"', 'name = "x"\ngrace_period = nan\ncolour = 1')
    + '[apps.other]\nbuilder = "apps.nosuch:make"\nmax_in_flight = 100000000\n',
    "not-utf8": GOOD.replace("cli-test", "cli-t\udcffst"),
    "builder-exits": GOOD.replace("apps.clock:make_clock", "exiting:make"),
}


def _write(tmp_path, name, text):
    path = tmp_path / f"{name}.toml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    (tmp_path / "exiting.py").write_text("def make(name, root, config):\n    raise SystemExit(3)\n")
    return str(path)


def _run(*command, cwd):
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize("name", sorted(BAD))
def test_check_config_and_twistd_refuse_alike(tmp_path, name):
    path = _write(tmp_path, name, BAD[name])
    checked = _run(os.path.join(BIN, "scbus"), "check-config", path, cwd=tmp_path)
    started = _run(os.path.join(BIN, "twistd"), "-n", "--pidfile=", "scbus", f"--config={path}", cwd=tmp_path)
    lines = checked.stderr.splitlines()
    assert (checked.returncode, started.returncode) == (2, 2)
    assert started.stderr.splitlines() == lines
    assert lines and all(line.startswith(f"scbus: {path}: ") for line in lines), lines
    assert "Traceback" not in checked.stderr + started.stderr


def test_several_problems_are_one_line_each(tmp_path, capsys):
    path = _write(tmp_path, "several", BAD["several"])
    assert main(["check-config", path]) == 2
    keys = [line.split(": ")[2] for line in capsys.readouterr().err.splitlines()]
    assert keys == ["bus.grace_period", "bus.colour", "apps.other.max_in_flight"]


def test_a_good_file_is_ok_and_a_missing_passwd_file_is_a_warning(tmp_path, capsys):
    text = GOOD + '\n[console]\ntelnet_port = 4040\npasswd_file = "console.passwd"\n'
    path = _write(tmp_path, "good", text)
    assert main(["check-config", path]) == 0
    out = capsys.readouterr()
    assert out.out == f"{path}: ok (1 app(s): clock)\n"
    assert out.err.startswith(f"scbus: warning: {path}: console.passwd_file: ")
    assert "the console will not start" in out.err
