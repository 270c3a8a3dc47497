"""
A two-app chain on one SQLite file, for tests that run it in real twistd processes and
kill them: ``first`` answers each Job with a Step, ``second`` each Step with a Done, and
``collector`` (paused in the file, so it never consumes) keeps every Done in its queue.
Each output names the Job it came from, so the file itself says, per Job id, what was
made and how often. The file is prepared, and read, with the transport's own schema and
store: as a program that writes the file directly would.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter

from scbus import Message, codec
from scbus.message import AppErrorOccurredMessage
from scbus.transports.sqlite.batch import Batch, Call
from scbus.transports.sqlite.schema import open_database
from scbus.transports.sqlite.store import Store


class Job(Message, wire_name="chain.Job"):
    n: int


class Step(Message, wire_name="chain.Step"):
    n: int
    job: str


class Done(Message, wire_name="chain.Done"):
    n: int
    job: str


def make_first(name, root_config, config):
    poison = set(config.get("poison", []))

    def on_job(job):
        if job.n in poison:
            os._exit(17)  # a message that kills its process every time
        return Step(n=job.n, job=job.id)

    return {Job: on_job}


def make_second(name, root_config, config):
    return {Step: lambda step: Done(n=step.n, job=step.job)}


def make_collector(name, root_config, config):
    return {Done: lambda done: None}


def make_errors(name, root_config, config):
    return {AppErrorOccurredMessage: lambda report: None}


CONFIG = """
[bus]
name = "chain"
grace_period = 5

[transport]
type = "sqlite"
path = "{path}"
durability = "{durability}"
delivery_limit = {delivery_limit}

[apps.first]
builder = "tests.sqlite_chain:make_first"
max_in_flight = {first_in_flight}
config = {{ poison = {poison} }}

[apps.second]
builder = "tests.sqlite_chain:make_second"
max_in_flight = {second_in_flight}

[apps.collector]
builder = "tests.sqlite_chain:make_collector"

[apps.errors]
builder = "tests.sqlite_chain:make_errors"
"""


def config_text(path, durability="process", first_in_flight=50, second_in_flight=10, delivery_limit=20, poison=()) -> str:
    return CONFIG.format(
        path=path, durability=durability, first_in_flight=first_in_flight, second_in_flight=second_in_flight,
        delivery_limit=delivery_limit, poison=list(poison),
    )


def prepare(path, count: int) -> list[str]:
    """The file with the chain's routes, the collector paused, and C{count} Jobs queued; their ids."""
    store = Store(open_database(str(path), "process"), 1_000_000)
    try:
        store.start("test")
        batch = Batch()
        routes = (("first", [Job]), ("second", [Step]), ("collector", [Done]), ("errors", [AppErrorOccurredMessage]))
        for app, types in routes:
            batch.calls.append(Call(lambda s, a=app, t=types: s.subscribe(a, [c.wire_name for c in t], True), _ignore))
        for app in ("collector", "errors"):  # they keep what they get, for the test to read
            batch.calls.append(Call(lambda s, a=app: s.mark_paused(a, True, "test"), _ignore))
        jobs = [Job(n=n) for n in range(count)]
        batch.sends = [(((("first", codec.encode(job)),), None), None) for job in jobs]
        outcome = store.apply(batch)
        assert outcome.error is None and all(error is None for error, _ in outcome.calls), outcome.calls
        store.finish()
    finally:
        store.connection.close()
    return [job.id for job in jobs]


def _ignore(error, value):
    return None


def read(path) -> dict:
    """What the file holds now: Done per Job id, error reports, and what is left anywhere else."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        done: Counter[str] = Counter()
        left: Counter[str] = Counter()
        reports = []
        claimed = 0
        for name, body, claimed_by in connection.execute(
            "SELECT queues.name, body, claimed_by FROM messages JOIN queues ON queues.id = messages.queue"
        ):
            if name == "collector":
                done[codec.decode(body).job] += 1
            elif name == "errors":
                reports.append(codec.decode(body))
            else:
                left[name] += 1
            claimed += claimed_by is not None
        aside = dict(connection.execute("SELECT kind, count(*) FROM set_aside GROUP BY kind").fetchall())
        dead = connection.execute("SELECT code, app, body FROM set_aside WHERE kind = 'dead'").fetchall()
        return {"done": done, "left": left, "claimed": claimed, "set_aside": aside, "dead": dead, "reports": reports}
    finally:
        connection.close()


def done_count(path) -> int:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        row = connection.execute(
            "SELECT count(*) FROM messages JOIN queues ON queues.id = messages.queue WHERE queues.name = 'collector'"
        ).fetchone()
        return int(row[0])
    finally:
        connection.close()
