"""
The console's password as the README says to make it: `scbus hash-password --write`,
typed on a terminal under the usual umask 022, then the bus started as documented logs
where its console listens, and that address takes the login.
"""

from __future__ import annotations

import os
import re
import stat
import sys

from ..telnet import TelnetSession
from .conftest import ROOT, Twistd, run_on_a_terminal, wait_for_log

PASSWORD = "correct horse"


def documented_command() -> list[str]:
    """The README's line that makes the console's passwd file, as argv."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    (line,) = re.findall(r"^    (\.venv/bin/scbus hash-password --write .*?)\s+#", readme, re.M)
    argv = line.split()
    assert argv[0] == ".venv/bin/scbus"
    return [os.path.join(os.path.dirname(sys.executable), "scbus"), *argv[1:]]


def test_the_documented_passwd_command_gives_a_console_that_logs_in(tmp_path):
    old_umask = os.umask(0o022)
    try:
        code, shown = run_on_a_terminal(
            documented_command(), str(tmp_path), [("Password: ", PASSWORD), ("Again: ", PASSWORD)]
        )
    finally:
        os.umask(old_umask)
    assert code == 0, shown
    passwd = tmp_path / "console.passwd"
    assert stat.S_IMODE(passwd.stat().st_mode) == 0o600, oct(passwd.stat().st_mode)
    assert "added admin (mode 600)" in shown and PASSWORD not in passwd.read_text()

    (tmp_path / "scbus.toml").write_text(
        '[bus]\nname = "passwd"\ngrace_period = 1\n\n'
        '[console]\ntelnet_port = 0\npasswd_file = "console.passwd"\n\n'
        '[apps.shop]\nbuilder = "tests.console_app:make_shop"\n'
    )
    bus = Twistd(str(tmp_path), str(tmp_path / "scbus.toml"))
    try:
        # The log says where the console listens (port 0: the one the system chose).
        found = wait_for_log(bus, r"console: telnet (127\.0\.0\.1) (\d+) to log in")
        host, port = found.group(1), int(found.group(2))
        assert port != 0
        with TelnetSession(host, port) as session:
            session.read_until("Username: ")
            session.send_line("admin")
            session.read_until("Password: ")
            session.send_line(PASSWORD)
            session.read_until(">>> ")
            assert "shop" in session.run("status()", r"\n>>> ")
        assert "console not started" not in bus.log()
        assert bus.terminate() in (0, -15, 143)
    finally:
        bus.kill()


def test_a_second_write_changes_one_line_and_keeps_the_rest(tmp_path):
    from scbus.passwords import hash_password, read_passwd_file, verify_password, write_passwd_entry

    path = tmp_path / "console.passwd"
    first, second = hash_password("one", iterations=10), hash_password("two", iterations=10)
    path.write_text(f"# operators\nadmin:{first}\nbob:{first}\n")
    path.chmod(0o664)  # group-writable: refused by the bus; the write takes that bit away
    assert write_passwd_entry(str(path), "admin", second) is True
    assert path.read_text().splitlines()[0] == "# operators"
    users = read_passwd_file(str(path))
    assert verify_password("two", users["admin"]) and verify_password("one", users["bob"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert write_passwd_entry(str(path), "carol", first) is False
    assert set(read_passwd_file(str(path))) == {"admin", "bob", "carol"}
