"""
The C{scbus} command: small operator tools beside the twistd plugin.

  scbus hash-password [--stdin] [--write FILE [--user NAME]]
                                      make a console password hash (asks twice, or reads a
                                      line); --write sets NAME's line in the passwd file
  scbus check-config FILE             load FILE and call every app's builder, as twistd would
  scbus status --config FILE [--json] every live bus process and its apps; exit 1 if unhealthy
  scbus ping --config FILE [--process P] [--app A]   is it answering, and how fast
  scbus pause APP --config FILE       pause APP in every process, and in those that start later
  scbus resume APP --config FILE      resume it everywhere

Over RabbitMQ they ask every process on the control plane; on the in-memory transport
they go through the bus's HTTP endpoint; on SQLite they read and write the file itself
(cli/reach.py says which verb goes which way). status and ping exit with 0 (healthy / answered), 1 (a problem or no answer), 2
(bad config) or 3 (broker or bus unreachable), so they can serve as health checks.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from .argtypes import seconds
from .commands import register as register_commands
from .pause import add_commands as add_pause_commands
from ..errors import ConfigError
from ..passwords import check_user_name, hash_password, write_passwd_entry

__all__ = ["main"]


def _hash_password(args: argparse.Namespace) -> int:
    problem = check_user_name(args.user)
    if problem is not None:
        print(f"scbus: --user: {problem}", file=sys.stderr)
        return 2
    if sys.stdin is None or sys.stdin.closed:
        print("scbus: standard input is closed: pipe the password in with --stdin", file=sys.stderr)
        return 2
    if args.stdin:
        try:
            password = _one_line(sys.stdin.readline())
        except UnicodeDecodeError:
            print("scbus: the password on standard input is not UTF-8 text", file=sys.stderr)
            return 2
    elif not sys.stdin.isatty():
        print(
            "scbus: no terminal to ask for the password on; pipe it in instead: "
            "scbus hash-password --stdin < password-file",
            file=sys.stderr,
        )
        return 2
    else:
        try:
            password = getpass.getpass("Password: ")
            again = getpass.getpass("Again: ")
        except (KeyboardInterrupt, Exception) as e:  # EOF, no tty, termios.error, ...
            print(f"scbus: cannot read the password from the terminal ({type(e).__name__})", file=sys.stderr)
            return 2
        if again != password:
            print("scbus: the passwords differ", file=sys.stderr)
            return 1
    if not password:
        print("scbus: refusing an empty password", file=sys.stderr)
        return 1
    stored = hash_password(password)
    if args.write is None:
        print(stored)
        return 0
    try:
        replaced = write_passwd_entry(args.write, args.user, stored)
    except OSError as e:
        print(f"scbus: cannot write {args.write}: {e.strerror}", file=sys.stderr)
        return 1
    mode = oct(os.stat(args.write).st_mode & 0o777)[2:]
    print(f"{args.write}: {'changed the password of' if replaced else 'added'} {args.user} (mode {mode})")
    return 0


def _one_line(text: str) -> str:
    """The line without its ending: one \\n or \\r\\n, as a shell or Windows editor writes it."""
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


def _check_config(args: argparse.Namespace) -> int:
    from ..config import load_and_build

    try:
        loaded = load_and_build(args.file)
    except ConfigError as e:
        _print_problems(e)
        return 2
    for warning in loaded.warnings:
        print(f"scbus: warning: {warning}", file=sys.stderr)
    enabled = list(loaded.subscriptions)
    print(f"{args.file}: ok ({len(enabled)} app(s): {', '.join(enabled)})")
    return 0


def _print_problems(error: ConfigError) -> None:
    for line in error.lines():
        print(f"scbus: {line}", file=sys.stderr)


def _control_client(args: argparse.Namespace) -> tuple[Any, Any] | int:
    from ..config import load_config
    from .control_client import BrokerUnreachable, ControlClient

    try:
        config = load_config(args.config)
        app = getattr(args, "app", None)
        if app is not None and app not in config.apps:
            raise ConfigError(
                config.source, f"apps.{app}",
                f"the config has no app {app!r} (its apps: {', '.join(config.apps) or 'none'})",
            )
    except ConfigError as e:
        _print_problems(e)
        return 2
    try:
        return config, ControlClient(config.transport.amqp, connect_timeout=args.timeout)
    except BrokerUnreachable as e:
        print(f"scbus: cannot reach the broker: {e}", file=sys.stderr)
        return 3


def _by_transport(verb: str, over_broker: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """C{verb}'s command: over the broker, or through the bus's HTTP endpoint (commands/reach.py picks)."""

    def run(args: argparse.Namespace) -> int:
        from .common import Refused, run_refusing
        from .reach import FILE, HTTP, reach
        from ..config import load_config

        try:
            config = load_config(args.config)
            way = reach(config, verb)
        except ConfigError as e:
            _print_problems(e)
            return 2
        except Refused as e:
            print(f"scbus: {e}", file=sys.stderr)
            return e.status
        if way == FILE:
            from . import overfile

            over_file: dict[str, Callable[[argparse.Namespace], int]] = {
                "status": lambda a: overfile.status(config, a),
                "ping": lambda a: overfile.ping(config, a),
                "pause": lambda a: overfile.pause_or_resume(config, a, True),
                "resume": lambda a: overfile.pause_or_resume(config, a, False),
            }
            return run_refusing(over_file[verb], args)
        if way != HTTP:
            return over_broker(args)
        from . import overhttp

        over_http: dict[str, Callable[[argparse.Namespace], int]] = {
            "status": lambda a: overhttp.status(config, a),
            "ping": lambda a: overhttp.ping(config, a),
            "pause": lambda a: overhttp.pause_or_resume(config, a, True),
            "resume": lambda a: overhttp.pause_or_resume(config, a, False),
        }
        return run_refusing(over_http[verb], args)

    return run


def _all_answered(wanted: dict[str, int]) -> Any:
    """Enough answers: every app run by as many answering processes as C{wanted} says."""

    def enough(answers: list[tuple[float, dict[str, Any]]]) -> bool:
        running: dict[str, int] = {}
        for _elapsed, answer in answers:
            for app in answer.get("apps", []):
                running[app] = running.get(app, 0) + 1
        return all(running.get(app, 0) >= count for app, count in wanted.items())

    return enough


def _wanted(expected: dict[str, int], consumers: dict[str, int | None]) -> dict[str, int]:
    """Per app, the processes to wait for: those the config expects, or every consumer."""
    return {app: max(count, consumers.get(app) or 0) for app, count in expected.items()}


def _status(args: argparse.Namespace) -> int:
    from ..control import assess, render

    made = _control_client(args)
    if isinstance(made, int):
        return made
    config, client = made
    expected = {name: app.expected_processes for name, app in config.apps.items() if app.enabled}
    try:
        queued, consumers = client.queue_facts(list(expected))
        enough = _all_answered(_wanted(expected, consumers))
        answers = [answer for _, answer in client.ask({"op": "status"}, args.timeout, enough)]
    finally:
        client.close()
    health = assess(answers, expected, consumers, queued)
    if args.json:
        print(json.dumps({
            "healthy": health.healthy,
            "problems": health.problems,
            "processes": health.answers,
            "queues": {app: {"ready": queued.get(app), "consumers": consumers.get(app)} for app in expected},
        }, indent=2, default=repr))
    else:
        print(render(health))
    return 0 if health.healthy else 1


def _ping(args: argparse.Namespace) -> int:
    made = _control_client(args)
    if isinstance(made, int):
        return made
    config, client = made
    target = {k: v for k, v in (("process", args.process), ("app", args.app)) if v}
    try:
        if args.process:
            enough = lambda answers: len(answers) >= 1  # noqa: E731 - one process is named
        else:
            apps = [args.app] if args.app else [n for n, a in config.apps.items() if a.enabled]
            _queued, consumers = client.queue_facts(apps)
            enough = _all_answered(_wanted({a: config.apps[a].expected_processes for a in apps}, consumers))
        answers = client.ask({"op": "ping", "target": target}, args.timeout, enough)
    finally:
        client.close()
    for elapsed, answer in sorted(answers, key=lambda a: a[0]):
        print(f"{answer.get('process')}: answered in {elapsed * 1000:.1f} ms (apps: {', '.join(answer.get('apps', []))})")
    if not answers:
        print(f"no answer within {args.timeout}s from {target or 'any process'}", file=sys.stderr)
        return 1
    return 0


def _version() -> str:
    from .. import __version__

    return f"scbus {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scbus", description="scbus operator tools")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True)
    hp = commands.add_parser("hash-password", help="make a console password hash")
    hp.add_argument(
        "--stdin", action="store_true",
        help="read the password from the first line of standard input (for scripts)",
    )
    hp.add_argument(
        "--write", metavar="FILE",
        help="set the user's line in this console passwd file (made with mode 600; other lines kept) "
        "instead of printing the hash",
    )
    hp.add_argument("--user", default="admin", help="the user whose line --write sets (default: admin)")
    hp.set_defaults(run=_hash_password)
    cc = commands.add_parser("check-config", help="check a config file and its app builders")
    cc.add_argument("file")
    cc.set_defaults(run=_check_config)
    st = commands.add_parser("status", help="ask every live bus process for its status")
    st.add_argument("--config", required=True, help="the bus config (to find the broker and the apps)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument(
        "--timeout", type=seconds, default=2.0,
        help="longest wait, in seconds, for the broker and for answers (status returns as soon "
        "as every expected process answered)",
    )
    st.set_defaults(run=_by_transport("status", _status))
    pg = commands.add_parser("ping", help="ask one process, or the processes of one app, to answer")
    pg.add_argument("--config", required=True)
    pg.add_argument("--process", help="process name (bus@host:pid), pid or bus name")
    pg.add_argument("--app", help="only processes running this app")
    pg.add_argument("--timeout", type=seconds, default=2.0, help="longest wait, in seconds")
    pg.set_defaults(run=_by_transport("ping", _ping))
    register_commands(commands)
    add_pause_commands(commands, _control_client, _by_transport)
    args = parser.parse_args(argv)
    try:
        code = args.run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (`scbus status --json | head`): no traceback, and no second
        # error when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
