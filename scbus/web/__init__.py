"""
The operator's HTTP endpoints, served by twisted.web inside the bus process: health
checks, Prometheus metrics, a live status page, and publishing into the bus.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application import service
from twisted.logger import Logger
from twisted.web.server import Site

from ..listening import Listener
from ..reactors import IBusReactor, running_reactor
from .history import History
from .resources import BusWeb

__all__ = ["make_http_service", "BusWeb"]

log = Logger()


class QuietSite(Site):
    """A site whose access log is debug-level: the page polls every few seconds."""

    def log(self, request: Any) -> None:
        log.debug(
            "http: {method} {uri} {code}",
            method=request.method.decode("ascii", "replace"),
            uri=request.uri.decode("ascii", "replace"),
            code=request.code,
        )


class _HistoryService(service.Service):
    def __init__(self, history: History) -> None:
        self.history = history

    def startService(self) -> None:
        super().startService()
        self.history.start()

    def stopService(self) -> None:
        self.history.stop()
        return super().stopService()


def read_token(token_env: str | None) -> str | None:
    """The bearer token from the environment; None (writing off) when unset or empty."""
    if not token_env:
        return None
    token = os.environ.get(token_env, "").strip()
    if not token:
        log.warn(
            "http: {env} is not set; publishing, replay and pause over HTTP are off",
            env=token_env,
        )
        return None
    return token


def make_http_service(
    bus: Any,
    http: Any,
    *,
    max_message_size: int | None = None,
    expected: dict[str, int] | None = None,
    reactor: IBusReactor | None = None,
) -> service.MultiService:
    """The listener and the status page's sampler, as one service."""
    if reactor is None:
        reactor = running_reactor()
    top = service.MultiService()
    top.setName("http")
    history = History(bus)
    resource = BusWeb(
        bus,
        token=read_token(http.token_env),
        token_env=http.token_env,
        max_message_size=max_message_size,
        expected=expected if expected is not None else {name: 1 for name in bus.app_names()},
        history=history,
    )
    _HistoryService(history).setServiceParent(top)
    Listener("http.port", http.port, http.interface, QuietSite(resource), reactor).setServiceParent(top)
    top.resource = resource  # type: ignore[attr-defined]
    return top
