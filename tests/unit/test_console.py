"""The console's authentication and the operator's namespace."""

import re
import time

import pytest
from twisted.cred import credentials, error
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from scbus.console import (
    LoginGuard,
    PasswordHashChecker,
    SetAsideList,
    StatusTable,
    age,
    make_namespace,
    read_passwd_file,
)
from scbus.console.telnet import telnet_factory
from scbus.errors import ConfigError
from scbus.message import Message
from scbus.passwords import hash_password, verify_password
from scbus.testing import BusHarness, result_of
from scbus.transports.setaside import SetAsideMessage


class Order(Message, wire_name="test.console.Order"):
    item: str


class Orphan(Message, wire_name="test.console.Orphan"):
    n: int


def inline(f, *args):
    return maybeDeferred(f, *args)


@pytest.fixture
def checker():
    return PasswordHashChecker({"admin": hash_password("s3cret", iterations=1000)}, verify_in=inline)


def login(checker, user, password):
    return checker.requestAvatarId(credentials.UsernamePassword(user, password))


def test_password_hashes():
    stored = hash_password("pw", iterations=1000)
    assert stored.startswith("pbkdf2_sha256$1000$") and "pw" not in stored
    assert verify_password("pw", stored) and not verify_password("PW", stored)
    assert not verify_password("pw", None) and not verify_password("pw", "garbage")


def test_right_credentials_log_in(checker):
    assert result_of(login(checker, b"admin", b"s3cret")) == b"admin"


@pytest.mark.parametrize("user, password", [(b"admin", b"wrong"), (b"root", b"s3cret"), (b"", b"")])
def test_wrong_credentials_and_unknown_users_are_refused(checker, user, password):
    with pytest.raises(error.UnauthorizedLogin):
        result_of(login(checker, user, password))


def test_passwd_file(tmp_path):
    path = tmp_path / "passwd"
    stored = hash_password("x", iterations=1000)
    path.write_text(f"# operators\n\nalice:{stored}\nbob:{stored}:extra-fields-ignored\n")
    assert read_passwd_file(str(path)) == {"alice": stored, "bob": stored}
    path.write_text("alice:plaintext\n")
    with pytest.raises(ConfigError, match="line 1"):
        read_passwd_file(str(path))


@pytest.fixture
def harness():
    h = BusHarness()
    h.add_app("shop", lambda name, root, config: {Order: lambda m: None})
    h.start()
    return h


def test_namespace_status_send_pause_resume(harness):
    ns = make_namespace(harness.bus)
    assert ns["bus"] is harness.bus and ns["transport"] is harness.transport
    assert "sent Order(item='tea')" in ns["send"](Order(item="tea"))
    harness.flush()
    table = repr(ns["status"]())
    assert table.splitlines()[0].split()[:3] == ["app", "handled", "errors"]
    row = table.splitlines()[1].split()
    assert row[:3] == ["shop", "1", "0"]
    ns["pause"]("shop")
    assert "yes" in repr(ns["status"]()).splitlines()[1]
    ns["send"](Order(item="coffee"))
    harness.flush()
    assert ns["app_status"]("shop").queued == 1
    ns["resume"]("shop")
    harness.flush()
    assert ns["app_status"]("shop").handled == 2
    with pytest.raises(TypeError):
        ns["send"]("not a message")


def test_namespace_unrouted_dead_letters_and_replay(harness):
    ns = make_namespace(harness.bus)
    assert repr(ns["unrouted"]()) == "(none)"
    ns["send"](Orphan(n=1))
    [entry] = ns["unrouted"]()
    assert entry.type_name == "test.console.Orphan" and "test.console.Orphan" in repr(entry)
    seen = []
    harness.add_app("adopter", lambda name, root, config: {Orphan: seen.append})
    harness.flush()
    assert ns["replay"]("unrouted", entry.id) == f"replayed {entry.id}"
    harness.flush()
    assert [o.n for o in seen] == [1]
    assert ns["replay"]("unrouted", entry.id).startswith("no unrouted message")
    result_of(harness.transport.publish_raw(b"{broken", "test.console.Order"))
    harness.flush()
    [dead] = ns["dead_letters"]()
    assert dead.code == "malformed" and dead.app_name == "shop"
    refused = repr(ns["replay"]("dead", dead.id))
    assert refused.startswith(f"not replayed: {dead.id} still does not decode (malformed: ")
    assert refused.endswith("; it stays in dead (force=True replays it anyway)")
    assert [d.id for d in ns["dead_letters"]()] == [dead.id]
    assert repr(ns["replay"]("dead", dead.id, force=True)) == f"replayed {dead.id}"
    harness.flush()
    [again] = ns["dead_letters"]()
    assert again.id != dead.id and again.body == dead.body


def test_namespace_heartbeat_and_help(harness):
    ns = make_namespace(harness.bus)
    assert "status()" in repr(ns["help"]())
    ns["heartbeat"]("shop")
    harness.flush()
    assert ns["app_status"]("shop").handled == 1


def test_answers_that_come_later_keep_their_value(harness):
    """Over RabbitMQ the transport answers later: the console must print the answer, not None."""
    later: list = []

    def queue_depth_later(name):
        later.append(Deferred())
        return later[-1]

    harness.transport.queue_depth = queue_depth_later
    ns = make_namespace(harness.bus)
    d = ns["status"]()
    assert isinstance(d, Deferred)
    later[0].callback(0)
    table = result_of(d)
    assert isinstance(table, StatusTable) and [s.name for s in table] == ["shop"]
    d = ns["app_status"]("shop")
    later[1].callback(4)
    assert re.search(r"\n  queued +4\n", repr(result_of(d)))


