"""
The verbs that reach a bus through its HTTP endpoint (L{reach.HTTP}: the in-memory
transport, one process): status and ping from C{/status.json}, pause and resume, and
listing and replaying what it set aside. They print what their broker versions print.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
from typing import Any

from ..config import Config
from .common import EXIT_BROKER, EXIT_CONFIG, Refused
from .reach import BusEndpoint

__all__ = ["status", "ping", "pause_or_resume", "tell_pause", "set_aside"]


def _status_json(endpoint: BusEndpoint) -> dict[str, Any]:
    code, answer = endpoint.call("GET", "/status.json")
    if code != 200 or not isinstance(answer, dict):
        raise Refused(f"the bus at {endpoint.base} answered {code}: {answer}", EXIT_BROKER)
    return answer


def status(config: Config, args: argparse.Namespace) -> int:
    from ..control import assess, render

    answers = _status_json(BusEndpoint(config, args.timeout)).get("processes", [])
    # One process holds every app of an in-memory bus, whatever expected_processes says.
    health = assess(answers, {name: 1 for name, app in config.apps.items() if app.enabled})
    if args.json:
        print(json.dumps({
            "healthy": health.healthy,
            "problems": health.problems,
            "processes": health.answers,
            "queues": {
                s["name"]: {"ready": s.get("queued"), "consumers": None}
                for answer in health.answers for s in answer.get("app_status", [])
            },
        }, indent=2, default=repr))
    else:
        print(render(health))
    return 0 if health.healthy else 1


def _known_app(config: Config, app: str | None) -> None:
    if app is not None and app not in config.apps:
        raise Refused(
            f"{config.source}: apps.{app}: the config has no app {app!r} (its apps: {', '.join(config.apps) or 'none'})",
            EXIT_CONFIG,
        )


def ping(config: Config, args: argparse.Namespace) -> int:
    _known_app(config, args.app)
    endpoint = BusEndpoint(config, args.timeout)
    started = time.monotonic()
    answers = _status_json(endpoint).get("processes", [])
    elapsed = time.monotonic() - started
    shown = [
        a for a in answers
        if (not args.app or args.app in a.get("apps", []))
        and (not args.process or args.process in (a.get("process"), str(a.get("pid")), a.get("bus")))
    ]
    for answer in shown:
        print(f"{answer.get('process')}: answered in {elapsed * 1000:.1f} ms (apps: {', '.join(answer.get('apps', []))})")
    if not shown:
        target = {k: v for k, v in (("process", args.process), ("app", args.app)) if v}
        raise Refused(f"no process at {endpoint.base} matches {target}")
    return 0


def pause_or_resume(config: Config, args: argparse.Namespace, paused: bool) -> int:
    process = tell_pause(config, args, paused)
    verb = "pause" if paused else "resume"
    print(f"{args.app}: {verb}d in 1 process(es)\n  {process}\n  (in memory: until that process restarts)")
    return 0


def tell_pause(config: Config, args: argparse.Namespace, paused: bool) -> str:
    """Pause (or resume) the app in the bus process behind the endpoint; answers its name."""
    _known_app(config, args.app)
    verb = "pause" if paused else "resume"
    endpoint = BusEndpoint(config, args.timeout)
    code, answer = endpoint.call("POST", f"/apps/{urllib.parse.quote(args.app, safe='')}/{verb}", b"", endpoint.token(verb))
    if code != 200:
        raise Refused(f"not {verb}d: the bus answered {code}: {answer.get('error', answer)}", EXIT_BROKER)
    return str(_status_json(endpoint).get("processes", [{}])[0].get("process", endpoint.base))


def set_aside(config: Config, args: argparse.Namespace) -> int:
    endpoint = BusEndpoint(config)
    if args.action == "replay":
        query = "?force=1" if args.force else ""
        path = f"/set-aside/{args.kind}/{urllib.parse.quote(args.id, safe='')}/replay{query}"
        code, answer = endpoint.call("POST", path, b"", endpoint.token("set-aside replay"))
        if code == 200:
            print(f"replayed {args.id}")
            return 0
        if code == 404:
            raise Refused(f"no {args.kind} message with id {args.id}")
        if code == 409:
            raise Refused(f"{answer.get('error')} (--force replays it anyway)")
        raise Refused(f"the bus answered {code}: {answer.get('error', answer)}", EXIT_BROKER)
    code, page = endpoint.call("GET", "/page.json")
    if code != 200:
        raise Refused(f"the bus at {endpoint.base} answered {code}: {page}", EXIT_BROKER)
    if page.get("set_aside_errors", {}).get(args.kind):
        raise Refused(f"the bus cannot list {args.kind}: {page['set_aside_errors'][args.kind]}", EXIT_BROKER)
    from .setaside import show_listing

    entries, total = page["set_aside"][args.kind], page["set_aside_total"][args.kind]
    return show_listing(entries, total, args, more=" (the first the status page lists, bodies cut short)")
