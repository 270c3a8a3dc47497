"""
Loading and checking the TOML configuration.

Every key has one check in a table below (key -> check); every problem in a file is
reported in one run, one line each, naming the file, the key and the problem, before
anything starts. L{load_and_build} is the one path both C{twistd} and
C{scbus check-config} take, so they give the same verdict. See docs/config.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import ipaddress
import math
import os
import re
import stat
import sys
import tomllib
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from .errors import ConfigError, ConfigProblems, InvalidSubscriptions
from .passwords import is_password_hash, read_passwd_file


__all__ = [
    "Config",
    "BusConfig",
    "TransportConfig",
    "ConsoleConfig",
    "AppConfig",
    "Loaded",
    "load_config",
    "load_and_build",
    "parse_config",
    "load_builder",
    "check_table",
    "build_subscriptions",
]

LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
TRANSPORTS = ("local", "amqp", "sqlite")
#: transport.durability of the sqlite transport: what a commit survives.
DURABILITIES = ("process", "power")
QUEUE_TYPES = ("classic", "quorum")
AMQP_CLIENTS = ("pika", "txamqp")
REACTORS = ("default", "asyncio")
TRACING = ("off", "on", "auto")
#: apps.NAME.idle: one live process runs an app's idle handlers, or every process does.
IDLE_MODES = ("one", "every")


@dataclasses.dataclass
class BusConfig:
    name: str = "scbus"
    log_level: str = "info"
    #: A level per logger namespace (``pika``, ``scbus.transports.amqp``, an app's module).
    log_levels: dict[str, str] = dataclasses.field(default_factory=dict)
    grace_period: float = 10.0
    log_format: str = "text"
    #: "asyncio": the bus runs on Twisted's asyncio reactor (coroutine handlers may await
    #: asyncio code); "default": on whichever reactor twistd runs.
    reactor: str = "default"
    #: OpenTelemetry spans (scbus/tracing.py): "off", "on", or "auto" (on when a tracer
    #: provider is set by the time the bus is built).
    tracing: str = "off"


@dataclasses.dataclass
class TransportConfig:
    type: str = "local"
    max_message_size: int = 1024 * 1024
    #: Deepest nesting of a body's JSON (the envelope is 1); deeper is refused as malformed.
    max_nesting: int = 64
    #: Entries each set-aside store (unrouted, dead) keeps in memory or in the SQLite
    #: file; the oldest go first.
    set_aside_limit: int = 10_000
    #: Keys only some transports read (the AMQP URL, prefetch, ...), checked by them.
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The AMQP transport's checked settings, when type is "amqp".
    amqp: Any = None
    #: The SQLite transport's settings, when type is "sqlite".
    sqlite: Any = None


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
    #: "one" live process runs the app's idle handlers (over RabbitMQ), or "every" process.
    idle: str = "one"
    retries: int = 0
    retry_delay: float = 1.0
    retry_max_delay: float = 60.0
    time_limit: float | None = None
    #: Seconds a delivery may stay in flight before ``scbus status`` calls the app stuck.
    stuck_after: float = 300.0
    config: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Config:
    source: str
    bus: BusConfig
    transport: TransportConfig
    console: ConsoleConfig
    root: dict[str, Any]
    apps: dict[str, AppConfig]
    #: Problems that do not stop the bus (a console that will not start, ...).
    warnings: list[ConfigError] = dataclasses.field(default_factory=list)
    http: HttpConfig = dataclasses.field(default_factory=lambda: HttpConfig())

    @property
    def base_dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.source)) if self.source else os.getcwd()


def opentelemetry_installed() -> bool:
    """Whether opentelemetry-api can be imported (scbus[otel]), without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except ImportError:  # no opentelemetry namespace at all
        return False


# --- checks of single values ------------------------------------------------------------

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


def _str_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _Bad(f"must be a non-empty list of strings, got {_shown(value)}")
    for item in value:
        _str(item)
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"must be true or false, got {_shown(value)}")
    return value


def _number(low: float, high: float, *, integer: bool = False, what: str = "a number") -> Check:
    """A finite number from C{low} to C{high}: every number in the config is bounded."""
    kind = "an integer" if integer else what

    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            raise _Bad(f"must be {kind}, got {_shown(value)}")
        if not math.isfinite(value):
            raise _Bad(f"must be a finite number (range {low} to {high}), got {value}")
        if value < low:
            raise _Bad(f"must be at least {low} (range {low} to {high}), got {value}")
        if value > high:
            raise _Bad(f"must be at most {high} (range {low} to {high}), got {value}")
        return value if integer else float(value)

    return check


