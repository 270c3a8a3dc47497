"""
Every `scbus` verb on a bus whose transport is an SQLite file, run as real commands
against the file itself: publishing into a stopped bus's file (then a real twistd
handles it), listing, replaying and purging what was set aside with no bus running,
status and ping with and without a live bus, pause marks written in the file.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from ..sqlite_chain import config_text, done_count, prepare
from .conftest import ROOT, free_port, wait_for_log
from .test_sqlite_twistd import wait_until


def scbus(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scbus.cli", *args], capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.DEVNULL,
    )


def chain(tmp_path):
    db = tmp_path / "chain.db"
    prepare(db, 0)  # the chain's routes, as a bus that ran once leaves them; collector paused
    config = tmp_path / "scbus.toml"
    config.write_text(config_text(db))
    return db, str(config)


def rows(db, sql, *params):
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def test_published_into_a_stopped_bus_file_it_is_handled_once_the_bus_starts(tmp_path, run_twistd):
    db, config = chain(tmp_path)
    out = scbus("publish", "--config", config, "chain.Job", '{"n": 7}')
    assert out.returncode == 0, out.stderr
    [job_id] = out.stdout.split()
    queued = rows(db, "SELECT queues.name, messages.body, queues.ready FROM messages JOIN queues ON queues.id = messages.queue")
    assert [(name, json.loads(body)["id"], ready) for name, body, ready in queued] == [("first", job_id, 1)]
    bus = run_twistd(str(tmp_path), config)
    wait_until(lambda: done_count(db) == 1, bus, what="the Done of the published Job")
    [(body,)] = rows(db, "SELECT body FROM messages")
    assert json.loads(body)["data"] == {"n": 7, "job": job_id}
    assert bus.terminate() == -signal.SIGTERM


def test_an_unrouted_publish_is_kept_and_listed_replayed_and_purged_offline(tmp_path):
    db, config = chain(tmp_path)
    out = scbus("publish", "--config", config, "scbus.Heartbeat", "{}")
    assert out.returncode == 0 and "no app subscribes to scbus.Heartbeat: kept as unrouted" in out.stderr, out
    listed = scbus("set-aside", "--config", config, "list", "unrouted", "--json")
    [entry] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert entry["type"] == "scbus.Heartbeat" and entry["code"] == "unrouted", entry
    refused = scbus("set-aside", "--config", config, "replay", "unrouted", entry["id"])
    assert refused.returncode == 1 and "not replayed" in refused.stderr and "--force" in refused.stderr, refused
    forced = scbus("set-aside", "--config", config, "replay", "unrouted", entry["id"], "--force")
    assert forced.returncode == 0, forced.stderr
    # still nobody subscribes: kept again under the same id, once
    assert rows(db, "SELECT id FROM set_aside") == [(entry["id"],)]
    missing = scbus("set-aside", "--config", config, "replay", "unrouted", "nosuchid")
    assert missing.returncode == 1 and "no unrouted message with id nosuchid" in missing.stderr, missing
    unconfirmed = scbus("set-aside", "--config", config, "purge", "unrouted")
    assert unconfirmed.returncode == 1 and "--yes" in unconfirmed.stderr, unconfirmed
    assert rows(db, "SELECT count(*) FROM set_aside") == [(1,)]
    purged = scbus("set-aside", "--config", config, "purge", "unrouted", "--yes")
    assert purged.returncode == 0 and purged.stdout.strip() == "deleted 1 unrouted message(s)", purged
    assert rows(db, "SELECT count(*) FROM set_aside") == [(0,)]


def test_a_dead_entry_replays_into_the_queue_it_came_from(tmp_path):
    db, config = chain(tmp_path)
    connection = sqlite3.connect(str(db))
    body = b'{"type":"chain.Job","id":"j1","created_at":1.0,"correlation_id":null,"data":{"n":3}}'
    connection.execute(
        "INSERT INTO set_aside (kind, id, body, code, reason, type, app, at) VALUES "
        "('dead', 'e1', ?, 'handler_error', 'it failed', 'chain.Job', 'first', 1.0)", (body,),
    )
    connection.commit()
    connection.close()
    out = scbus("set-aside", "--config", config, "replay", "dead", "e1")
    assert out.returncode == 0 and out.stdout.strip() == "replayed e1 to first", out
    assert rows(db, "SELECT count(*) FROM set_aside") == [(0,)]
    assert rows(db, "SELECT queues.name, body, ready FROM messages JOIN queues ON queues.id = messages.queue") == [
        ("first", body, 1)
    ]


def test_status_and_ping_read_the_file_and_its_lock(tmp_path, run_twistd):
    db, config = chain(tmp_path)
    stopped = scbus("status", "--config", config, "--json")
    facts = json.loads(stopped.stdout)
    assert stopped.returncode == 1 and facts["live"] is False and facts["process"] is None, stopped
    assert facts["paused"] == {"collector": "test", "errors": "test"}
    assert scbus("ping", "--config", config).returncode == 1
    bus = run_twistd(str(tmp_path), config)
    deadline = time.monotonic() + 30
    while json.loads(scbus("status", "--config", config, "--json").stdout)["live"] is False:
        assert bus.process.poll() is None and time.monotonic() < deadline, bus.log()
        time.sleep(0.2)
    live = scbus("status", "--config", config)
    assert live.returncode == 0, live
    assert "held by chain@" in live.stdout and f"(pid {bus.process.pid})" in live.stdout, live.stdout
    pinged = scbus("ping", "--config", config)
    assert pinged.returncode == 0 and "holds the file" in pinged.stdout, pinged
    # the probe of the lock let go of it at once: the bus still stops cleanly and a second probe sees it
    assert json.loads(scbus("status", "--config", config, "--json").stdout)["process"]["pid"] == bus.process.pid
    assert bus.terminate() == -signal.SIGTERM
    assert scbus("status", "--config", config).returncode == 1


def test_pause_and_resume_write_the_mark_a_starting_bus_obeys(tmp_path, run_twistd):
    db, config = chain(tmp_path)
    paused = scbus("pause", "first", "--config", config)
    assert paused.returncode == 0 and f"kept in {db}" in paused.stdout, paused
    assert [app for app, _by in rows(db, "SELECT app, paused_by FROM pauses")] == ["collector", "errors", "first"]
    assert scbus("publish", "--config", config, "chain.Job", '{"n": 1}').returncode == 0
    bus = run_twistd(str(tmp_path), config)
    wait_until(lambda: "first: paused" in bus.log(), bus, what="first to start paused")
    wait_until(lambda: "second: subscribed" in bus.log() or "second: consuming" in bus.log(), bus, timeout=10,
               what="the other apps to start")
    assert done_count(db) == 0 and rows(db, "SELECT ready FROM queues WHERE name = 'first'") == [(1,)]
    assert bus.terminate() == -signal.SIGTERM
    resumed = scbus("resume", "first", "--config", config)
    assert resumed.returncode == 0, resumed
    assert [app for app, _by in rows(db, "SELECT app, paused_by FROM pauses")] == ["collector", "errors"]
    again = run_twistd(str(tmp_path), config)
    wait_until(lambda: done_count(db) == 1, again, what="the Job handled once resumed")
    assert again.terminate() == -signal.SIGTERM


def test_a_bad_file_is_one_line_and_exit_2_and_consume_is_refused(tmp_path):
    db, config = chain(tmp_path)
    db.unlink()
    for suffix in ("-wal", "-shm"):
        if os.path.exists(f"{db}{suffix}"):
            os.unlink(f"{db}{suffix}")
    db.write_bytes(b"not a database" * 500)
    out = scbus("status", "--config", config)
    assert out.returncode == 2 and out.stdout == "", out
    [line] = out.stderr.splitlines()
    assert f"{db} is not an SQLite database" in line, line
    consumed = scbus("consume", "--config", config, "chain.Job")
    assert consumed.returncode == 2 and "subscribe an app" in consumed.stderr, consumed
    (tmp_path / "chain.db").unlink()
    missing = scbus("set-aside", "--config", config, "list", "dead")
    assert missing.returncode == 2 and "does not exist: no bus has used it yet" in missing.stderr, missing


TOKEN = "cli-sqlite-token"


def test_while_a_bus_runs_the_writing_verbs_use_its_http_endpoint(tmp_path, run_twistd, monkeypatch):
    db, config = chain(tmp_path)
    port = free_port()
    with open(config, "a") as f:
        f.write(f'\n[http]\nport = {port}\ntoken_env = "SCBUS_TEST_SQLITE_TOKEN"\n')
    monkeypatch.setenv("SCBUS_TEST_SQLITE_TOKEN", TOKEN)
    bus = run_twistd(str(tmp_path), config)
    wait_for_log(bus, "the status page is at", timeout=30)
    wait_until(lambda: json.loads(scbus("status", "--config", config, "--json").stdout)["live"], bus, what="the lock")
    out = scbus("publish", "--config", config, "chain.Job", '{"n": 5}')
    assert out.returncode == 0, out.stderr
    wait_until(lambda: done_count(db) == 1, bus, what="the Job published while it runs to be handled")
    paused = scbus("pause", "first", "--config", config)
    assert paused.returncode == 0 and "paused in 1 process(es)" in paused.stdout, paused
    wait_for_log(bus, "first: paused", timeout=30)
    assert ("first",) in rows(db, "SELECT app FROM pauses")
    assert bus.terminate() == -signal.SIGTERM


def test_while_a_bus_runs_without_http_publish_says_when_it_is_taken(tmp_path, run_twistd):
    db, config = chain(tmp_path)
    bus = run_twistd(str(tmp_path), config)
    wait_until(lambda: json.loads(scbus("status", "--config", config, "--json").stdout)["live"], bus, what="the lock")
    out = scbus("publish", "--config", config, "chain.Job", '{"n": 5}')
    assert out.returncode == 0 and "reads this at its next start" in out.stderr, out
    assert rows(db, "SELECT count(*) FROM messages JOIN queues ON queues.id = messages.queue WHERE name = 'first'") == [(1,)]
    assert bus.terminate() == -signal.SIGTERM
    again = run_twistd(str(tmp_path), config)
    wait_until(lambda: done_count(db) == 1, again, what="the Job to be handled at the next start")
    assert again.terminate() == -signal.SIGTERM
