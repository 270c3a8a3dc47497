"""The sqlite transport's keys in the config: defaults, paths, and bad values named by key."""

from __future__ import annotations

import pytest

from scbus.config import parse_config
from scbus.errors import ConfigError
from scbus.tap import make_transport
from scbus.transports.sqlite import SQLiteTransport

APP = '[apps.one]\nbuilder = "m:f"\nmax_in_flight = 7\n'


def parsed(transport: str, source: str = "/etc/scbus/bus.toml"):
    import tomllib

    return parse_config(tomllib.loads(f"[transport]\n{transport}\n{APP}"), source)


def test_defaults_put_the_file_beside_the_config():
    settings = parsed('type = "sqlite"').transport.sqlite
    assert settings.path == "/etc/scbus/scbus.db"
    assert (settings.durability, settings.delivery_limit, settings.set_aside_limit) == ("process", 20, 10_000)
    assert settings.app_prefetch == {"one": 7}


def test_a_relative_path_is_relative_to_the_config_and_an_absolute_one_is_kept():
    assert parsed('type = "sqlite"\npath = "data/bus.db"').transport.sqlite.path == "/etc/scbus/data/bus.db"
    assert parsed('type = "sqlite"\npath = "/var/lib/scbus/bus.db"').transport.sqlite.path == "/var/lib/scbus/bus.db"


def test_durability_delivery_limit_and_the_common_keys_are_read():
    settings = parsed(
        'type = "sqlite"\ndurability = "power"\ndelivery_limit = 3\nset_aside_limit = 50\nmax_message_size = 4096'
    ).transport.sqlite
    assert (settings.durability, settings.delivery_limit, settings.set_aside_limit, settings.max_message_size) == (
        "power", 3, 50, 4096
    )


@pytest.mark.parametrize(
    "table, key, problem",
    [
        ('type = "sqlite"\ndurability = "disk"', "transport.durability", "must be one of 'process', 'power', got str 'disk'"),
        ('type = "sqlite"\ndelivery_limit = 0', "transport.delivery_limit", "must be at least 1"),
        ('type = "sqlite"\npath = ""', "transport.path", "must not be empty"),
        ('type = "sqlite"\npath = 3', "transport.path", "must be a string"),
        ('type = "sqlite"\nurl = "amqp://h"', "transport.url", "only the amqp transport reads it (transport.type is 'sqlite')"),
        ('type = "local"\npath = "x.db"', "transport.path", "only the sqlite transport reads it (transport.type is 'local')"),
        ('type = "amqp"\nurl = "amqp://h"\ndurability = "power"', "transport.durability", "only the sqlite transport reads it"),
        ('type = "local"\ndelivery_limit = 3', "transport.delivery_limit", "only the amqp and sqlite transports read it"),
        ('type = "sqlit"', "transport.type", "must be one of 'local', 'amqp', 'sqlite'"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(table, key, problem):
    with pytest.raises(ConfigError) as caught:
        parsed(table)
    assert (caught.value.key, caught.value.lines()) == (key, [str(caught.value)])
    assert problem in caught.value.problem


def test_the_config_builds_an_sqlite_transport(tmp_path):
    config = parsed('type = "sqlite"', str(tmp_path / "bus.toml"))
    transport = make_transport(config)
    assert isinstance(transport, SQLiteTransport) and transport.path == str(tmp_path / "scbus.db")
    assert transport.settings.prefetch("one") == 7
