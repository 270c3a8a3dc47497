"""Config loading: every bad file is one line naming the file, the key and the problem."""

import sys
import textwrap

import pytest

from scbus.config import build_subscriptions, load_config
from scbus.errors import ConfigError
from scbus.passwords import hash_password

HASH = hash_password("secret", iterations=1000)

GOOD = f"""
[bus]
name = "test"
grace_period = 2

[transport]
type = "local"
max_message_size = 4096

[console]
telnet_port = 0
users = {{ admin = "{HASH}" }}

[root]
shared = "yes"

[apps.one]
builder = "cfgapps.good:make"
threads = 2
max_in_flight = 4
config = {{ every = 3 }}
"""


@pytest.fixture
def app_modules(tmp_path, monkeypatch):
    pkg = tmp_path / "cfgapps"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text(
        textwrap.dedent(
            """
            from datetime import timedelta
            from scbus import Message

            class CfgTick(Message, wire_name="cfg.Tick"):
                n: int

            def make(name, root_config, config):
                make.seen = (name, root_config, config)
                return {timedelta(seconds=config["every"]): lambda: None, CfgTick: print}

            def not_a_dict(name, root, config):
                return [1, 2]

            def raises(name, root, config):
                raise RuntimeError("cannot start without a database")

            value = 3
            """
        )
    )
    (pkg / "broken.py").write_text("import nonexistent_module_xyz\n")
    yield tmp_path
    for name in list(sys.modules):
        if name.startswith("cfgapps"):
            del sys.modules[name]


def write(tmp_path, text):
    path = tmp_path / "scbus.toml"
    path.write_text(text)
    return str(path)


def test_a_good_file(app_modules):
    path = write(app_modules, GOOD)
    config = load_config(path)
    assert config.bus.name == "test" and config.bus.grace_period == 2.0
    assert config.transport.max_message_size == 4096
    assert config.console.telnet_port == 0 and config.console.interface == "127.0.0.1"
    app = config.apps["one"]
    assert (app.threads, app.max_in_flight, app.config) == (2, 4, {"every": 3})
    subscriptions = build_subscriptions(config, app)
    assert len(subscriptions) == 2
    import cfgapps.good

    assert cfgapps.good.make.seen == ("one", {"shared": "yes"}, {"every": 3})


def test_defaults():
    from scbus.config import parse_config

    config = parse_config({"apps": {"a": {"builder": "m:f"}}})
    assert config.bus.name == "scbus" and config.transport.type == "local"
    assert not config.console.enabled and config.apps["a"].max_in_flight == 10


@pytest.mark.parametrize(
    "change, key, problem",
    [
        (('name = "test"', "name = = 1"), None, "not valid TOML"),
        (('name = "test"', 'name = "test"\ncolour = "red"'), "bus.colour", "unknown key"),
        (("grace_period = 2", 'grace_period = "two"'), "bus.grace_period", "must be a number of seconds, got str 'two'"),
        (('type = "local"', 'type = "carrier-pigeon"'), "transport.type", "must be one of 'local'"),
        (("max_message_size = 4096", "max_message_size = 0"), "transport.max_message_size", "must be at least 1"),
        (("threads = 2", "threads = -1"), "apps.one.threads", "must be at least 0"),
        (("threads = 2", "threads = true"), "apps.one.threads", "must be an integer, got bool"),
        (("max_in_flight = 4", "max_in_flight = 0"), "apps.one.max_in_flight", "must be at least 1"),
        (('builder = "cfgapps.good:make"', 'builder = "cfgapps.good"'), "apps.one.builder", "must be 'module:function'"),
        (('builder = "cfgapps.good:make"', 'builder = "cfgapps.nope:make"'), "apps.one.builder", "cannot import 'cfgapps.nope'"),
        (('builder = "cfgapps.good:make"', 'builder = "cfgapps.broken:make"'), "apps.one.builder", "No module named 'nonexistent_module_xyz'"),
        (('builder = "cfgapps.good:make"', 'builder = "cfgapps.good:missing"'), "apps.one.builder", "has no 'missing'"),
        (('builder = "cfgapps.good:make"', 'builder = "cfgapps.good:value"'), "apps.one.builder", "is not callable"),
        (('builder = "cfgapps.good:make"', 'builder = "cfgapps.good:not_a_dict"'), "apps.one.builder", "must return a dict of subscriptions, got list"),
        (('builder = "cfgapps.good:make"', 'builder = "cfgapps.good:raises"'), "apps.one.builder", "the builder raised RuntimeError: cannot start without a database"),
        ((f'admin = "{HASH}"', 'admin = "plain-text"'), "console.users.admin", "must be a password hash"),
        (("telnet_port = 0", "telnet_port = 70000"), "console.telnet_port", "must be a TCP port"),
        (("telnet_port = 0", 'telnet_port = 0\ninterface = "0.0.0.0"'), "console.interface", "not a loopback address"),
        (("telnet_port = 0", 'telnet_port = 0\ninterface = "somewhere"'), "console.interface", "must be an IP address"),
        (("telnet_port = 0", "telnet_port = 0\nssh_port = 2222"), "console.ssh_host_key", "required when ssh_port is set"),
        (("[root]", "[nonsense]"), "nonsense", "unknown table"),
    ],
)
def test_bad_files_name_the_key_and_the_problem(app_modules, change, key, problem):
    old, new = change
    assert old in GOOD
    path = write(app_modules, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        config = load_config(path)
        for app in config.apps.values():
            build_subscriptions(config, app)
    error = info.value
    assert error.key == key
    assert problem in error.problem
    line = str(error)
    assert "\n" not in line and line.startswith(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="no such file"):
        load_config("/nonexistent/scbus.toml")


def test_console_without_credentials_is_refused(app_modules):
    path = write(app_modules, GOOD.replace(f'users = {{ admin = "{HASH}" }}', ""))
    with pytest.raises(ConfigError, match="there is no default password"):
        load_config(path)


def test_remote_console_needs_allow_remote(app_modules):
    path = write(app_modules, GOOD.replace("telnet_port = 0", 'telnet_port = 0\ninterface = "0.0.0.0"\nallow_remote = true'))
    assert load_config(path).console.interface == "0.0.0.0"


def test_paths_are_relative_to_the_config_file(app_modules):
    path = write(app_modules, GOOD.replace(f'users = {{ admin = "{HASH}" }}', 'passwd_file = "console.passwd"'))
    assert load_config(path).console.passwd_file == str(app_modules / "console.passwd")


def test_the_example_config_loads_and_builds():
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    config = load_config(os.path.join(root, "scbus.toml"))
    for app in config.apps.values():
        build_subscriptions(config, app)
    assert set(config.apps) == {"clock", "squares", "flaky", "errors", "heartbeat"}