def _integer(low: int, high: int) -> Check:
    return _number(low, high, integer=True)


def _seconds(low: float, high: float) -> Check:
    return _number(low, high, what="a number of seconds")


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise _Bad(f"must be a TCP port (0-65535), got {_shown(value)}")
    return value


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


def _levels_by_namespace(value: Any) -> dict[str, str]:
    level = _one_of(LOG_LEVELS)
    for namespace, name in _table(value).items():
        try:
            level(name)
        except _Bad as e:
            raise _Bad(f"{namespace!r}: {e}") from None
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


# --- the keys: one table per section, key -> check (docs/config.md lists the ranges) ------

#: Longest a delivery may be held by retries (half RabbitMQ's default consumer_timeout).
MAX_HOLD_SECONDS = 900

BUS_KEYS: dict[str, Check] = {
    "name": _nonempty_str,
    "log_level": _one_of(LOG_LEVELS),
    "log_levels": _levels_by_namespace,
    "grace_period": _seconds(0, 3600),
    "log_format": _one_of(("text", "json")),
    "reactor": _one_of(REACTORS),
    "tracing": _one_of(TRACING),
}
#: Keys every transport reads.
TRANSPORT_KEYS: dict[str, Check] = {
    "type": _one_of(TRANSPORTS),
    "max_message_size": _integer(1, 128 * 1024 * 1024),
    "max_nesting": _integer(2, 200),
    "set_aside_limit": _integer(1, 1_000_000),
}
#: Keys only the amqp transport reads (scbus/transports/amqp/settings.py turns them into
#: its settings).
AMQP_KEYS: dict[str, Check] = {
    "url": _str,
    "urls": _str_list,
    "client": _one_of(AMQP_CLIENTS),
    "queue_type": _one_of(QUEUE_TYPES),
    "delivery_limit": _integer(1, 1000),
    "prefetch": _integer(1, 10_000),
    "heartbeat": _integer(0, 3600),
    "send_buffer": _integer(1, 1_000_000),
    "confirm_timeout": _seconds(0.1, 3600),
    "connect_timeout": _seconds(0.1, 600),
    "reconnect_max_delay": _seconds(0.1, 3600),
    "vhost": _str,
    "username": _str,
    "password_env": _nonempty_str,
    "ca_file": _nonempty_str,
    "cert_file": _nonempty_str,
    "key_file": _nonempty_str,
    "txamqp_spec": _nonempty_str,
}
#: Keys only the sqlite transport reads (delivery_limit is shared with amqp).
SQLITE_KEYS: dict[str, Check] = {
    "path": _nonempty_str,
    "durability": _one_of(DURABILITIES),
    "delivery_limit": _integer(1, 1000),
}
#: Which transports read each key beyond TRANSPORT_KEYS.
READ_BY: dict[str, tuple[str, ...]] = {
    **{key: ("amqp",) for key in AMQP_KEYS},
    **{key: ("sqlite",) for key in SQLITE_KEYS},
    "delivery_limit": ("amqp", "sqlite"),
}
CONSOLE_KEYS: dict[str, Check] = {
    "telnet_port": _port,
    "ssh_port": _port,
    "interface": _address,
    "allow_remote": _bool,
    "users": _table,
    "passwd_file": _nonempty_str,
    "ssh_host_key": _nonempty_str,
    "ssh_authorized_keys": _nonempty_str,
}
APP_KEYS: dict[str, Check] = {
    "builder": _nonempty_str,
    "enabled": _bool,
    "threads": _integer(0, 256),
    "max_in_flight": _integer(1, 10_000),
    "expected_processes": _integer(0, 1000),
    "idle": _one_of(IDLE_MODES),
    "retries": _integer(0, 100),
    "retry_delay": _seconds(0, MAX_HOLD_SECONDS),
    "retry_max_delay": _seconds(0, MAX_HOLD_SECONDS),
    "time_limit": _seconds(0.01, MAX_HOLD_SECONDS),
    "stuck_after": _seconds(0.1, 86_400),
    "config": _table,
}
TABLES = ("bus", "transport", "console", "http", "root", "apps")


