"""
The console end to end: a real `twistd -n scbus` process, a real telnet session, every
verb of the README's console table with what it prints, on the in-memory transport and
on RabbitMQ with each client. One process per transport; all verbs in one session.
"""

from __future__ import annotations

import re
import time

import pytest

from scbus.passwords import hash_password

from ..telnet import TelnetSession
from .conftest import Twistd, free_port, wait_for_port

PASSWORD = "open sesame"

CONFIG = """
[bus]
name = "console-{label}"
grace_period = 2

[console]
telnet_port = {port}
users = {{ operator = "{hash}" }}
{transport}
[apps.shop]
builder = "tests.console_app:make_shop"
"""

AMQP = """
[transport]
type = "amqp"
url = "{url}"
client = "{client}"
heartbeat = 5
reconnect_max_delay = 2
"""

#: A line in a twistd log that means something went wrong where nobody could see it.
ALARMS = re.compile(r"Traceback|#critical\]|Unhandled error|Unhandled Error")


def start_bus(tmp_path, label: str, transport: str = "") -> tuple[Twistd, int]:
    port = free_port()
    workdir = tmp_path / label
    workdir.mkdir()
    config = workdir / "scbus.toml"
    config.write_text(
        CONFIG.format(label=label, port=port, hash=hash_password(PASSWORD, iterations=10_000), transport=transport)
    )
    bus = Twistd(str(workdir), str(config))
    try:
        wait_for_port(port, bus.process, timeout=60)
        deadline = time.monotonic() + 60
        while "shop: subscribed" not in bus.log():  # consuming, over RabbitMQ too
            assert bus.process.poll() is None and time.monotonic() < deadline, bus.log()[-3000:]
            time.sleep(0.1)
    except BaseException:
        bus.kill()
        raise
    return bus, port


def assert_clean(log: str) -> None:
    alarms = [line for line in log.splitlines() if ALARMS.search(line)]
    assert not alarms, log[-5000:]
    assert PASSWORD not in log


