"""
Loading and checking the TOML configuration.

Everything wrong with a file is reported as one L{ConfigError} line naming the file, the
key and the problem, before anything starts. See docs/config.md for every key.
"""

from __future__ import annotations

import dataclasses
import importlib
import ipaddress
import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from typing import Any

from .appbus import ApplicationMessageBus, check_subscriptions
from .errors import ConfigError, InvalidSubscriptions
from .passwords import is_password_hash

__all__ = [
    "Config",
    "BusConfig",
    "TransportConfig",
    "ConsoleConfig",
    "AppConfig",
    "load_config",
    "parse_config",
    "load_builder",
    "build_subscriptions",
    "build_app",
]

LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
TRANSPORTS = ("local", "amqp")


@dataclasses.dataclass
class BusConfig:
    name: str = "scbus"
    log_level: str = "info"
    grace_period: float = 10.0


@dataclasses.dataclass
class TransportConfig:
    type: str = "local"
    max_message_size: int = 1024 * 1024
    #: Keys only some transports read (the AMQP URL, prefetch, ...), checked by them.
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The AMQP transport's checked settings, when type is "amqp".
    amqp: Any = None


@dataclasses.dataclass
class ConsoleConfig:
    telnet_port: int | None = None
    ssh_port: int | None = None
    interface: str = "127.0.0.1"
    allow_remote: bool = False
    users: dict[str, str] = dataclasses.field(default_factory=dict)
    passwd_file: str | None = None
    ssh_host_key: str | None = None
    ssh_authorized_keys: str | None = None

    @property
    def enabled(self) -> bool:
        return self.telnet_port is not None or self.ssh_port is not None


@dataclasses.dataclass
class AppConfig:
    name: str
    builder: str
    enabled: bool = True
    threads: int = 0
    max_in_flight: int = 10
    #: How many live processes should run this app (``scbus status`` checks it).
    expected_processes: int = 1
    retries: int = 0
    retry_delay: float = 1.0
    retry_max_delay: float = 60.0
    time_limit: float | None = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Config:
    source: str
    bus: BusConfig
    transport: TransportConfig
    console: ConsoleConfig
    root: dict[str, Any]
    apps: dict[str, AppConfig]

    @property
    def base_dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.source)) if self.source else os.getcwd()


# --- small checkers ---------------------------------------------------------------------

Check = Callable[[Any], Any]


class _Bad(Exception):
    """A value's problem, before it is placed under its key."""


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad(f"must be a string, got {_shown(value)}")
    return value


def _nonempty_str(value: Any) -> str:
    if not _str(value).strip():
        raise _Bad("must not be empty")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"must be true or false, got {_shown(value)}")
    return value


def _int_at_least(low: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"must be an integer, got {_shown(value)}")
        if value < low:
            raise _Bad(f"must be at least {low}, got {value}")
        return value

    return check


def _port(value: Any) -> int:
    _int_at_least(0)(value)
    if value > 65535:
        raise _Bad(f"must be a TCP port (0-65535), got {value}")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"must be a number of seconds, got {_shown(value)}")
    if value < 0:
        raise _Bad(f"must not be negative, got {value}")
    return float(value)


def _one_of(options: tuple[str, ...]) -> Check:
    def check(value: Any) -> str:
        if value not in options:
            raise _Bad(f"must be one of {', '.join(map(repr, options))}, got {_shown(value)}")
        return value

    return check


def _table(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"must be a table, got {_shown(value)}")
    return value


def _address(value: Any) -> str:
    _str(value)
    if value in ("localhost", ""):
        return "127.0.0.1" if value == "localhost" else value
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise _Bad(f"must be an IP address to listen on, got {value!r}") from None
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _section(
    source: str, prefix: str, table: Any, schema: Mapping[str, Check], *, open_keys: bool = False
) -> dict[str, Any]:
    """Check C{table} against C{schema}; unknown keys are errors unless C{open_keys}."""
    if not isinstance(table, dict):
        raise ConfigError(source, prefix, f"must be a table, got {_shown(table)}")
    out: dict[str, Any] = {}
    for key, value in table.items():
        check = schema.get(key)
        if check is None:
            if open_keys:
                continue
            known = ", ".join(sorted(schema))
            raise ConfigError(source, f"{prefix}.{key}", f"unknown key (known keys: {known})")
        try:
            out[key] = check(value)
        except _Bad as e:
            raise ConfigError(source, f"{prefix}.{key}", str(e)) from None
    return out


