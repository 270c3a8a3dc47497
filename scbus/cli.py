"""
The C{scbus} command: small operator tools beside the twistd plugin.

  scbus hash-password            make a console password hash (reads the password twice)
  scbus check-config FILE        load FILE and call every app's builder, as twistd would
"""

from __future__ import annotations

import argparse
import getpass
import sys

from .errors import ConfigError
from .passwords import hash_password

__all__ = ["main"]


def _hash_password(args: argparse.Namespace) -> int:
    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("scbus: the passwords differ", file=sys.stderr)
            return 1
    if not password:
        print("scbus: refusing an empty password", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from .config import build_subscriptions, load_config

    try:
        config = load_config(args.file)
        for app in config.apps.values():
            if app.enabled:
                build_subscriptions(config, app)
    except ConfigError as e:
        print(f"scbus: {e}", file=sys.stderr)
        return 2
    enabled = [name for name, app in config.apps.items() if app.enabled]
    print(f"{args.file}: ok ({len(enabled)} app(s): {', '.join(enabled)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scbus", description="scbus operator tools")
    commands = parser.add_subparsers(dest="command", required=True)
    hp = commands.add_parser("hash-password", help="make a console password hash")
    hp.add_argument("--stdin", action="store_true", help="read the password from standard input")
    hp.set_defaults(run=_hash_password)
    cc = commands.add_parser("check-config", help="check a config file and its app builders")
    cc.add_argument("file")
    cc.set_defaults(run=_check_config)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
