"""
A real `twistd -n scbus` on an SQLite file: killed with messages queued and in hand, and
started again, it loses nothing and makes no output twice; a file it cannot use stops
it with one line and exit status 2.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from ..sqlite_chain import config_text, done_count, prepare, read
from .conftest import ROOT, twistd_command


def wait_until(predicate, bus, timeout=60.0, what="it"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert bus.process.poll() is None, bus.log()
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s:\n{bus.log()}"
        time.sleep(0.05)


def test_killed_with_messages_queued_it_loses_nothing_and_repeats_nothing(tmp_path, run_twistd):
    total = 3000
    db = tmp_path / "chain.db"
    jobs = prepare(db, total)
    config = tmp_path / "scbus.toml"
    config.write_text(config_text(db))
    bus = run_twistd(str(tmp_path), str(config))
    wait_until(lambda: done_count(db) >= 300, bus, what="300 outputs")
    os.kill(bus.process.pid, signal.SIGKILL)
    bus.process.wait(10)
    halfway = read(db)
    assert sum(halfway["left"].values()) > 0, "the chain finished before the kill: make it longer"
    again = run_twistd(str(tmp_path), str(config))
    wait_until(lambda: done_count(db) >= total, again, what="every output")
    wait_until(lambda: not read(db)["left"], again, what="the queues to drain")
    assert again.terminate() == -signal.SIGTERM
    found = read(db)
    assert {job: found["done"][job] for job in jobs} == {job: 1 for job in jobs}  # each output once, none lost
    assert set(found["done"]) == set(jobs)
    assert (found["left"], found["claimed"], found["set_aside"]) == ({}, 0, {})
    log = again.log()
    assert "took back" in log and "Traceback" not in log, log


def run_refused(tmp_path, config):
    out = subprocess.run(
        [*twistd_command(), "-n", "--pidfile=", "--logfile=-", "scbus", f"--config={config}"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
    )
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    problem = [line for line in text.splitlines() if "transport.path" in line]
    assert len(problem) == 1, text
    assert "Traceback" not in text, text
    return problem[0]


def test_a_file_that_is_not_a_database_is_one_line_and_exit_2(tmp_path):
    db = tmp_path / "chain.db"
    db.write_bytes(b"not a database" * 500)
    config = tmp_path / "scbus.toml"
    config.write_text(config_text(db))
    line = run_refused(tmp_path, config)
    assert line.endswith(
        f"scbus: transport.path: {db} is not an SQLite database (file is not a database): point "
        "transport.path at another file, or move this one away"
    ), line


def test_a_second_bus_on_the_same_file_is_one_line_and_exit_2(tmp_path, run_twistd):
    db = tmp_path / "chain.db"
    prepare(db, 10)
    config = tmp_path / "scbus.toml"
    config.write_text(config_text(db))
    first = run_twistd(str(tmp_path), str(config))
    wait_until(lambda: "collector: subscribed" in first.log(), first, what="the first bus to start")
    line = run_refused(tmp_path, config)
    assert line.endswith(
        f"scbus: transport.path: another bus process uses {db} (pid {first.process.pid}): stop it, or give "
        "this bus another transport.path"
    ), line
    assert first.process.poll() is None


def test_a_full_disk_loses_nothing_and_says_so_until_there_is_room(tmp_path, run_twistd):
    import json
    import urllib.error
    import urllib.request

    import pytest

    from .conftest import free_port

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        total = 3000
        db = disk / "chain.db"
        jobs = prepare(db, total)
        filler = disk / "filler"
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler.write_bytes(b"\0" * max(0, free - 300 * 1024))  # room for some commits only
        port = free_port()
        config = tmp_path / "scbus.toml"
        config.write_text(config_text(db) + f"\n[http]\nport = {port}\n")
        bus = run_twistd(str(tmp_path), str(config))

        def ready():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as answer:
                    return answer.status, json.load(answer)
            except urllib.error.HTTPError as e:
                return e.code, json.load(e)
            except OSError:
                return None, None

        refused: list[dict] = []

        def not_ready() -> bool:
            code, body = ready()
            if code == 503:
                refused.append(body)
            return code == 503

        wait_until(not_ready, bus, what="/ready to say the transport cannot write")
        assert [line for line in refused[0]["not_ready"] if line.startswith("transport: ")], refused[0]
        stuck = done_count(db)
        assert 0 < stuck < total  # it worked, then the disk was full
        filler.unlink()  # room again
        wait_until(lambda: done_count(db) >= total and not read(db)["left"], bus, what="every output")
        wait_until(lambda: ready()[0] == 200, bus, what="/ready again")
        assert bus.terminate() == -signal.SIGTERM
        found = read(db)
        assert {job: found["done"][job] for job in jobs} == {job: 1 for job in jobs}
        assert (found["left"], found["claimed"], found["set_aside"]) == ({}, 0, {})
        log = bus.log()
        assert log.count("cannot write (database or disk is full)") == 1, log
        assert "writable again" in log and "Traceback" not in log, log
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