_BUS = {"name": _nonempty_str, "log_level": _one_of(LOG_LEVELS), "grace_period": _seconds}
_TRANSPORT_COMMON = {"type": _one_of(TRANSPORTS), "max_message_size": _int_at_least(1)}
_CONSOLE = {
    "telnet_port": _port,
    "ssh_port": _port,
    "interface": _address,
    "allow_remote": _bool,
    "users": _table,
    "passwd_file": _nonempty_str,
    "ssh_host_key": _nonempty_str,
    "ssh_authorized_keys": _nonempty_str,
}
_APP = {
    "builder": _nonempty_str,
    "enabled": _bool,
    "threads": _int_at_least(0),
    "max_in_flight": _int_at_least(1),
    "expected_processes": _int_at_least(0),
    "retries": _int_at_least(0),
    "retry_delay": _seconds,
    "retry_max_delay": _seconds,
    "time_limit": _seconds,
    "config": _table,
}
_TOP = ("bus", "transport", "console", "root", "apps")


# --- loading ----------------------------------------------------------------------------


def load_config(path: str) -> Config:
    """Read and check the file at C{path}. @raise ConfigError: with one line for the operator."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, None, "no such file") from None
    except OSError as e:
        raise ConfigError(path, None, f"cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, None, f"not valid TOML: {e}") from None
    return parse_config(raw, path)


def parse_config(raw: Mapping[str, Any], source: str = "<config>") -> Config:
    for key in raw:
        if key not in _TOP:
            raise ConfigError(source, key, f"unknown table (known: {', '.join(_TOP)})")
    bus = BusConfig(**_section(source, "bus", raw.get("bus", {}), _BUS))

    transport_raw = raw.get("transport", {})
    common = _section(source, "transport", transport_raw, _TRANSPORT_COMMON, open_keys=True)
    transport = TransportConfig(**common)
    transport.options = {k: v for k, v in transport_raw.items() if k not in _TRANSPORT_COMMON}
    if transport.type == "amqp":
        from .transports.amqp.settings import parse_amqp_settings

        transport.amqp = parse_amqp_settings(transport.options, source, transport.max_message_size)
    if transport.type == "local" and transport.options:
        key = sorted(transport.options)[0]
        raise ConfigError(
            source, f"transport.{key}", "unknown key for the local transport (known keys: "
            f"{', '.join(sorted(_TRANSPORT_COMMON))})"
        )

    console = _console(source, raw.get("console", {}))

    root = raw.get("root", {})
    if not isinstance(root, dict):
        raise ConfigError(source, "root", f"must be a table, got {_shown(root)}")

    apps_raw = raw.get("apps", {})
    if not isinstance(apps_raw, dict):
        raise ConfigError(source, "apps", f"must be a table of apps, got {_shown(apps_raw)}")
    apps = {}
    for name, table in apps_raw.items():
        values = _section(source, f"apps.{name}", table, _APP)
        if "builder" not in values:
            raise ConfigError(
                source, f"apps.{name}.builder", 'missing: name the builder, e.g. "apps.clock:make_clock"'
            )
        if ":" not in values["builder"]:
            raise ConfigError(
                source, f"apps.{name}.builder",
                f"must be 'module:function', got {values['builder']!r}",
            )
        app = AppConfig(name=name, **values)
        worst = worst_case_seconds(app)
        if worst > MAX_HOLD_SECONDS:
            raise ConfigError(
                source, f"apps.{name}.retries",
                f"retries could hold a delivery for {worst:.0f}s, over {MAX_HOLD_SECONDS}s: "
                "the broker cancels a consumer that holds a delivery too long "
                "(RabbitMQ's consumer_timeout, 30 minutes by default)",
            )
        apps[name] = app
    return Config(source, bus, transport, console, root, apps)


#: Longest a delivery may be held by retries (half RabbitMQ's default consumer_timeout).
MAX_HOLD_SECONDS = 900


def worst_case_seconds(app: AppConfig) -> float:
    """How long retries could hold one delivery: every attempt timing out, full backoffs."""
    backoffs = sum(min(app.retry_max_delay, app.retry_delay * 2**i) for i in range(app.retries))
    return backoffs + (app.retries + 1) * (app.time_limit or 0.0)


def _relative_to(source: str, path: str | None) -> str | None:
    """Paths in the file are relative to the file, not to wherever twistd was started."""
    if path is None or os.path.isabs(path) or not source or source.startswith("<"):
        return path
    return os.path.join(os.path.dirname(os.path.abspath(source)), path)


def _console(source: str, table: Any) -> ConsoleConfig:
    console = ConsoleConfig(**_section(source, "console", table, _CONSOLE))
    for key in ("passwd_file", "ssh_host_key", "ssh_authorized_keys"):
        setattr(console, key, _relative_to(source, getattr(console, key)))
    for user, stored in console.users.items():
        if not isinstance(stored, str) or not is_password_hash(stored):
            raise ConfigError(
                source, f"console.users.{user}",
                "must be a password hash made by 'scbus hash-password' (plain passwords are "
                "not accepted)",
            )
    if console.enabled and not console.users and not console.passwd_file and console.telnet_port is not None:
        raise ConfigError(
            source, "console",
            "the telnet console needs users or passwd_file (there is no default password)",
        )
    if console.ssh_port is not None:
        for key in ("ssh_host_key", "ssh_authorized_keys"):
            if getattr(console, key) is None:
                raise ConfigError(source, f"console.{key}", "required when ssh_port is set")
    if console.enabled and not console.allow_remote and not _is_loopback(console.interface):
        raise ConfigError(
            source, "console.interface",
            f"{console.interface!r} is not a loopback address; the console runs Python in the "
            "bus, so set allow_remote = true to listen there on purpose",
        )
    return console


def _is_loopback(address: str) -> bool:
    if not address:
        return False
    return ipaddress.ip_address(address).is_loopback


# --- building apps ----------------------------------------------------------------------


def load_builder(spec: str, source: str, key: str) -> Callable[..., Any]:
    """Import C{module:function}. @raise ConfigError: saying why it could not be had."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ConfigError(source, key, f"cannot import {module_name!r}: {e}") from None
    except Exception as e:
        raise ConfigError(
            source, key, f"importing {module_name!r} raised {type(e).__name__}: {e}"
        ) from None
    builder = module
    for part in attr.split("."):
        builder = getattr(builder, part, None)
        if builder is None:
            raise ConfigError(source, key, f"module {module_name!r} has no {attr!r}")
    if not callable(builder):
        raise ConfigError(source, key, f"{spec!r} is not callable")
    return builder


