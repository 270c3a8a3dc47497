"""
The AMQP transport's settings, read from the config's [transport] table.

Credentials come from the URL or from an environment variable, and never appear in
repr(), logs or errors: a URL is always shown with its password masked.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from ...codec import DEFAULT_MAX_NESTING
from ...config import AMQP_KEYS, check_table
from ...errors import ConfigError
from .txamqp_spec import load_spec

__all__ = ["AMQPSettings", "BrokerAddress", "parse_amqp_settings", "mask_url", "pem_certificates"]

@dataclasses.dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{'amqps' if self.tls else 'amqp'}://{self.host}:{self.port}"


@dataclasses.dataclass
class AMQPSettings:
    addresses: list[BrokerAddress]
    vhost: str = "/"
    username: str = "guest"
    password: str = dataclasses.field(default="guest", repr=False)
    client: str = "pika"
    queue_type: str = "classic"
    delivery_limit: int = 20
    prefetch: int = 10
    heartbeat: int = 30
    confirm_timeout: float = 30.0
    connect_timeout: float = 10.0
    reconnect_max_delay: float = 30.0
    send_buffer: int = 10_000
    max_message_size: int = 1024 * 1024
    max_nesting: int = DEFAULT_MAX_NESTING
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    txamqp_spec: str | None = None
    #: Per-app prefetch: each app's max_in_flight, from the config.
    app_prefetch: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def broker_heartbeat(self) -> int:
        """
        The heartbeat asked of the broker: half of ``heartbeat``. RabbitMQ gives a
        connection up after 2 to 3 silent intervals, so a process that stopped answering
        is dropped (its deliveries and its idle leases handed to others) within 1 to 1.5
        times ``heartbeat`` (3 s at most for 1 or 2).
        """
        return 0 if self.heartbeat <= 0 else max(1, self.heartbeat // 2)

    def describe(self) -> str:
        """Where we connect, for logs: never the password."""
        hosts = ", ".join(str(a) for a in self.addresses)
        return f"{hosts} vhost={self.vhost!r} user={self.username!r}"


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


def _parse_url(source: str, key: str, url: Any) -> tuple[BrokerAddress, str | None, str | None, str | None]:
    if not isinstance(url, str):
        raise ConfigError(source, key, f"must be an amqp:// or amqps:// URL string, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ConfigError(source, key, f"bad URL {mask_url(url)!r}: {e}") from None
    if parts.scheme not in ("amqp", "amqps"):
        raise ConfigError(source, key, f"must start with amqp:// or amqps://, got {mask_url(url)!r}")
    if not parts.hostname:
        raise ConfigError(source, key, f"no host in {mask_url(url)!r}")
    tls = parts.scheme == "amqps"
    address = BrokerAddress(parts.hostname, port or (5671 if tls else 5672), tls)
    vhost = unquote(parts.path[1:]) if parts.path and parts.path != "/" else None
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return address, vhost, user, password


#: Keys read as they are, once config.py's checks passed.
_NUMBERS = ("delivery_limit", "prefetch", "heartbeat", "send_buffer", "confirm_timeout", "connect_timeout", "reconnect_max_delay")
KNOWN = set(AMQP_KEYS)


def parse_amqp_settings(
    options: dict[str, Any], source: str = "<config>", max_message_size: int = 1024 * 1024,
    environ: dict[str, str] | None = None, max_nesting: int = DEFAULT_MAX_NESTING,
) -> AMQPSettings:
    """Check the [transport] keys of the AMQP transport. @raise ConfigError."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    options = check_table(source, "transport", options, AMQP_KEYS)
    if ("url" in options) == ("urls" in options):
        raise ConfigError(source, "transport.url", "give url (one broker) or urls (a cluster), not both or neither")
    urls = options["urls"] if "urls" in options else [options["url"]]
    if not isinstance(urls, list) or not urls:
        raise ConfigError(source, "transport.urls", "must be a non-empty list of URLs")
    addresses = []
    vhost = user = password = None
    for i, url in enumerate(urls):
        key = "transport.url" if "url" in options else f"transport.urls[{i}]"
        address, v, u, p = _parse_url(source, key, url)
        addresses.append(address)
        vhost, user, password = vhost or v, user or u, password if password is not None else p
    settings = AMQPSettings(addresses=addresses, max_message_size=max_message_size, max_nesting=max_nesting)
    if vhost:
        settings.vhost = vhost
    if user:
        settings.username = user
    if password is not None:
        settings.password = password
    for key in _NUMBERS:
        if key in options:
            setattr(settings, key, options[key])
    if "vhost" in options:
        settings.vhost = options["vhost"]
    if "username" in options:
        settings.username = options["username"]
    if "password_env" in options:
        name = options["password_env"]
        if name not in env:
            raise ConfigError(source, "transport.password_env", f"environment variable {name} is not set")
        settings.password = env[name]
    settings.client = options.get("client", settings.client)
    settings.queue_type = options.get("queue_type", settings.queue_type)
    base = os.path.dirname(os.path.abspath(source)) if source and not source.startswith("<") else os.getcwd()
    for key in ("ca_file", "cert_file", "key_file"):
        if key in options:
            path = options[key] if os.path.isabs(options[key]) else os.path.join(base, options[key])
            if not os.path.exists(path):
                raise ConfigError(source, f"transport.{key}", f"no such file: {path}")
            setattr(settings, key, path)
    if settings.ca_file is not None:
        try:
            with open(settings.ca_file, encoding="ascii", errors="replace") as f:
                pem_certificates(f.read(), settings.ca_file)
        except (OSError, ValueError) as e:
            raise ConfigError(source, "transport.ca_file", str(e)) from None
    if "txamqp_spec" in options:
        path = options["txamqp_spec"]
        settings.txamqp_spec = path if os.path.isabs(path) else os.path.join(base, path)
    if settings.client == "txamqp":
        load_spec(settings.txamqp_spec, source)
    if (settings.cert_file is None) != (settings.key_file is None):
        raise ConfigError(source, "transport.cert_file", "cert_file and key_file go together")
    return settings


_PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def pem_certificates(text: str, source: str) -> list[str]:
    """
    Every certificate in a PEM bundle (a CA file often holds a chain, or the old and the
    new CA during a rotation: trusting only the first would refuse the others).
    """
    found = _PEM_CERTIFICATE.findall(text)
    if not found:
        raise ValueError(f"no PEM certificate in {source}")
    return found
