"""Config loading: every bad file is one line naming the file, the key and the problem."""

import os
import sys
import textwrap

import pytest

from scbus.config import build_subscriptions, load_and_build, load_config
from scbus.errors import ConfigError
from scbus.passwords import hash_password

HASH = hash_password("secret", iterations=1000)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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

            def exits(name, root, config):
                raise SystemExit(3)

            def wrong_idle(name, root, config):
                return {timedelta(seconds=1): lambda now: None, CfgTick: print}

            def wrong_handler(name, root, config):
                return {CfgTick: lambda: None}

            def flexible(name, root, config):
                def on_tick(msg, *extra, retry=False):
                    return None
                return {timedelta(seconds=1): lambda *args: None, CfgTick: on_tick}

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
    assert all("\n" not in line and line.startswith(path) for line in error.lines())


def test_missing_file():
    with pytest.raises(ConfigError, match="no such file"):
        load_config("/nonexistent/scbus.toml")


def test_console_without_credentials_is_refused(app_modules):
    path = write(app_modules, GOOD.replace(f'users = {{ admin = "{HASH}" }}', ""))
    with pytest.raises(ConfigError, match="there is no default password"):
        load_config(path)


@pytest.mark.parametrize("interface", ["0.0.0.0", "::", "192.0.2.7"])
def test_remote_console_needs_allow_remote(app_modules, interface):
    def with_console(extra):
        return write(app_modules, GOOD.replace("telnet_port = 0", f'telnet_port = 0\ninterface = "{interface}"{extra}'))

    for refused in ("", "\nallow_remote = false"):
        with pytest.raises(ConfigError) as info:
            load_config(with_console(refused))
        assert (info.value.key, "not a loopback address" in info.value.problem) == ("console.interface", True)
    assert load_config(with_console("\nallow_remote = true")).console.interface == interface


def test_a_loopback_console_needs_no_allow_remote(app_modules):
    for interface in ("127.0.0.1", "::1"):
        path = write(app_modules, GOOD.replace("telnet_port = 0", f'telnet_port = 0\ninterface = "{interface}"'))
        assert load_config(path).console.interface == interface


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


# --- values that were accepted but could not work, or ended in a traceback --------------


