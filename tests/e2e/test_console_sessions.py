"""
The console's doors with real clients against a real `twistd -n scbus`: failed logins
are limited per connection and slowed per source address; every way out of a session
(exit(), Ctrl-D in Debian's telnet, a client that does not negotiate) leaves no
traceback in the log; a console port in use is one line and a non-zero exit.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import time

import pytest

from scbus.passwords import hash_password

from ..telnet import TelnetSession, TerminalTelnet
from .conftest import ROOT, twistd_command
from .test_console import PASSWORD, Console, assert_clean, start_bus

TELNET = shutil.which("telnet")
NC = shutil.which("nc")
needs_clients = pytest.mark.skipif(
    TELNET is None or NC is None, reason="needs Debian's telnet and nc (apt-get install telnet netcat-openbsd)"
)


@pytest.fixture(scope="module")
def shared_bus(tmp_path_factory):
    twistd, port = start_bus(tmp_path_factory.mktemp("sessions"), "sessions")
    twistd.port = port
    yield twistd
    twistd.kill()


@pytest.fixture
def bus(shared_bus):
    """The shared process; C{bus.new_log()} is what it logged during this test."""
    start = len(shared_bus.log())
    shared_bus.new_log = lambda: shared_bus.log()[start:]
    return shared_bus


def log_in(terminal: TerminalTelnet, password: str, since: int = 0) -> None:
    terminal.read_until("Username: ", since=since)
    terminal.type("operator\r")
    terminal.read_until("Password: ", since=since)
    terminal.type(password + "\r")


def read_until(stream, wanted: bytes, timeout: float = 20.0) -> bytes:
    """What a program printed, up to C{wanted}, within C{timeout}."""
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{wanted!r} not printed within {timeout}s; got {seen!r}"
        if select.select([stream], [], [], min(left, 0.5))[0]:
            chunk = os.read(stream.fileno(), 4096)
            assert chunk, f"ended before {wanted!r}; got {seen!r}"
            seen += chunk
    return seen


def seconds_until(terminal: TerminalTelnet, pattern: str, since: int) -> float:
    started = time.monotonic()
    terminal.read_until(pattern, timeout=30, since=since)
    return time.monotonic() - started


@needs_clients
def test_failed_logins_are_limited_per_connection_and_slowed_per_source(bus):
    with TerminalTelnet("127.0.0.1", bus.port) as telnet:
        waits = []
        telnet.read_until("Username: ")
        for attempt in range(3):
            mark = len(telnet.text)
            telnet.type("operator\r")
            telnet.read_until("Password: ", since=mark)
            telnet.type(f"guess {attempt}\r")
            waits.append(seconds_until(telnet, "Authentication failed", since=mark))
            if attempt < 2:
                telnet.read_until("Authentication failed\nUsername: ", since=mark)
        telnet.read_until("too many attempts", since=mark)
        telnet.read_until("Connection closed by foreign host", since=mark)
        telnet.wait(10)  # telnet ends by itself: the server closed the connection
    # Each answer waited at least as long as the back-off says (0.5 s, doubled each time).
    assert waits[0] >= 0.5 and waits[1] >= 1.0 and waits[2] >= 2.0, waits

    # A new connection from the same address starts where the last one left off...
    with TelnetSession("127.0.0.1", bus.port) as session:
        session.read_until("Username: ")
        session.send_line("operator")
        session.read_until("Password: ")
        mark = len(session.text)
        started = time.monotonic()
        session.send_line("guess 3")
        session.read_until("Authentication failed", timeout=30, since=mark)
        assert time.monotonic() - started >= 4.0
        # ...and the right password still works, and clears the count.
        session.read_until("Username: ", since=mark)
        session.send_line("operator")
        session.read_until("Password: ", since=mark)
        session.send_line(PASSWORD)
        session.read_until(">>> ", since=mark)
    log = bus.new_log()
    assert "failed login 3 of 3 for user 'operator' from 127.0.0.1" in log
    assert "127.0.0.1 disconnected after 3 failed logins" in log
    assert_clean(log)


def test_exit_and_quit_end_the_session_quietly(bus):
    for verb in ("exit()", "quit()"):
        console = Console(bus.port)
        try:
            console.session.send_line(verb)
            with pytest.raises(AssertionError, match="connection closed"):
                console.session.read_until("never printed", timeout=10)
        finally:
            console.close()
    time.sleep(0.5)
    assert "SystemExit" not in bus.new_log()
    assert_clean(bus.new_log())


@needs_clients
def test_ctrl_d_in_debian_telnet_ends_the_session_quietly(bus):
    with TerminalTelnet("127.0.0.1", bus.port) as telnet:
        log_in(telnet, PASSWORD)
        telnet.read_until(">>> ")
        mark = len(telnet.text)
        telnet.type("print(6 * 7)\r")
        telnet.read_until(r"\n42\n", since=mark)
        telnet.type(b"\x04")  # line mode is on: telnet sends IAC EOF
        telnet.read_until("Connection closed by foreign host", since=mark)
        assert telnet.wait(10) == 0
    # Ctrl-D at the login prompt leaves too.
    with TerminalTelnet("127.0.0.1", bus.port) as telnet:
        telnet.read_until("Username: ")
        telnet.type(b"\x04")
        telnet.type(b"\r")
        telnet.read_until("Connection closed by foreign host")
    time.sleep(0.5)
    assert "Stumped" not in bus.new_log()
    assert_clean(bus.new_log())


@needs_clients
def test_a_client_that_does_not_negotiate_logs_in_and_leaves_quietly(bus):
    nc = subprocess.Popen([NC, "127.0.0.1", str(bus.port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        out = b""
        for line, answer in (
            (b"operator\n", b"Password: "), (PASSWORD.encode() + b"\n", b">>> "), (b"print(6 * 7)\n", b"42"),
            (b"for n in (1, 2):\n", b"... "), (b"  print(n)\n", b"... "), (b"\n", b"2\r\n>>> "),
            (b"status()\n", b"paused"),
        ):
            nc.stdin.write(line)
            nc.stdin.flush()
            out += read_until(nc.stdout, answer)
        nc.stdin.write(b"exit()\n")
        nc.stdin.flush()
        rest, _ = nc.communicate(timeout=15)  # the server ends the connection: nc ends
        out += rest
    finally:
        if nc.poll() is None:
            nc.kill()
            nc.wait(10)
    assert b">>> 42\r\n>>> " in out and b">>> 1\r\n2\r\n>>> " in out.replace(b"... ", b""), out[-500:]
    # No telnet negotiation and no terminal escape codes: plain lines for a plain client.
    assert b"\xff" not in out and b"\x1b" not in out, out[-500:]
    # One that leaves while asked for its password, and one that leaves at once.
    for lines, prompt in (([b"operator\n"], b"Password: "), ([], b"Username: ")):
        nc = subprocess.Popen([NC, "127.0.0.1", str(bus.port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            nc.stdin.write(b"".join(lines))
            nc.stdin.flush()
            assert prompt in read_until(nc.stdout, prompt)
        finally:
            nc.kill()
            nc.wait(10)
    time.sleep(0.5)
    log = bus.new_log()
    assert "AlreadyNegotiating" not in log and "ConnectionDone" not in log
    assert_clean(log)


def test_a_console_port_in_use_is_one_line_and_a_non_zero_exit(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "scbus.toml"
        config.write_text(
            f'[console]\ntelnet_port = {port}\nusers = {{ operator = "{hash_password("pw", iterations=1000)}" }}\n\n'
            '[apps.shop]\nbuilder = "tests.console_app:make_shop"\n'
        )
        out = subprocess.run(
            [*twistd_command(), "-n", "--pidfile=", "--logfile=-", "scbus", f"--config={config}"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    problem = [line for line in text.splitlines() if "listen" in line or "error" in line]
    assert len(problem) == 1, text
    assert problem[0].endswith(
        f"scbus: console.telnet_port: cannot listen on 127.0.0.1 port {port}: Address already in use"
    ), text
    assert "Traceback" not in text and "CannotListenError" not in text
