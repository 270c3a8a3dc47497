"""[transport] settings of the AMQP transport."""

import pytest

from scbus.errors import ConfigError
from scbus.transports.amqp.settings import mask_url, parse_amqp_settings


def test_url_parts_and_defaults():
    s = parse_amqp_settings({"url": "amqp://bob:pw%40x@broker.example:5673/prod"})
    assert [str(a) for a in s.addresses] == ["amqp://broker.example:5673"]
    assert (s.vhost, s.username, s.password) == ("prod", "bob", "pw@x")
    assert (s.queue_type, s.prefetch, s.heartbeat, s.delivery_limit) == ("classic", 10, 30, 20)
    assert "pw@x" not in repr(s) and "pw@x" not in s.describe()


def test_tls_and_default_ports_and_cluster():
    s = parse_amqp_settings({"urls": ["amqps://a", "amqp://b", "amqp://c:1234"]})
    assert [(a.host, a.port, a.tls) for a in s.addresses] == [("a", 5671, True), ("b", 5672, False), ("c", 1234, False)]
    assert s.vhost == "/"


def test_password_from_the_environment():
    s = parse_amqp_settings({"url": "amqp://svc@h", "password_env": "BROKER_PW"}, environ={"BROKER_PW": "hunter2"})
    assert s.password == "hunter2"
    with pytest.raises(ConfigError, match="transport.password_env: environment variable BROKER_PW is not set"):
        parse_amqp_settings({"url": "amqp://svc@h", "password_env": "BROKER_PW"}, environ={})


@pytest.mark.parametrize(
    "options, key, problem",
    [
        ({}, "transport.url", "give url"),
        ({"url": "amqp://h", "urls": ["amqp://h"]}, "transport.url", "not both"),
        ({"url": "http://h"}, "transport.url", "must start with amqp://"),
        ({"url": "amqp://user:topsecret@"}, "transport.url", "no host"),
        ({"url": "amqp://h", "prefetch": 0}, "transport.prefetch", "at least 1"),
        ({"url": "amqp://h", "heartbeat": "often"}, "transport.heartbeat", "must be an integer"),
        ({"url": "amqp://h", "queue_type": "stream"}, "transport.queue_type", "must be one of 'classic', 'quorum'"),
        ({"url": "amqp://h", "client": "kombu"}, "transport.client", "must be one of"),
        ({"url": "amqp://h", "colour": 1}, "transport.colour", "unknown key"),
        ({"url": "amqp://h", "ca_file": "/no/such/ca.pem"}, "transport.ca_file", "no such file"),
        ({"urls": []}, "transport.urls", "non-empty list"),
    ],
)
def test_bad_settings_name_the_key(options, key, problem):
    with pytest.raises(ConfigError) as info:
        parse_amqp_settings(options, "scbus.toml")
    assert info.value.key == key and problem in info.value.problem
    assert "topsecret" not in str(info.value)


def test_mask_url():
    assert mask_url("amqp://u:secret@h:1/v") == "amqp://u:***@h:1/v"
    assert mask_url("amqp://h/v") == "amqp://h/v"


def test_a_ca_file_without_a_certificate_names_the_key(tmp_path):
    empty = tmp_path / "ca.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as info:
        parse_amqp_settings({"url": "amqps://h", "ca_file": str(empty)}, "scbus.toml")
    assert info.value.key == "transport.ca_file"
    assert info.value.problem == f"no PEM certificate in {empty}"