def build_subscriptions(config: Config, app: AppConfig) -> dict[Any, Any]:
    """Import the app's builder and call it as the seed does: C{builder(name, root, config)}."""
    key = f"apps.{app.name}.builder"
    base = config.base_dir
    if base not in sys.path:
        sys.path.insert(0, base)
    builder = load_builder(app.builder, config.source, key)
    try:
        subscriptions = builder(app.name, config.root, app.config)
    except Exception as e:
        raise ConfigError(
            config.source, key, f"the builder raised {type(e).__name__}: {e}"
        ) from None
    try:
        check_subscriptions(app.name, subscriptions)
    except InvalidSubscriptions as e:
        raise ConfigError(config.source, key, str(e)) from None
    return subscriptions


def build_app(config: Config, app: AppConfig, *, reactor: Any = None) -> ApplicationMessageBus:
    """The app's bus, from its builder's subscriptions."""
    subscriptions = build_subscriptions(config, app)
    return ApplicationMessageBus(app.name, subscriptions, reactor=reactor, **app_bus_options(app))


def app_bus_options(app: AppConfig) -> dict[str, Any]:
    """The ApplicationMessageBus keywords an app's config sets."""
    return {
        "threads": app.threads,
        "retries": app.retries,
        "retry_delay": app.retry_delay,
        "retry_max_delay": app.retry_max_delay,
        "time_limit": app.time_limit,
    }
