"""
Chaos on the SQLite transport: a two-app chain in one file, its twistd process SIGKILLed
at random moments (while it opens the file, while it works) and started again each time.
Counted per Job id from the file itself: every output made exactly once, none lost,
nothing left claimed or queued at the end.

    SCBUS_CHAOS_MESSAGES=20000 SCBUS_CHAOS_KILLS=19 python -m pytest tests/faults/test_sqlite_chaos.py -s

(SCBUS_CHAOS_SEED repeats a run's kill moments; the seed is printed.)
"""

from __future__ import annotations

import os
import random
import signal
import time

from ..e2e.conftest import Twistd
from ..sqlite_chain import config_text, done_count, prepare, read
from .test_faults import RESULTS

MESSAGES = int(os.environ.get("SCBUS_CHAOS_MESSAGES", "20000"))
KILLS = int(os.environ.get("SCBUS_CHAOS_KILLS", "19"))


def test_a_chain_survives_kills_at_random_moments_exactly_once(tmp_path):
    seed = int(os.environ.get("SCBUS_CHAOS_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    print(f"chaos: {MESSAGES} messages, {KILLS} kills, seed {seed}")
    db = tmp_path / "chain.db"
    jobs = prepare(db, MESSAGES)
    config = tmp_path / "scbus.toml"
    config.write_text(config_text(db, first_in_flight=rng.choice([1, 10, 50, 200]), second_in_flight=rng.choice([1, 10, 50])))
    # Most kills come when a share of the outputs is made (spread over the run, a few
    # milliseconds later); a quarter at a random moment of the start-up, while the new
    # process opens the file and takes back the claims of the one before.
    marks = sorted(rng.sample(range(1, MESSAGES), KILLS))
    runs: list[Twistd] = []
    killed_at = []
    started = time.monotonic()
    try:
        for mark in marks:
            bus = Twistd(str(tmp_path), str(config))
            runs.append(bus)
            if rng.random() < 0.25:
                time.sleep(rng.uniform(0.0, 0.6))
            else:
                deadline = time.monotonic() + 60
                while done_count(db) < mark and time.monotonic() < deadline and bus.process.poll() is None:
                    time.sleep(0.002)
                time.sleep(rng.uniform(0.0, 0.01))
            assert bus.process.poll() is None, bus.log()
            killed_at.append(done_count(db))
            os.kill(bus.process.pid, signal.SIGKILL)
            bus.process.wait(10)
        bus = Twistd(str(tmp_path), str(config))
        runs.append(bus)
        deadline = time.monotonic() + 120
        while (done_count(db) < MESSAGES or read(db)["left"]) and time.monotonic() < deadline:
            assert bus.process.poll() is None, bus.log()
            time.sleep(0.1)
        assert bus.terminate() == -signal.SIGTERM
    finally:
        for run in runs:
            run.kill()
    found = read(db)
    made = {job: found["done"][job] for job in jobs}
    lost = sum(1 for count in made.values() if count == 0)
    duplicated = sum(count - 1 for count in made.values() if count > 1)
    strays = set(found["done"]) - set(jobs)
    RESULTS.append({
        "case": f"sqlite chain, SIGKILL x{KILLS}",
        "sent": MESSAGES, "confirmed": MESSAGES, "handled": sum(1 for c in made.values() if c),
        "lost": lost, "duplicated": duplicated, "in_flight_end": found["claimed"] + sum(found["left"].values()),
        "seconds": round(time.monotonic() - started, 1), "seed": seed,
    })
    print(f"chaos: outputs at the kills {killed_at}; lost {lost}, duplicated {duplicated}; {RESULTS[-1]['seconds']}s")
    assert (lost, duplicated, strays) == (0, 0, set())
    assert all(count == 1 for count in made.values())
    assert (found["left"], found["claimed"], found["set_aside"]) == ({}, 0, {})
    for run in runs[1:]:
        assert "Traceback" not in run.log(), run.log()


def test_a_message_that_kills_its_process_each_time_is_quarantined(tmp_path):
    total, poison, limit = 300, 150, 2
    db = tmp_path / "chain.db"
    jobs = prepare(db, total)
    config = tmp_path / "scbus.toml"
    config.write_text(config_text(db, first_in_flight=1, delivery_limit=limit, poison=[poison]))
    runs: list[Twistd] = []
    deaths = 0
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            bus = Twistd(str(tmp_path), str(config))
            runs.append(bus)
            while bus.process.poll() is None and (done_count(db) < total - 1 or read(db)["left"] or not read(db)["reports"]):
                assert time.monotonic() < deadline, bus.log()
                time.sleep(0.05)
            if bus.process.poll() is None:
                assert bus.terminate() == -signal.SIGTERM
                break
            assert bus.process.returncode == 17, bus.log()
            deaths += 1
            assert deaths <= limit, "delivered again past its delivery limit"
    finally:
        for run in runs:
            run.kill()
    found = read(db)
    made = {job: found["done"][job] for job in jobs}
    assert [n for n, job in enumerate(jobs) if made[job] != 1] == [poison]  # every other one exactly once
    assert deaths == limit
    [(code, app, body)] = found["dead"]
    assert (code, app) == ("delivery_limit", "first") and b'"n":150' in body
    [report] = found["reports"]
    assert (report.error_type, report.app_name, report.message["data"]) == ("scbus.Quarantined", "first", {"n": poison})
    assert (found["left"], found["claimed"]) == ({}, 0)
    RESULTS.append({
        "case": "sqlite poison message", "sent": total, "confirmed": total, "handled": total - 1,
        "lost": 0, "duplicated": 0, "deaths": deaths, "seconds": round(time.monotonic() - started, 1),
    })