@pytest.mark.parametrize(
    "change, key, problem",
    [
        (("threads = 2", "retries = 1000000"), "apps.one.retries", "must be at most 100"),
        (("threads = 2", "time_limit = inf"), "apps.one.time_limit", "must be a finite number"),
        (("threads = 2", "time_limit = 0"), "apps.one.time_limit", "must be at least 0.01"),
        (("grace_period = 2", "grace_period = nan"), "bus.grace_period", "must be a finite number"),
        (("grace_period = 2", "grace_period = 1e9"), "bus.grace_period", "must be at most 3600"),
        (("max_in_flight = 4", "max_in_flight = 100000000"), "apps.one.max_in_flight", "must be at most 10000"),
        (("max_in_flight = 4", "max_in_flight = 4\nretry_delay = -inf"), "apps.one.retry_delay", "must be a finite number"),
        (("max_message_size = 4096", "max_message_size = 4294967296"), "transport.max_message_size", "must be at most"),
        (("max_message_size = 4096", 'max_message_size = 4096\nurl = "amqp://h"'), "transport.url", "only the amqp transport reads it"),
        (('builder = "cfgapps.good:make"', 'builder = "cfgapps.good:exits"'), "apps.one.builder", "the builder raised SystemExit: 3"),
    ],
)
def test_values_that_cannot_work_are_refused_under_their_key(app_modules, change, key, problem):
    old, new = change
    assert old in GOOD
    path = write(app_modules, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_and_build(path)
    assert (info.value.key, info.value.lines()) == (key, [str(info.value)])
    assert problem in info.value.problem


def test_a_file_that_is_not_utf8_is_one_line(app_modules):
    path = app_modules / "scbus.toml"
    path.write_bytes(GOOD.encode("utf-8").replace(b'"test"', b'"t\xffst"'))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(TOML must be\): byte 0xff on line 3"):
        load_config(str(path))


AMQP = """
[transport]
type = "amqp"
url = "{url}"
{extra}

[apps.one]
builder = "cfgapps.good:make"
config = {{ every = 3 }}
"""


@pytest.mark.parametrize(
    "url, extra, key, problem",
    [
        ("amqp://h", "delivery_limit = 5", "transport.delivery_limit", "only quorum queues have a delivery limit"),
        ("amqp://h", 'ca_file = "ca.pem"', "transport.ca_file", "amqp://h:5672 would connect without TLS"),
        ("amqps://h", "confirm_timeout = nan", "transport.confirm_timeout", "must be a finite number"),
        ("amqps://h", "prefetch = 100000", "transport.prefetch", "must be at most 10000"),
    ],
)
def test_amqp_settings_that_would_not_do_what_they_say_are_refused(app_modules, url, extra, key, problem):
    (app_modules / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot parsed here\n-----END CERTIFICATE-----\n")
    path = write(app_modules, AMQP.format(url=url, extra=extra))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key and problem in info.value.problem


def test_delivery_limit_with_quorum_queues_and_ca_file_with_amqps_are_accepted(app_modules):
    (app_modules / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot parsed here\n-----END CERTIFICATE-----\n")
    extra = 'delivery_limit = 5\nqueue_type = "quorum"\nca_file = "ca.pem"'
    config = load_config(write(app_modules, AMQP.format(url="amqps://h", extra=extra)))
    assert (config.transport.amqp.delivery_limit, config.transport.amqp.ca_file) == (5, str(app_modules / "ca.pem"))


def test_every_problem_is_reported_in_one_run(app_modules):
    text = GOOD.replace("grace_period = 2", "grace_perod = 2").replace("threads = 2", "threads = -1")
    text += '\n[apps.two]\nbuilder = "cfgapps.good:wrong_idle"\n\n[apps.three]\nbuilder = "cfgapps.good:raises"\n'
    path = write(app_modules, text)
    with pytest.raises(ConfigError) as info:
        load_and_build(path)
    lines = info.value.lines()
    assert [line.split(": ")[1] for line in lines] == [
        "bus.grace_perod", "apps.one.threads", "apps.two.builder", "apps.three.builder"
    ]
    assert "did you mean 'grace_period'?" in lines[0]
    assert all(line.startswith(path) and "\n" not in line for line in lines)


def test_unknown_table_suggests_the_near_one(app_modules):
    path = write(app_modules, GOOD.replace("[root]", "[apss]"))
    with pytest.raises(ConfigError, match=r"apss: unknown table; did you mean \[apps\]\?"):
        load_config(path)


@pytest.mark.parametrize(
    "builder, problem",
    [
        ("wrong_idle", "the idle handler for 0:00:01 (wrong_idle.<locals>.<lambda>) must take no arguments: "),
        ("wrong_handler", "the handler for CfgTick (wrong_handler.<locals>.<lambda>) must take one argument, the message: "),
    ],
)
def test_handler_signatures_are_checked_when_the_builder_runs(app_modules, builder, problem):
    path = write(app_modules, GOOD.replace("cfgapps.good:make", f"cfgapps.good:{builder}"))
    with pytest.raises(ConfigError) as info:
        load_and_build(path)
    assert info.value.key == "apps.one.builder" and info.value.problem.startswith(problem)


def test_signatures_that_accept_the_call_pass(app_modules):
    path = write(app_modules, GOOD.replace("cfgapps.good:make", "cfgapps.good:flexible"))
    assert set(load_and_build(path).subscriptions) == {"one"}


def test_no_enabled_app_is_refused(app_modules):
    text = GOOD.replace("threads = 2", "threads = 2\nenabled = false")
    with pytest.raises(ConfigError, match="apps: no enabled app to run"):
        load_and_build(write(app_modules, text))


PASSWD = GOOD.replace(f'users = {{ admin = "{HASH}" }}', 'passwd_file = "console.passwd"')


def test_a_missing_passwd_file_is_a_warning(app_modules):
    loaded = load_and_build(write(app_modules, PASSWD))
    assert [(w.key, "does not exist, so the console will not start" in w.problem) for w in loaded.warnings] == [
        ("console.passwd_file", True)
    ]


@pytest.mark.parametrize(
    "mode, problem",
    [(0o644, "can be read by every user (mode -rw-r--r--)"), (0o620, "can be changed by other users")],
)
def test_a_passwd_file_other_users_can_read_or_change_is_refused(app_modules, mode, problem):
    passwd = app_modules / "console.passwd"
    passwd.write_text(f"admin:{HASH}\n")
    passwd.chmod(mode)
    with pytest.raises(ConfigError) as info:
        load_config(write(app_modules, PASSWD))
    assert info.value.key == "console.passwd_file" and problem in info.value.problem


def test_a_private_passwd_file_is_accepted(app_modules):
    passwd = app_modules / "console.passwd"
    passwd.write_text(f"admin:{HASH}\n")
    passwd.chmod(0o640)
    config = load_config(write(app_modules, PASSWD))
    assert config.console.passwd_file == str(passwd) and config.warnings == []


# --- one layer: config.py's table checks the AMQP keys; settings only builds ------------


def test_the_amqp_settings_use_the_configs_checks():
    from scbus.transports.amqp.settings import parse_amqp_settings

    with pytest.raises(ConfigError, match=r"transport.prefetch: must be at most 10000"):
        parse_amqp_settings({"url": "amqp://h", "prefetch": 100000})
    with pytest.raises(ConfigError, match=r"transport.heartbet: unknown key; did you mean 'heartbeat'\?"):
        parse_amqp_settings({"url": "amqp://h", "heartbet": 5})


def test_each_apps_prefetch_is_set_when_the_config_is_read(app_modules):
    text = AMQP.format(url="amqp://h", extra="") + '\n[apps.two]\nbuilder = "cfgapps.good:make"\nmax_in_flight = 3\n'
    config = load_config(write(app_modules, text))
    assert config.transport.amqp.app_prefetch == {"one": 10, "two": 3}


def test_checking_the_txamqp_spec_does_not_import_the_client():
    import subprocess

    from scbus.transports.amqp.txamqp_spec import DEFAULT_SPEC

    if not os.path.exists(DEFAULT_SPEC):
        pytest.skip("needs Debian's amqp-specs")
    code = (
        "import sys\n"
        "from scbus.transports.amqp.settings import parse_amqp_settings\n"
        "parse_amqp_settings({'url': 'amqp://h', 'client': 'txamqp'})\n"
        "print('scbus.transports.amqp.txamqp_client' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr


def test_a_bad_line_in_the_passwd_file_is_found_by_check_config(app_modules):
    passwd = app_modules / "console.passwd"
    passwd.write_text(f"admin:{HASH}\nbob:plain-text\n")
    passwd.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        load_and_build(write(app_modules, PASSWD))
    assert info.value.key == "console.passwd_file"
    assert info.value.problem == f"{passwd}: line 2: expected 'user:HASH' with a hash from 'scbus hash-password'"
