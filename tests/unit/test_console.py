"""The console's authentication and the operator's namespace."""

import pytest
from twisted.cred import credentials, error
from twisted.internet.defer import maybeDeferred

from scbus.console import PasswordHashChecker, make_namespace, read_passwd_file
from scbus.errors import ConfigError
from scbus.message import Message
from scbus.passwords import hash_password, verify_password
from scbus.testing import BusHarness, result_of


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


def test_namespace_heartbeat_and_help(harness):
    ns = make_namespace(harness.bus)
    assert "status()" in repr(ns["help"]())
    ns["heartbeat"]("shop")
    harness.flush()
    assert ns["app_status"]("shop").handled == 1
