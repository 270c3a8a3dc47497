"""bus.log_format = "json": one flat JSON object per line, never a credential."""

import io
import json

from twisted.logger import Logger, LogLevel, LogLevelFilterPredicate
from twisted.python.failure import Failure

from scbus.logs.jsonformat import event_as_json, json_log_observer, twistd_json_observer


def emitted(**fields):
    out = io.StringIO()
    log = Logger(namespace="scbus.test", observer=json_log_observer(out))
    log.emit(fields.pop("level", LogLevel.warn), fields.pop("format"), **fields)
    (line,) = out.getvalue().splitlines()
    return json.loads(line)


def test_a_flat_object_with_the_events_fields():
    line = emitted(format="{app}: {n} late", app="shop", n=3, nested={"a": [1, 2]})
    assert line["level"] == "warn" and line["logger"] == "scbus.test"
    assert line["message"] == "shop: 3 late"
    assert (line["app"], line["n"], line["nested"]) == ("shop", 3, {"a": [1, 2]})
    assert line["time"].endswith("Z") and "T" in line["time"]
    assert not any(key.startswith("log_") for key in line)


def test_credentials_never_appear():
    line = emitted(
        format="connecting to {url}", url="amqp://scbus:hunter2@rabbit:5672/", password="hunter2",
        token="abc", settings={"password_env": "X", "host": "rabbit"}, other=object(),
    )
    text = json.dumps(line)
    assert "hunter2" not in text and "abc" not in text and "password_env" not in text
    assert line["url"] == "amqp://scbus:***@rabbit:5672/" and "***@" in line["message"]
    assert line["settings"] == {"host": "rabbit"} and line["other"].startswith("<object")


def test_a_failure_carries_its_traceback():
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        failure = Failure()
    event = {"log_format": "boom", "log_level": LogLevel.critical, "log_namespace": "x", "log_time": 0, "log_failure": failure}
    line = json.loads(event_as_json(event))
    assert line["level"] == "critical" and "ZeroDivisionError" in line["traceback"]


def test_twistd_logs_json_where_it_would_log_text_behind_the_level_filter(tmp_path):
    options = {"logfile": str(tmp_path / "bus.log"), "nodaemon": True}
    observer = twistd_json_observer(options, LogLevelFilterPredicate(defaultLogLevel=LogLevel.info))
    observer({"log_format": "hidden", "log_level": LogLevel.debug, "log_namespace": "x", "log_time": 0})
    observer({"log_format": "hello", "log_level": LogLevel.info, "log_namespace": "x", "log_time": 0})
    observer._observer._outFile.flush()
    (line,) = (tmp_path / "bus.log").read_text().splitlines()
    assert json.loads(line)["message"] == "hello"