def test_a_failure_at_once_is_raised_at_the_prompt(harness):
    ns = make_namespace(harness.bus)
    harness.transport.set_aside = lambda kind: fail(ValueError("no such store"))
    with pytest.raises(ValueError, match="no such store"):
        ns["unrouted"]()


def test_app_status_is_a_block_with_ages(harness):
    ns = make_namespace(harness.bus)
    ns["send"](Order(item="tea"))
    harness.flush()
    harness.clock.advance(3)
    text = repr(ns["app_status"]("shop"))
    assert text.startswith("app shop\n")
    assert re.search(r"\n  handled +1\n", text) and re.search(r"\n  last handled +3\.0 s ago\n", text), text
    assert re.search(r"\n  heartbeat lag +none measured\n", text) and "AppStatus(" not in text


@pytest.mark.parametrize("seconds, text", [(0.42, "0.4 s ago"), (3, "3.0 s ago"), (42, "42 s ago"), (300, "5 min ago")])
def test_ages_read_as_a_person_says_them(seconds, text):
    assert age(1000.0 - seconds, 1000.0) == text
    assert age(None, 1000.0) == "never"


def test_set_aside_lists_show_reason_type_age_and_size():
    now = time.time()
    entries = SetAsideList([
        SetAsideMessage(b"x" * 54, "no app subscribes to a.B", "unrouted", "a.B", None, now - 3, "e1"),
        SetAsideMessage(b"{", "body is not JSON", "malformed", None, "shop", 0.0, "e2"),
    ])
    lines = repr(entries).splitlines()
    assert lines[0].split() == ["id", "code", "type", "app", "age", "size", "reason"]
    assert re.match(r"e1 +unrouted +a\.B +- +3\.\d s ago +54 bytes +no app subscribes to a\.B$", lines[1]), lines
    assert re.match(r"e2 +malformed +\? +shop +\? +1 bytes +body is not JSON$", lines[2]), lines
    assert repr(SetAsideList()) == "(none)"


def test_help_says_how_to_leave_and_names_real_types():
    text = repr(make_namespace(BusHarness().bus)["help"]())
    assert "exit() or Ctrl-D" in text
    assert "messages['clock.Tick']" in text and "apps.clock.Tick" not in text


def test_login_back_off_grows_per_source_and_is_forgotten():
    clock = Clock()
    guard = LoginGuard(clock, delay=0.5, max_delay=3.0, forget_after=60, sources_kept=2)
    assert [guard.failed("10.0.0.1") for _ in range(4)] == [0.5, 1.0, 2.0, 3.0]
    assert guard.failed("10.0.0.2") == 0.5  # per address
    guard.succeeded("10.0.0.2")
    assert guard.failures("10.0.0.2") == 0
    clock.advance(61)
    assert guard.failures("10.0.0.1") == 0 and guard.failed("10.0.0.1") == 0.5
    for source in ("a", "b", "c"):
        guard.failed(source)
    assert guard.failures("10.0.0.1") == 0 and guard.failures("c") == 1  # the oldest forgotten first


def test_passwords_from_one_address_are_checked_one_delay_apart():
    clock = Clock()
    guard = LoginGuard(clock, delay=1.0, max_delay=8.0)
    guard.failed("10.0.0.1")  # one failure: a 1 s slot per check from now on
    assert [guard.wait_before_check("10.0.0.1") for _ in range(3)] == [1.0, 2.0, 3.0]
    assert guard.wait_before_check("10.0.0.2") == 0.0  # other addresses are not slowed


def test_parallel_connections_do_not_guess_faster(checker):
    """Ten connections from one address, a wrong password each: checked one delay apart."""
    clock = Clock()
    factory = telnet_factory({}, checker, clock)
    address = IPv4Address("TCP", "10.0.0.1", 40000)
    sessions = []
    for _ in range(10):
        proto, transport = factory.buildProtocol(address), StringTransport(peerAddress=address)
        proto.makeConnection(transport)
        sessions.append((proto, transport))
    sessions[0][0].dataReceived(b"admin\r\nwrong\r\n")  # the first failure starts the back-off
    checked_at = []
    check = checker.requestAvatarId
    checker.requestAvatarId = lambda creds: (checked_at.append(clock.seconds()), check(creds))[1]
    for proto, _ in sessions[1:]:
        proto.dataReceived(b"admin\r\nwrong\r\n")
    assert checked_at == []  # none checked at once
    clock.pump([0.25] * 400)
    gaps = [b - a for a, b in zip(checked_at, checked_at[1:])]
    assert len(checked_at) == 9 and min(gaps) >= 0.5, checked_at
    assert all(b"Authentication failed" in transport.value() for _, transport in sessions)


def test_lag_is_a_deferred_that_fires_after_the_wait(harness):
    """The manhole prints a fired Deferred's repr at once: lag() must not look fired early."""
    ns = make_namespace(harness.bus)
    d = ns["lag"]("shop", wait=2.0)
    assert isinstance(d, Deferred) and not d.called
    harness.clock.advance(2.0)
    assert "heartbeat lag" in repr(result_of(d))
    harness.transport.send = lambda message: fail(RuntimeError("not connected"))
    with pytest.raises(RuntimeError, match="not connected"):
        ns["lag"]("shop")
