"""
``bus.log_format = "json"``: one flat JSON object per log line, for log shippers.

Each line has C{time} (UTC, ISO 8601), C{level}, C{logger} (the event's namespace),
C{message} (the formatted text), then the event's own fields. Fields named like secrets
are left out and passwords in URLs are masked: logs are read by more people than the
bus's configuration is.
"""

from __future__ import annotations

import datetime
import json
import re
import sys
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogLevelFilterPredicate,
    formatEvent,
)
from twisted.python import logfile

from .capture import FROM_STDLIB

__all__ = ["event_as_json", "json_log_observer", "twistd_json_observer"]

_SECRET_NAME = re.compile(r"pass(word|wd)?|token|secret|credential|authori[sz]ation|api_?key", re.I)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@", re.I)
#: Bookkeeping keys of the Twisted event, and the bridge's private ones.
_SKIPPED = {"scbus_text", FROM_STDLIB, "format", "message", "time", "isError", "system", "why", "failure"}


def _masked(text: str) -> str:
    return _URL_PASSWORD.sub(r"\1***@", text)


def _value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value if not isinstance(value, float) or value == value and abs(value) != float("inf") else repr(value)
    if isinstance(value, str):
        return _masked(value)
    if isinstance(value, (list, tuple)):
        return [_value(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _value(v) for k, v in value.items() if not _SECRET_NAME.search(k)}
    return _masked(repr(value))


def event_as_json(event: dict[str, Any]) -> str:
    """The event as one JSON line (with its newline)."""
    when = datetime.datetime.fromtimestamp(event.get("log_time", 0), datetime.timezone.utc)
    level = event.get("log_level")
    line: dict[str, Any] = {
        "time": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "level": level.name if level is not None else "info",
        "logger": event.get("log_namespace", "-"),
        "message": _masked(formatEvent(event) or ""),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _SKIPPED or key in line or _SECRET_NAME.search(key):
            continue
        line[key] = _value(value)
    failure = event.get("log_failure")
    if failure is not None:
        try:
            line["traceback"] = _masked(failure.getTraceback())
        except Exception as e:
            line["traceback"] = f"(unavailable: {e!r})"
    return json.dumps(line, ensure_ascii=False) + "\n"


def json_log_observer(out: IO[str]) -> FileLogObserver:
    return FileLogObserver(out, event_as_json)


def twistd_json_observer(twistd_options: Any, predicate: LogLevelFilterPredicate) -> ILogObserver:
    """
    JSON lines where twistd would write text: its C{--logfile}, or standard output when
    it runs in the foreground without one; behind the level filter C{predicate}.
    """
    path = twistd_options.get("logfile") or ""
    if path == "-" or (not path and twistd_options.get("nodaemon")):
        observer = json_log_observer(sys.stdout)
    else:
        observer = json_log_observer(logfile.LogFile.fromFullPath(path or "twistd.log"))
    return FilteringLogObserver(observer, [predicate])
