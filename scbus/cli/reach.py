"""
How each ``scbus`` verb reaches a bus, per transport type: over the broker, through the
bus's HTTP endpoint, or not at all, with the one line saying why and what to use
instead. A transport's command-line support is one column of L{REACH}.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from ..config import Config
from .common import EXIT_BROKER, EXIT_CONFIG, Refused

__all__ = ["BROKER", "HTTP", "FILE", "REACH", "reach", "BusEndpoint"]

BROKER, HTTP, FILE = "broker", "http", "file"

#: What people call each transport in a sentence.
TRANSPORT_NAMES = {"local": "the in-memory bus", "amqp": "RabbitMQ", "sqlite": "SQLite"}

#: verb -> transport type -> BROKER, HTTP, FILE (the SQLite file itself), or why it cannot work there and what to use.
REACH: dict[str, dict[str, str]] = {
    "status": {"amqp": BROKER, "local": HTTP, "sqlite": FILE},
    "ping": {"amqp": BROKER, "local": HTTP, "sqlite": FILE},
    "pause": {"amqp": BROKER, "local": HTTP, "sqlite": FILE},
    "resume": {"amqp": BROKER, "local": HTTP, "sqlite": FILE},
    "publish": {"amqp": BROKER, "local": HTTP, "sqlite": FILE},
    "set-aside list": {"amqp": BROKER, "local": HTTP, "sqlite": FILE},
    "set-aside replay": {"amqp": BROKER, "local": HTTP, "sqlite": FILE},
    "set-aside purge": {
        "amqp": BROKER,
        "sqlite": FILE,
        "local": "its stores live in its process, and its HTTP endpoint has no purge: restarting it empties them",
    },
    "consume": {
        "amqp": BROKER,
        "local": "its messages never leave its process: subscribe an app to the types, or watch its status page",
        "sqlite": "an app's queue in the file is consumed by the bus that runs the app: subscribe an app to "
        "the types, or list what was set aside with scbus set-aside",
    },
}


def reach(config: Config, verb: str) -> str:
    """BROKER, HTTP or FILE: how C{verb} reaches the bus C{config} describes; else a refusal saying why not."""
    kind = config.transport.type
    name = TRANSPORT_NAMES.get(kind, f"the {kind} transport")
    way = REACH[verb].get(kind)
    if way is None:
        raise Refused(f"{verb} cannot reach a bus on {name} yet ({config.source})", EXIT_CONFIG)
    if way not in (BROKER, HTTP, FILE):
        raise Refused(f"{verb} does not work on {name} ({config.source}): {way}", EXIT_CONFIG)
    if way == HTTP and config.http.port is None:
        raise Refused(
            f"{verb} reaches {name} through its HTTP endpoint: set [http] port in {config.source}", EXIT_CONFIG
        )
    return way


class BusEndpoint:
    """The running bus's HTTP endpoints, as its [http] table names them."""

    def __init__(self, config: Config, timeout: float = 10.0) -> None:
        http = config.http
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(http.interface, http.interface)
        self.base = f"http://[{host}]:{http.port}" if ":" in host else f"http://{host}:{http.port}"
        self.token_env = http.token_env
        self.timeout = timeout

    def token(self, verb: str) -> str:
        """The bearer token of the writing endpoints, from the environment variable [http] names."""
        token = os.environ.get(self.token_env) if self.token_env else None
        if not token:
            where = f"the environment variable {self.token_env}" if self.token_env else "[http] token_env"
            raise Refused(f"{verb} over HTTP needs the bus's token: set {where}", EXIT_CONFIG)
        return token

    def call(self, method: str, path: str, body: bytes | None = None, token: str | None = None,
             content_type: str = "application/json") -> tuple[int, Any]:
        """(status, the JSON answer); a refusal when the bus cannot be reached."""
        headers = {"Content-Type": content_type} if body is not None else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.base + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as e:
            return e.code, _json_or_text(e)
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise Refused(f"cannot reach the bus at {self.base}: {reason}", EXIT_BROKER) from None


def _json_or_text(error: urllib.error.HTTPError) -> Any:
    raw = error.read()
    try:
        return json.loads(raw)
    except ValueError:
        return {"error": raw.decode("utf-8", "replace") or str(error.reason)}
