"""
The README's deployment recipes, performed as written as far as this machine allows.

systemd: every shell line of the README's recipe runs, in order, in one shell on a
terminal (the console password is typed at its prompt), with /opt, /etc and /var/lib
moved under a temporary root; the steps that need the system itself (apt-get, useradd,
chown to the service user, systemctl, journalctl) are stand-ins that record their call.
Then the installed unit's ExecStart runs as systemd would start it (its working
directory, its environment file, no PYTHONPATH) and stops with SIGTERM.

Docker cannot run here: the Dockerfile's steps are checked (what it COPYs exists and is
let through by its .dockerignore), then performed the same way in a fresh virtualenv
standing in for the image's Python, and its CMD started in its WORKDIR.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
from fnmatch import fnmatch

import pytest

from ..e2e.conftest import ROOT, free_port, run_on_a_terminal
from .http_client import BusHTTP

PASSWORD = "deploy me"
CONTRIB = os.path.join(ROOT, "contrib")
#: Steps that need the machine itself: a stand-in records each call instead.
STAND_INS = ("apt-get", "useradd", "chown", "systemctl", "journalctl")


def checkout_copy(tmp_path) -> str:
    """A copy of the checkout's tracked files (what a fresh clone has), to build from."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, timeout=60)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot tell which files a clone has")
    source = tmp_path / "checkout"
    for name in listed.stdout.decode().split("\0"):
        if name and os.path.isfile(os.path.join(ROOT, name)):
            os.makedirs(source / os.path.dirname(name), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), source / name)
    return str(source)


def readme_block(after: str) -> list[str]:
    """The indented shell lines of the README's first code block after the line starting C{after}."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(after))
    block: list[str] = []
    for line in lines[start + 1:]:
        if line.startswith("    "):
            block.append(line[4:])
        elif block:
            break
    assert block, f"no code block after {after!r}"
    return block


def prelude(calls: str) -> str:
    """The shell's stand-ins, and the Python these tests run on as python3."""
    functions = "".join(f'{name}() {{ echo "{name} $*" >> {shlex.quote(calls)}; }}\n' for name in STAND_INS)
    return f"set -e\numask 022\n{functions}python3() {{ {shlex.quote(sys.executable)} \"$@\"; }}\n"


def moved(text: str, root: str) -> str:
    """System paths under the temporary root."""
    for system_path in ("/opt/scbus", "/etc/scbus", "/etc/systemd/system", "/var/lib/scbus"):
        text = text.replace(system_path, root + system_path)
    return text


def free_ports(config_path: str) -> tuple[int, int]:
    """The example's fixed ports (8080, 4040) swapped for free ones: other buses run here."""
    http, telnet = free_port(), free_port()
    with open(config_path, encoding="utf-8") as f:
        text = f.read()
    assert "port = 8080" in text and "telnet_port = 4040" in text
    with open(config_path, "w", encoding="utf-8") as f:
        f.write(text.replace("telnet_port = 4040", f"telnet_port = {telnet}").replace("port = 8080", f"port = {http}"))
    return http, telnet


def unit_settings(path: str) -> dict[str, str]:
    with open(path, encoding="utf-8") as f:
        return dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line and not line.startswith("#"))


def read_env_file(path: str) -> dict[str, str]:
    with open(path, encoding="utf-8") as f:
        return dict(line.split("=", 1) for line in f.read().splitlines() if line.strip() and not line.startswith("#"))