class _Problems:
    """Every problem found in one file, so one run reports them all."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[ConfigError] = []
        self.warnings: list[ConfigError] = []

    def add(self, key: str | None, problem: str) -> None:
        self.errors.append(ConfigError(self.source, key, problem))

    def warn(self, key: str | None, problem: str) -> None:
        self.warnings.append(ConfigError(self.source, key, problem))

    def absorb(self, error: ConfigError) -> None:
        self.errors.extend(error.problems if isinstance(error, ConfigProblems) else [error])

    def count(self) -> int:
        return len(self.errors)

    def raise_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigProblems(self.errors)


def _unknown(key: str, known: Any) -> str:
    guess = difflib.get_close_matches(key, list(known), n=1)
    hint = f"did you mean {guess[0]!r}? " if guess else ""
    return f"unknown key; {hint}(known keys: {', '.join(sorted(known))})"


def check_table(source: str, prefix: str, table: Any, schema: Mapping[str, Check]) -> dict[str, Any]:
    """C{table} checked against C{schema}. @raise ConfigError: every problem, one line each."""
    problems = _Problems(source)
    checked = _section(problems, prefix, table, schema)
    problems.raise_any()
    return checked


def _section(
    problems: _Problems, prefix: str, table: Any, schema: Mapping[str, Check]
) -> dict[str, Any]:
    """The keys of C{table} that pass their check; each other key is one problem."""
    if not isinstance(table, dict):
        problems.add(prefix, f"must be a table, got {_shown(table)}")
        return {}
    out: dict[str, Any] = {}
    for key, value in table.items():
        check = schema.get(key)
        if check is None:
            problems.add(f"{prefix}.{key}", _unknown(key, schema))
            continue
        try:
            out[key] = check(value)
        except _Bad as e:
            problems.add(f"{prefix}.{key}", str(e))
    return out


# --- loading ----------------------------------------------------------------------------


def load_config(path: str) -> Config:
    """Read and check the file at C{path}. @raise ConfigError: one line per problem."""
    return parse_config(_read(path), path)


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError(path, None, "no such file") from None
    except OSError as e:
        raise ConfigError(path, None, f"cannot read: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            path, None, f"not UTF-8 text (TOML must be): byte 0x{data[e.start]:02x} on line {line}"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, None, f"not valid TOML: {e}") from None


def parse_config(raw: Mapping[str, Any], source: str = "<config>") -> Config:
    """Check a parsed file. @raise ConfigError: every problem, one line each."""
    config, problems = _parse(raw, source)
    problems.raise_any()
    return config


def _parse(raw: Mapping[str, Any], source: str) -> tuple[Config, _Problems]:
    problems = _Problems(source)
    for key in raw:
        if key not in TABLES:
            guess = difflib.get_close_matches(key, TABLES, n=1)
            hint = f"did you mean [{guess[0]}]? " if guess else ""
            problems.add(key, f"unknown table; {hint}(known: {', '.join(TABLES)})")
    bus = BusConfig(**_section(problems, "bus", raw.get("bus", {}), BUS_KEYS))
    if bus.tracing == "on" and not opentelemetry_installed():
        problems.add("bus.tracing", "\"on\" needs the opentelemetry-api package: pip install 'scbus[otel]'")
    transport = _transport(problems, raw.get("transport", {}))
    console = _console(problems, raw.get("console", {}))
    http = _http(problems, raw.get("http", {}))
    root = raw.get("root", {})
    if not isinstance(root, dict):
        problems.add("root", f"must be a table, got {_shown(root)}")
        root = {}
    apps = _apps(problems, raw.get("apps", {}))
    # Each app's consumer takes (or claims ahead) as many as it handles at once.
    for settings in (transport.amqp, transport.sqlite):
        if settings is not None:
            settings.app_prefetch = {name: app.max_in_flight for name, app in apps.items()}
    config = Config(source, bus, transport, console, root, apps, warnings=problems.warnings, http=http)
    return config, problems


def _transport(problems: _Problems, table: Any) -> TransportConfig:
    before = problems.count()
    values = _section(problems, "transport", table, {**TRANSPORT_KEYS, **AMQP_KEYS, **SQLITE_KEYS})
    transport = TransportConfig(**{k: v for k, v in values.items() if k in TRANSPORT_KEYS})
    transport.options = {k: v for k, v in values.items() if k not in TRANSPORT_KEYS}
    for key in transport.options:
        readers = READ_BY[key]
        if transport.type not in readers:
            who = f"the {' and '.join(readers)} transport{'s read' if len(readers) > 1 else ' reads'} it"
            problems.add(f"transport.{key}", f"only {who} (transport.type is {transport.type!r})")
    if transport.type == "sqlite":
        if problems.count() == before:
            transport.sqlite = _sqlite_settings(problems.source, transport)
        return transport
    if transport.type != "amqp":
        return transport
    if problems.count() > before:
        return transport  # settings are made only from keys that all passed
    from .transports.amqp.settings import parse_amqp_settings

    try:
        transport.amqp = parse_amqp_settings(
            transport.options, problems.source, transport.max_message_size,
            max_nesting=transport.max_nesting,
        )
    except ConfigError as e:
        problems.absorb(e)
        return transport
    settings = transport.amqp
    if "delivery_limit" in transport.options and settings.queue_type != "quorum":
        problems.add(
            "transport.delivery_limit",
            f"only quorum queues have a delivery limit (queue_type is {settings.queue_type!r}): "
            'set queue_type = "quorum" or remove the key',
        )
    plain = [str(a) for a in settings.addresses if not a.tls]
    for key in ("ca_file", "cert_file"):
        if key in transport.options and plain:
            problems.add(
                f"transport.{key}",
                f"is set but {', '.join(plain)} would connect without TLS: use amqps://",
            )
    return transport


def _sqlite_settings(source: str, transport: TransportConfig) -> Any:
    """The sqlite transport's settings; its file is relative to the config's directory."""
    from .transports.sqlite.settings import DEFAULT_DELIVERY_LIMIT, DEFAULT_PATH, SQLiteSettings

    options = transport.options
    return SQLiteSettings(
        path=_relative_to(source, options.get("path", DEFAULT_PATH)) or DEFAULT_PATH,
        durability=options.get("durability", "process"),
        delivery_limit=options.get("delivery_limit", DEFAULT_DELIVERY_LIMIT),
        set_aside_limit=transport.set_aside_limit,
        max_message_size=transport.max_message_size,
        max_nesting=transport.max_nesting,
    )


def _apps(problems: _Problems, table: Any) -> dict[str, AppConfig]:
    if not isinstance(table, dict):
        problems.add("apps", f"must be a table of apps, got {_shown(table)}")
        return {}
    apps = {}
    for name, app_table in table.items():
        before = problems.count()
        values = _section(problems, f"apps.{name}", app_table, APP_KEYS)
        builder = values.get("builder")
        if isinstance(app_table, dict) and "builder" not in app_table:
            problems.add(f"apps.{name}.builder", 'missing: name the builder, e.g. "apps.clock:make_clock"')
        elif builder is not None and ":" not in builder:
            problems.add(f"apps.{name}.builder", f"must be 'module:function', got {builder!r}")
        if problems.count() > before:
            continue
        app = AppConfig(name=name, **values)
        worst = worst_case_seconds(app)
        if worst > MAX_HOLD_SECONDS:
            key = "retries" if app.retries else "time_limit"
            problems.add(
                f"apps.{name}.{key}",
                f"{key} could hold a delivery for {worst:.0f}s, over {MAX_HOLD_SECONDS}s: "
                "the broker cancels a consumer that holds a delivery too long "
                "(RabbitMQ's consumer_timeout, 30 minutes by default)",
            )
            continue
        apps[name] = app
    return apps


def worst_case_seconds(app: AppConfig) -> float:
    """How long retries could hold one delivery: every attempt timing out, full backoffs."""
    backoffs = 0.0
    delay = app.retry_delay
    for _ in range(app.retries):
        backoffs += min(app.retry_max_delay, delay)
        delay = min(delay * 2, app.retry_max_delay)
    return backoffs + (app.retries + 1) * (app.time_limit or 0.0)


def _relative_to(source: str, path: str | None) -> str | None:
    """Paths in the file are relative to the file, not to wherever twistd was started."""
    if path is None or os.path.isabs(path) or not source or source.startswith("<"):
        return path
    return os.path.join(os.path.dirname(os.path.abspath(source)), path)


def _console(problems: _Problems, table: Any) -> ConsoleConfig:
    console = ConsoleConfig(**_section(problems, "console", table, CONSOLE_KEYS))
    for key in ("passwd_file", "ssh_host_key", "ssh_authorized_keys"):
        setattr(console, key, _relative_to(problems.source, getattr(console, key)))
    for user, stored in console.users.items():
        if not isinstance(stored, str) or not is_password_hash(stored):
            problems.add(
                f"console.users.{user}",
                "must be a password hash made by 'scbus hash-password' (plain passwords are "
                "not accepted)",
            )
    if console.telnet_port is not None and not console.users and not console.passwd_file:
        problems.add(
            "console", "the telnet console needs users or passwd_file (there is no default password)"
        )
    if console.enabled and console.passwd_file:
        _check_passwd_file(problems, console)
    if console.ssh_port is not None:
        for key in ("ssh_host_key", "ssh_authorized_keys"):
            path = getattr(console, key)
            if path is None:
                problems.add(f"console.{key}", "required when ssh_port is set")
            elif not os.path.exists(path):
                problems.add(f"console.{key}", f"no such file: {path}")
    if console.enabled and not console.allow_remote and not _is_loopback(console.interface):
        problems.add(
            "console.interface",
            f"{console.interface!r} is not a loopback address; the console runs Python in the "
            "bus, so set allow_remote = true to listen there on purpose",
        )
    return console


def _check_passwd_file(problems: _Problems, console: ConsoleConfig) -> None:
    """
    A missing file leaves the console off (a warning); one that other users can read or
    change is refused, as sshd refuses such key files: anyone who can write it can run
    code in the bus, and anyone who can read it can attack the hashes offline.
    """
    path = console.passwd_file
    assert path is not None
    key = "console.passwd_file"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if console.users:
            problems.add(key, f"no such file: {path}")
        else:
            problems.warn(
                key,
                f"{path} does not exist, so the console will not start; create it with "
                f"scbus hash-password --write {path} --user admin",
            )
        return
    except OSError as e:
        problems.add(key, f"cannot read {path}: {e.strerror}")
        return
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        problems.add(
            key, f"{path} can be changed by other users (mode {stat.filemode(mode)}); "
            f"chmod 600 {path}"
        )
    elif mode & stat.S_IROTH:
        problems.add(
            key, f"{path} can be read by every user (mode {stat.filemode(mode)}), exposing "
            f"the hashes; chmod 600 {path} (or 640 for a group)"
        )
    else:
        try:
            read_passwd_file(path)  # as the console will, so a bad line stops check-config too
        except ConfigError as e:
            problems.add(key, f"{path}: {e.key + ': ' if e.key else ''}{e.problem}")


@dataclasses.dataclass
class HttpConfig:
    """The operator's HTTP endpoints (health, metrics, status page); off without a port."""

    port: int | None = None
    interface: str = "127.0.0.1"
    allow_remote: bool = False
    #: The environment variable holding the bearer token of the writing endpoints.
    token_env: str | None = None
    #: Names a request's Host may give besides IP addresses and localhost (web/hosts.py).
    allowed_hosts: list[str] = dataclasses.field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.port is not None


