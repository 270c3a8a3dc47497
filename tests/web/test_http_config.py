"""The [http] section and bus.log_format."""

import pytest

from scbus.config import parse_config
from scbus.errors import ConfigError

APPS = {"apps": {"a": {"builder": "apps.clock:make_clock"}}}


def test_off_unless_a_port_is_set():
    config = parse_config(APPS)
    assert not config.http.enabled and config.http.interface == "127.0.0.1"
    config = parse_config({**APPS, "http": {"port": 8080, "token_env": "SCBUS_TOKEN"}})
    assert config.http.enabled and config.http.port == 8080 and config.http.token_env == "SCBUS_TOKEN"


@pytest.mark.parametrize("table, key, says", [
    ({"port": 8080, "interface": "0.0.0.0"}, "http.interface", "allow_remote"),
    ({"port": "8080"}, "http.port", "got str"),
    ({"port": 70000}, "http.port", "TCP port"),
    ({"port": 8080, "tokn_env": "X"}, "http.tokn_env", "unknown key"),
    ({"port": 8080, "token_env": ""}, "http.token_env", "empty"),
])
def test_bad_http_values_name_the_key(table, key, says):
    with pytest.raises(ConfigError) as e:
        parse_config({**APPS, "http": table})
    assert key in str(e.value) and says in str(e.value)


def test_remote_on_purpose():
    config = parse_config({**APPS, "http": {"port": 8080, "interface": "0.0.0.0", "allow_remote": True}})
    assert config.http.interface == "0.0.0.0"


def test_log_format():
    assert parse_config(APPS).bus.log_format == "text"
    assert parse_config({**APPS, "bus": {"log_format": "json"}}).bus.log_format == "json"
    with pytest.raises(ConfigError, match="bus.log_format"):
        parse_config({**APPS, "bus": {"log_format": "xml"}})
