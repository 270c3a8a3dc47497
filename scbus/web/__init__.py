"""
The operator's HTTP endpoints, served by twisted.web inside the bus process: health
checks, Prometheus metrics, a live status page, and publishing into the bus.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.application import service
from twisted.logger import Logger
from twisted.web.server import Request, Site

from ..listening import Listener
from ..reactors import IBusReactor, running_reactor
from .history import History
from .resources import BusWeb

__all__ = ["make_http_service", "BusWeb"]

log = Logger()


#: Request bodies larger than this are not kept: one message (C{transport.max_message_size})
#: as an envelope, with room for JSON escaping.
BODY_LIMIT_SLACK = 64 * 1024


class BoundedRequest(Request):
    """
    A request whose body is kept only up to its site's C{max_body} bytes: a client
    cannot fill the bus's memory or disk with one upload. Past it the body is dropped
    as it arrives and the request is answered 413 without reaching a resource.
    """

    too_large = False

    def _limit(self) -> int | None:
        limit: int | None = getattr(getattr(self.channel, "site", None), "max_body", None)
        return limit

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        limit = self._limit()
        content = self.content
        if limit is not None and content is not None and content.tell() + len(data) > limit:
            self.too_large = True
            content.seek(0)
            content.truncate()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if not self.too_large:
            super().process()
            return
        limit = self._limit()
        self.setResponseCode(413)
        self.setHeader(b"content-type", b"application/json")
        self.write(json.dumps({"error": f"request body over {limit} bytes"}).encode("utf-8"))
        self.finish()


class QuietSite(Site):
    """A site whose access log is debug-level: the page polls every few seconds."""

    requestFactory = BoundedRequest
    max_body: int | None = None

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
        allowed_hosts=http.allowed_hosts,
    )
    _HistoryService(history).setServiceParent(top)
    site = QuietSite(resource)
    site.max_body = 2 * (max_message_size or 1024 * 1024) + BODY_LIMIT_SLACK
    Listener(
        "http.port", http.port, http.interface, site, reactor,
        announce="http: the status page is at http://{host}:{port}/ (/ready, /metrics, /status.json)",
    ).setServiceParent(top)
    top.resource = resource  # type: ignore[attr-defined]
    return top