#: A host name of http.allowed_hosts: labels of letters, digits, "-" and "_"; a leading "."
#: takes its subdomains too.
_HOST_NAME = re.compile(r"\.?(?!-)[a-z0-9_-]{1,63}(?:\.(?!-)[a-z0-9_-]{1,63})*\.?")


def _host_names(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise _Bad(f"must be a list of host names, got {_shown(value)}")
    names = []
    for item in value:
        name = _str(item).strip().lower()
        if is_ip_address(name.strip("[]")):
            raise _Bad(f"{item!r} is an IP address: every address is answered without being listed")
        if not _HOST_NAME.fullmatch(name) or len(name) > 254:
            raise _Bad(
                f"{item!r} is not a host name (letters, digits, '-' and dots; a leading '.' "
                "for its subdomains too; no port or scheme: the port is not checked)"
            )
        names.append(name)
    return names


HTTP_KEYS: dict[str, Check] = {
    "port": _port, "interface": _address, "allow_remote": _bool, "token_env": _nonempty_str,
    "allowed_hosts": _host_names,
}


def _http(problems: _Problems, table: Any) -> HttpConfig:
    http = HttpConfig(**_section(problems, "http", table, HTTP_KEYS))
    if http.enabled and not http.allow_remote and not _is_loopback(http.interface):
        problems.add(
            "http.interface",
            f"{http.interface!r} is not a loopback address; set allow_remote = true to serve "
            "the status page and metrics there on purpose",
        )
    return http


def is_ip_address(text: str) -> bool:
    """An IPv4 or IPv6 address (the HTTP Host check answers every one)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_loopback(address: str) -> bool:
    if not address:
        return False
    return ipaddress.ip_address(address).is_loopback


# --- the one path of twistd and check-config ------------------------------------------


@dataclasses.dataclass
class Loaded:
    """A checked config and the subscriptions of its enabled apps, ready to run."""

    config: Config
    subscriptions: dict[str, dict[Any, Any]]

    @property
    def warnings(self) -> list[ConfigError]:
        return self.config.warnings


def load_and_build(path: str, before_build: Callable[[Config], None] | None = None) -> Loaded:
    """
    Check the file and call every enabled app's builder, as twistd does before it starts.
    C{before_build} is called with the config first (twistd installs the reactor it
    names there, before a builder's import could install another).
    @raise ConfigError: every problem found, one line each (L{ConfigError.lines}).
    """
    config, problems = _parse(_read(path), path)
    if before_build is not None:
        try:
            before_build(config)
        except ConfigError as e:
            problems.absorb(e)
    subscriptions: dict[str, dict[Any, Any]] = {}
    for name, app in config.apps.items():
        if app.enabled:
            try:
                subscriptions[name] = build_subscriptions(config, app)
            except ConfigError as e:
                problems.absorb(e)
    if not problems.errors and not subscriptions:
        problems.add(
            "apps", "no enabled app to run: every app has enabled = false" if config.apps
            else "no enabled app to run: add an [apps.NAME] table with a builder",
        )
    problems.raise_any()
    return Loaded(config, subscriptions)


# --- building apps ----------------------------------------------------------------------


def load_builder(spec: str, source: str, key: str) -> Callable[..., Any]:
    """Import C{module:function}. @raise ConfigError: saying why it could not be had."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ConfigError(source, key, f"cannot import {module_name!r}: {e}") from None
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # SystemExit too: a module must not end start-up silently
        raise ConfigError(
            source, key, f"importing {module_name!r} raised {type(e).__name__}: {e}"
        ) from None
    builder: Any = module
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
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # SystemExit too: a builder must not end start-up silently
        raise ConfigError(
            config.source, key, f"the builder raised {type(e).__name__}: {e}"
        ) from None
    from .appbus import check_subscriptions

    try:
        handlers, idle = check_subscriptions(app.name, subscriptions)
    except InvalidSubscriptions as e:
        raise ConfigError(config.source, key, str(e)) from None
    problems = [
        ConfigError(config.source, key, problem)
        for problem in _signature_problems(handlers, idle)
    ]
    if problems:
        raise problems[0] if len(problems) == 1 else ConfigProblems(problems)
    return subscriptions


def _signature_problems(handlers: Mapping[type, Any], idle: Mapping[timedelta, Any]) -> list[str]:
    """
    Handlers that could not be called as the bus calls them: C{handler(message)} and
    C{idle_handler()}. Found now rather than at every delivery or every interval.
    """
    problems = []
    calls = [(f"the handler for {t.__name__}", h, 1, "one argument, the message") for t, h in handlers.items()]
    calls += [(f"the idle handler for {i}", h, 0, "no arguments") for i, h in idle.items()]
    for what, handler, count, takes in calls:
        try:
            signature = inspect.signature(handler)
        except (TypeError, ValueError):
            continue  # some builtins have none; they are called as they are
        try:
            signature.bind(*([None] * count))
        except TypeError as e:
            name = getattr(handler, "__qualname__", repr(handler))
            problems.append(f"{what} ({name}) must take {takes}: {e}")
    return problems


def app_bus_options(app: AppConfig) -> dict[str, Any]:
    """The ApplicationMessageBus keywords an app's config sets."""
    return {
        "threads": app.threads,
        "retries": app.retries,
        "retry_delay": app.retry_delay,
        "retry_max_delay": app.retry_max_delay,
        "time_limit": app.time_limit,
    }
