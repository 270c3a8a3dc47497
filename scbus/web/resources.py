"""
The HTTP endpoints, one small router over twisted.web.

Reading endpoints answer anyone who can reach the port (127.0.0.1 unless allowed
otherwise) under one of the bus's names (L{hosts}: no DNS rebinding); writing ones
(publish, replay, pause, resume) need the bearer token named by C{[http] token_env} and
are off without one.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable, Sequence
from importlib import resources as package_files
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ..errors import DecodeError
from ..transports.setaside import DEAD, UNROUTED
from .history import History
from .hosts import HostCheck
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, BusMetrics
from .posted import message_from_post
from .snapshot import SetAsideListings, take_snapshot, transport_connected, transport_problem

__all__ = ["BusWeb", "Answer"]

log = Logger()

#: Static files of the status page: name -> content type.
STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
#: Nothing from elsewhere: the page works offline and runs only its own script.
CSP = b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'"
#: Set-aside bodies shown on the page are cut at this many characters.
PREVIEW = 400
#: Set-aside entries the page lists per kind (all are counted).
LISTED = 50


class Answer:
    """A response: status, body, content type."""

    def __init__(self, code: int, body: Any, content_type: str = "application/json") -> None:
        self.code = code
        self.body = body
        self.content_type = content_type

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body, default=repr, allow_nan=False).encode("utf-8")


def _error(code: int, text: str, **more: Any) -> Answer:
    return Answer(code, {"error": text, **more})


class BusWeb(Resource):
    """Every endpoint of one bus. C{token} of None turns the writing endpoints off."""

    isLeaf = True

    def __init__(
        self,
        bus: Any,
        *,
        token: str | None,
        token_env: str | None,
        max_message_size: int | None,
        expected: dict[str, int],
        history: History | None = None,
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        super().__init__()
        self.bus = bus
        self.hosts = HostCheck(allowed_hosts)
        self.metrics = BusMetrics(bus)
        self.history = history if history is not None else History(bus)
        self.expected = expected
        self.set_aside = SetAsideListings(bus.transport, bus.clock)
        self.max_message_size = max_message_size
        self._token = token.encode("utf-8") if token else None
        self._token_env = token_env
        self._static = {
            name: package_files.files(__package__).joinpath("static", name).read_bytes() for name in STATIC
        }
        self._routes: dict[tuple[bytes, str], Callable[..., Any]] = {
            (b"GET", ""): lambda r: self._file("index.html"),
            (b"GET", "live"): lambda r: Answer(200, {"live": True}),
            (b"GET", "ready"): self.ready,
            (b"GET", "status.json"): self.status_json,
            (b"GET", "metrics"): self.metrics_text,
            (b"GET", "page.json"): self.page_json,
            (b"POST", "messages"): self.writing(self.publish),
        }

    # --- plumbing -------------------------------------------------------------------------

    def render(self, request: Request) -> Any:
        path = [p.decode("utf-8", "replace") for p in request.postpath or []]
        hosts = request.requestHeaders.getRawHeaders(b"host")
        refused = self.hosts.refusal(hosts)
        if refused is not None:
            self._refuse_host(request, "/" + "/".join(path), hosts or [], *refused)
            return NOT_DONE_YET
        method = b"GET" if request.method == b"HEAD" else request.method  # twisted.web drops the body
        try:
            handler, args = self._route(method, path)
        except _NoRoute as e:
            self._finish(request, e.answer)
            return NOT_DONE_YET
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)  # the client went away
        d = maybeDeferred(handler, request, *args)
        d.addErrback(self._crashed, request)
        d.addCallback(lambda answer: None if gone else self._finish(request, answer))
        return NOT_DONE_YET

    def _route(self, method: bytes, path: list[str]) -> tuple[Callable[..., Any], tuple[str, ...]]:
        joined = "/".join(path)
        handler = self._routes.get((method, joined))
        if handler is not None:
            return handler, ()
        if method == b"GET" and len(path) == 2 and path[0] == "static" and path[1] in STATIC:
            return (lambda r, name: self._file(name)), (path[1],)
        if method == b"POST" and len(path) == 3 and path[0] == "apps" and path[2] in ("pause", "resume"):
            return self.writing(self.pause_or_resume), (path[1], path[2])
        if method == b"POST" and len(path) == 4 and path[0] == "set-aside" and path[3] == "replay":
            return self.writing(self.replay), (path[1], path[2])
        known = {p for (_, p) in self._routes}
        if joined in known:
            raise _NoRoute(_error(405, f"{method.decode()} is not allowed on /{joined}"))
        raise _NoRoute(_error(404, f"no such endpoint: /{joined}"))

    def _refuse_host(self, request: Request, path: str, hosts: Sequence[bytes], code: int, why: str) -> None:
        if self.hosts.first_refusal(b", ".join(hosts)):
            log.warn("http: refused {method} {path}: {why} (logged once per Host)",
                     method=request.method.decode("ascii", "replace"), path=path[:200], why=why)
        self._finish(request, _error(code, why))

    def _crashed(self, failure: Failure, request: Request) -> Answer:
        log.failure("http: {method} {path} failed", failure, method=request.method, path=request.path)
        return _error(500, f"internal error: {failure.getErrorMessage()}")

    def _finish(self, request: Request, answer: Answer) -> None:
        request.setResponseCode(answer.code)
        request.setHeader(b"content-type", answer.content_type.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        if answer.content_type.startswith("text/html"):
            request.setHeader(b"content-security-policy", CSP)
        if answer.code == 401:
            request.setHeader(b"www-authenticate", b'Bearer realm="scbus"')
        request.write(answer.encoded())
        request.finish()

    def _file(self, name: str) -> Answer:
        return Answer(200, self._static[name], STATIC[name])

    def writing(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """C{handler}, behind the bearer token check."""

        def checked(request: Request, *args: str) -> Any:
            if self._token is None:
                why = (
                    f"the environment variable {self._token_env} is not set"
                    if self._token_env else "[http] token_env is not configured"
                )
                return _error(403, f"writing endpoints are off: {why}")
            given = request.getHeader(b"authorization") or b""
            scheme, _, credential = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(credential.strip(), self._token):
                return _error(401, "a valid bearer token is required (Authorization: Bearer TOKEN)")
            return handler(request, *args)

        return checked

    # --- reading ------------------------------------------------------------------------

    def ready(self, request: Request) -> Answer:
        not_ready = []
        if not transport_connected(self.bus.transport):
            not_ready.append(transport_problem(self.bus.transport))
        states = self.bus.readiness()
        for name, state in sorted(states.items()):
            if state not in ("consuming", "paused"):
                not_ready.append(f"app {name}: {state}")
        paused = sorted(name for name, state in states.items() if state == "paused")
        body = {"ready": not not_ready, "not_ready": not_ready, "paused": paused}
        return Answer(200 if not not_ready else 503, body)

    def status_json(self, request: Request) -> Deferred[Answer]:
        return take_snapshot(self.bus).addCallback(
            lambda snap: Answer(200, snap.status_json(self.expected))
        )

    def metrics_text(self, request: Request) -> Deferred[Answer]:
        return take_snapshot(self.bus, self.set_aside).addCallback(
            lambda snap: Answer(200, self.metrics.render(snap), METRICS_CONTENT_TYPE)
        )

    def page_json(self, request: Request) -> Deferred[Answer]:
        """Everything the status page shows, in one poll."""

        def page(snap: Any) -> Answer:
            return Answer(200, {
                "bus": self.bus.name,
                "process": snap.answer.get("process"),
                "version": snap.answer.get("version"),
                "uptime": snap.answer.get("uptime"),
                "now": snap.at,
                "connected": snap.connected,
                "send_buffer": snap.send_buffer,
                "writable": self._token is not None,
                "token_env": self._token_env,
                "apps": snap.apps,
                "series": self.history.series(),
                "sample_every": self.history.every,
                "errors": list(self.history.errors),
                "set_aside": {kind: [e.as_json(PREVIEW) for e in entries[:LISTED]] for kind, entries in snap.set_aside.items()},
                "set_aside_total": {kind: len(entries) for kind, entries in snap.set_aside.items()},
                "set_aside_errors": snap.set_aside_errors,
            })

        return take_snapshot(self.bus, self.set_aside).addCallback(page)

    # --- writing ------------------------------------------------------------------------

    def publish(self, request: Request) -> Any:
        body = request.content.read() if request.content is not None else b""
        try:
            message = message_from_post(body, self.max_message_size)
        except DecodeError as e:
            return _error(400, str(e), reason=e.reason)
        if not self.bus.running:
            # Accepted now, it could not be handled before the process ends (in memory it
            # would end with the process): the sender must try another process or later.
            return _error(503, "not sent: the bus is stopping")
        if not transport_connected(self.bus.transport):
            # Over AMQP it would wait in the send buffer, in this process's memory only,
            # with the request hanging until the broker is back: say so now instead.
            return _error(503, "not sent: the transport is not connected to the broker; try again")
        log.info("http: publishing {type} {id}", type=message.wire_name, id=message.id)
        d = self.bus.send(message)
        d.addCallbacks(
            lambda _: Answer(202, {"id": message.id, "type": message.wire_name}),
            lambda f: _error(503, f"not sent: {f.getErrorMessage()}"),
        )
        return d

    def pause_or_resume(self, request: Request, app: str, action: str) -> Answer:
        if app not in self.bus.app_names():
            return _error(404, f"no app named {app!r}")
        getattr(self.bus, action)(app)
        return Answer(200, {"app": app, "paused": action == "pause"})

    def replay(self, request: Request, kind: str, entry_id: str) -> Any:
        if kind not in (UNROUTED, DEAD):
            return _error(404, f"kind must be {UNROUTED!r} or {DEAD!r}, not {kind!r}")
        from ..errors import ReplayRefused

        force = request.args.get(b"force", [b""])[0] in (b"1", b"true", b"yes")
        d = self.bus.transport.replay(kind, entry_id, force=force)
        d.addBoth(self._forget_listings)
        d.addCallbacks(
            lambda found: Answer(200, {"replayed": entry_id}) if found
            else _error(404, f"no {kind} message {entry_id}"),
            # Kept where it is: it would only be set aside again (?force=1 replays it anyway).
            lambda f: _error(409 if f.check(ReplayRefused) else 503, f"not replayed: {f.getErrorMessage()}"),
        )
        return d


    def _forget_listings(self, result: Any) -> Any:
        self.set_aside.forget()
        return result


class _NoRoute(Exception):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