def start_and_stop(argv: list[str], cwd: str, env: dict[str, str], http_port: int, telnet_port: int) -> str:
    """Start the bus, see it ready (page, console, an app writing in its directory), SIGTERM it; its log."""
    log_path = os.path.join(cwd, "..", f"twistd-{os.path.basename(cwd)}.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        http = BusHTTP(http_port, token=env.get("SCBUS_HTTP_TOKEN"))
        http.wait("/ready", 200, timeout=60)
        code, page = http.get("/page.json")
        assert code == 200 and page["writable"] is True, page  # the token came from the environment
        code, answer = http.post("/messages", {"type": "clock.Tick", "data": {"count": 1}})
        assert code == 202, answer
        with open(log_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        assert f"console: telnet 127.0.0.1 {telnet_port} to log in" in text, text[-3000:]
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == -signal.SIGTERM  # twistd's clean stop: 143 in a shell
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    with open(log_path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    assert "Traceback" not in text and "Unable to write to plugin cache" not in text, text[-3000:]
    assert "console not started" not in text and "is not set" not in text, text[-3000:]
    return text


def test_the_systemd_recipe_as_written(tmp_path):
    source = checkout_copy(tmp_path)
    root = str(tmp_path / "root")
    os.makedirs(root + "/etc/systemd/system")
    calls = str(tmp_path / "stand-in-calls")
    steps = readme_block("**systemd**")
    script = prelude(calls) + "\n".join(moved(step, root) for step in steps) + "\n"
    code, shown = run_on_a_terminal(
        ["bash", "-c", script], source, [("Password: ", PASSWORD), ("Again: ", PASSWORD)], timeout=240,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )
    assert code == 0, shown[-4000:]
    assert "orders.toml: ok (5 app(s)" in shown, shown[-4000:]

    with open(calls, encoding="utf-8") as f:
        recorded = f.read().splitlines()
    commands = [part.split("#")[0].strip() for step in steps for part in step.split("&&")]
    assert recorded == [moved(c, root) for c in commands if c.split()[0] in STAND_INS], recorded
    for secret in ("console.passwd", "orders.env"):
        mode = stat.S_IMODE(os.stat(f"{root}/etc/scbus/{secret}").st_mode)
        assert mode == 0o600, (secret, oct(mode))

    unit = unit_settings(f"{root}/etc/systemd/system/scbus@.service")
    instance = {k: moved(v.replace("%i", "orders"), root) for k, v in unit.items()}
    workdir = instance["WorkingDirectory"]
    assert workdir == f"{root}/var/lib/scbus/orders" and unit["StateDirectory"] == "scbus/%i"
    os.makedirs(workdir)  # StateDirectory= makes it
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **read_env_file(instance["EnvironmentFile"].lstrip("-"))}
    http_port, telnet_port = free_ports(f"{root}/etc/scbus/orders.toml")
    argv = shlex.split(instance["ExecStart"])
    assert argv[0] == f"{root}/opt/scbus/bin/twistd"
    start_and_stop(argv, workdir, env, http_port, telnet_port)


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments), continuation lines joined, comments dropped."""
    with open(os.path.join(CONTRIB, "Dockerfile"), encoding="utf-8") as f:
        text = re.sub(r"\\\n\s*", " ", "\n".join(line for line in f.read().splitlines() if not line.startswith("#")))
    return [tuple(line.split(None, 1)) for line in text.splitlines() if line.strip()]  # type: ignore[misc]


def let_through(path: str) -> bool:
    """Whether the .dockerignore beside the Dockerfile sends C{path} to the build."""
    with open(os.path.join(CONTRIB, "Dockerfile.dockerignore"), encoding="utf-8") as f:
        patterns = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    sent = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        if fnmatch(path, pattern) or path.startswith(pattern.rstrip("/") + "/"):
            sent = negated
    return sent


def test_the_dockerfile_steps_in_a_virtualenv(tmp_path):
    source = checkout_copy(tmp_path)
    image = str(tmp_path / "image")
    venv = os.path.join(image, "python")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    instructions = dockerfile()
    kinds = [kind for kind, _ in instructions]
    assert kinds[0] == "FROM" and instructions[0][1].startswith("python:3.11"), instructions[0]
    secret = tmp_path / "console_password.txt"
    secret.write_text(PASSWORD + "\n")

    def in_image(path: str) -> str:
        return image + path if path.startswith("/") else os.path.join(workdir, path)

    workdir, cmd = image, None
    calls = str(tmp_path / "stand-in-calls")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "")
    for kind, arguments in instructions:
        if kind == "COPY":
            *sources, destination = arguments.split()
            for name in sources:
                assert os.path.exists(os.path.join(source, name)), f"COPY {name}: not in a clone"
                assert let_through(name), f"COPY {name}: the .dockerignore leaves it out"
                target = in_image(destination)
                if destination.endswith("/"):
                    target = os.path.join(target, os.path.basename(name))
                os.makedirs(os.path.dirname(target.rstrip("/")), exist_ok=True)
                copy = shutil.copytree if os.path.isdir(os.path.join(source, name)) else shutil.copy
                copy(os.path.join(source, name), target)
        elif kind == "WORKDIR":
            workdir = in_image(arguments)
            os.makedirs(workdir, exist_ok=True)
        elif kind == "RUN":
            command = re.sub(r"^--mount=type=secret,id=(\w+)\S*\s+", "", arguments)
            command = command.replace("/run/secrets/console_password", str(secret))
            command = re.sub(r"(?<![\w.])/src\b", image + "/src", command)
            out = subprocess.run(
                ["bash", "-c", prelude(calls) + command], cwd=workdir, env=env, capture_output=True, text=True, timeout=240,
            )
            assert out.returncode == 0, f"RUN {arguments}:\n{out.stdout[-2000:]}{out.stderr[-2000:]}"
        elif kind == "CMD":
            cmd = json.loads(arguments)
    assert "USER scbus" in [" ".join(i) for i in instructions] and ("STOPSIGNAL", "SIGTERM") in instructions
    assert stat.S_IMODE(os.stat(os.path.join(workdir, "console.passwd")).st_mode) == 0o600
    with open(calls, encoding="utf-8") as f:
        assert [line.split()[0] for line in f] == ["useradd", "chown"]
    assert not os.path.exists(image + "/src"), "the build removes its sources"

    assert cmd is not None and cmd[0] == "twistd"
    config = os.path.join(workdir, "scbus.toml")
    with open(config, encoding="utf-8") as f:
        text = f.read()
    with open(config, "w", encoding="utf-8") as f:  # loopback here: the image listens on every interface
        f.write(text.replace('"0.0.0.0"', '"127.0.0.1"'))
    http_port, telnet_port = free_ports(config)
    run_env = {"PATH": env["PATH"], "LANG": "C.UTF-8", "SCBUS_HTTP_TOKEN": "a token for the test"}
    log = start_and_stop([os.path.join(venv, "bin", cmd[0]), *cmd[1:]], workdir, run_env, http_port, telnet_port)
    assert all(json.loads(line) for line in log.splitlines() if line.startswith("{"))  # log_format = "json"