class Console:
    """A logged-in telnet session; C{ask} types a line and waits for its answer."""

    def __init__(self, port: int) -> None:
        self.session = TelnetSession("127.0.0.1", port)
        self.session.read_until("Username: ")
        self.session.send_line("operator")
        self.session.read_until("Password: ")
        self.session.send_line(PASSWORD)
        self.session.read_until(">>> ")

    def ask(self, line: str, answer: str, timeout: float = 20.0) -> str:
        """The output after the echoed line, once C{answer} (a regex) shows in it."""
        mark = len(self.session.text)
        self.session.send_line(line)
        self.session.read_until(r"\n", timeout, since=mark)
        end_of_echo = self.session.text.index(b"\n", mark) + 1
        out = self.session.read_until(answer, timeout, since=end_of_echo)
        pending = re.search(r"<Deferred #(\d+)>", out)
        if pending:  # over RabbitMQ the answer follows the prompt: wait for all of it
            out = self.session.read_until(
                rf"(?s)Deferred #{pending.group(1)} (called back|failed).*\n>>> ", timeout, since=end_of_echo
            )
        return out.replace("\r", "")

    def poll(self, line: str, answer: str, timeout: float = 30.0) -> str:
        """Ask again until the answer matches C{answer}: for what happens in the background."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.ask(line, r"\n>>> ")
            if re.search(answer, out):
                return out
            assert time.monotonic() < deadline, f"{answer!r} never answered {line!r}; last: {out!r}"
            time.sleep(0.3)

    def close(self) -> None:
        self.session.close()


def every_verb(console: Console) -> None:
    """The README's console table, verb by verb, with what each prints."""
    out = console.ask("send(messages['console.Order'](item='tea'))", r"sent Order\(item='tea'\) as [0-9a-f]{32}")
    assert "None" not in out
    out = console.poll("status()", r"\nshop\s+1\s+0\s+0/10\s+0\s+0\s+[0-9.]+s ago\s+no")
    assert re.search(r"app\s+handled\s+errors\s+in flight\s+queued\s+redelivered\s+last handled\s+paused", out)

    out = console.ask("app_status('shop')", r"last error\s+none")
    assert re.search(r"app shop\n\s+handled\s+1\n\s+errors\s+0\n\s+in flight\s+0/10\n", out), out
    assert re.search(r"last handled\s+\d+(\.\d)? s ago", out), out
    console.poll("app_status('shop')", r"idle every 0\.5 s\s+last ran \d+(\.\d)? s ago")
    assert "AppStatus(" not in out

    assert "paused shop" in console.ask("pause('shop')", r"paused shop")
    console.ask("send(messages['console.Order'](item='coffee'))", r"sent Order\(item='coffee'\)")
    # held while paused: waiting in the queue, or (over RabbitMQ) prefetched by the consumer
    out = console.poll("app_status('shop')", r"queued\s+1\n\s+prefetched\s+0\n|queued\s+0\n\s+prefetched\s+1\n")
    assert re.search(r"handled\s+1\n(.*\n)*\s+paused\s+yes\n", out), out
    assert "resumed shop" in console.ask("resume('shop')", r"resumed shop")
    console.poll("status()", r"\nshop\s+2\s+0\s+0/10\s+0\s+0\s+\S+ ago\s+no")

    out = console.ask("send(messages['console.Orphan'](n=7))", r"sent Orphan\(n=7\) as [0-9a-f]{32}")
    out = console.poll("unrouted()", r"console\.Orphan")
    row = re.search(r"\n(\w+)\s+(\w+)\s+console\.Orphan\s+(\S+)\s+(\d+(?:\.\d)? s ago)\s+(\d+) bytes\s+(\S.*)", out)
    assert row, out
    entry_id, code, app, _, size, reason = row.groups()
    assert code == "unrouted" and app == "-" and int(size) > 20 and reason.strip(), out
    assert re.search(r"id\s+code\s+type\s+app\s+age\s+size\s+reason", out)
    out = console.ask(f"replay('unrouted', '{entry_id}')", r"not replayed: .*\n")
    assert f"no app subscribes to console.Orphan yet; {entry_id} stays in unrouted (force=True" in out, out
    assert f"replayed {entry_id}" in console.ask(f"replay('unrouted', '{entry_id}', force=True)", r"replayed \w+")
    console.poll("unrouted()", entry_id)  # still nobody takes it: kept again, under its id
    out = console.ask("replay('unrouted', 'nosuch')", r"no unrouted message nosuch")

    assert "(none)" in console.ask("dead_letters()", r"\n>>> ")
    console.ask("_ = transport.publish_raw(b'{broken', 'console.Order')", r">>> ")
    out = console.poll("dead_letters()", r"malformed")
    # The type comes from the AMQP type property; a body that is not JSON names none in
    # memory. The age counts from when it was set aside (over AMQP: a header says when).
    row = re.search(r"\n(\w+)\s+malformed\s+(console\.Order|\?)\s+shop\s+(\d+(\.\d)? s ago)\s+7 bytes\s+\S", out)
    assert row, out

    out = console.ask("heartbeat('shop')", r"sent HeartbeatMessage\(app_name='shop'\) as [0-9a-f]{32}")
    console.poll("app_status('shop')", r"heartbeat lag\s+\d+\.\d{3} s, measured \d+(\.\d)? s ago")

    out = console.ask("processes()", r"healthy|PROBLEM")
    assert re.search(r"process\s+version\s+uptime\s+apps\n\S+\s+\S+\s+\d+s\s+shop", out), out
    assert re.search(r"\nshop\s+\S+\s+\d+\s+0/10\s+3\s+0", out), out
    assert "healthy" in out

    out = console.ask("lag('shop')", r"healthy|PROBLEM", timeout=30)
    assert re.search(r"\nshop\s+\S+\s+\d+\s+0/10\s+\d+\s+0\s+\d+\s+\S+ ago\s+-\s+\d+\.\d{3}s\s+no", out), out

    out = console.ask("help()", r"bus, transport, apps")
    assert "exit() or Ctrl-D leaves it" in out
    assert "send(messages['clock.Tick'](count=1))" in out and "apps.clock" not in out

    out = console.ask("messages", r"'console\.Order': <class '[\w.]*Order'>")
    assert "'scbus.Heartbeat'" in out

    assert not re.search(r"called back: None|\nNone\r?\n", console.session.text.decode("utf-8", "replace"))


def leave(console: Console) -> None:
    console.session.send_line("exit()")
    with pytest.raises(AssertionError, match="connection closed"):
        console.session.read_until("never printed", timeout=10)


def run_every_verb(tmp_path, label: str, transport: str = "") -> None:
    bus, port = start_bus(tmp_path, label, transport)
    try:
        console = Console(port)
        try:
            every_verb(console)
            leave(console)
        finally:
            console.close()
        time.sleep(0.5)  # anything logged on the way out
        assert_clean(bus.log())
    finally:
        bus.kill()


def test_every_verb_in_memory(tmp_path):
    run_every_verb(tmp_path, "local")


@pytest.mark.parametrize("client", ["pika", "txamqp"])
def test_every_verb_over_rabbitmq(tmp_path, rabbit, client):
    vhost = f"console-{client}-{free_port()}"
    rabbit.ctl("add_vhost", vhost)
    rabbit.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    url = rabbit.url.rsplit("/", 1)[0] + "/" + vhost
    run_every_verb(tmp_path, client, AMQP.format(url=url, client=client))
