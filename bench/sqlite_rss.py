"""
Memory of a bus on the SQLite transport with a large backlog: the file holds the
messages, the process only what it has claimed. Not a test: prints figures.

    python -m bench.sqlite_rss [--messages 1000000]

Queues N Jobs in a fresh file (through the transport's own store), starts a real
`twistd -n scbus` on the two-app chain of tests/sqlite_chain.py (first answers each Job
with a Step, second each Step with a Done, collector keeps the Dones), and samples the
process's resident memory while it works through the backlog: at start, and as the
Jobs left fall. Also prints the file's size along the way and after it drained.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.sqlite_chain import config_text, prepare  # noqa: E402


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def jobs_left(path: str) -> int:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        row = connection.execute("SELECT ready FROM queues WHERE name = 'first'").fetchone()
        return int(row[0]) if row else 0
    finally:
        connection.close()


def size_mib(path: str) -> float:
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p)) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="scbus-rss-")
    db = os.path.join(work, "chain.db")
    started = time.monotonic()
    prepare(db, args.messages)
    print(f"queued {args.messages} Jobs in {time.monotonic() - started:.1f}s; file {size_mib(db):.0f} MiB")
    config = os.path.join(work, "scbus.toml")
    with open(config, "w") as f:
        f.write(config_text(db, first_in_flight=200, second_in_flight=200))
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    log = open(os.path.join(work, "twistd.log"), "wb")
    process = subprocess.Popen(
        [twistd, "-n", "--pidfile=", "--logfile=-", "scbus", f"--config={config}"],
        cwd=work, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": ROOT},
    )
    samples = []
    try:
        began = time.monotonic()
        next_mark = 1.0
        while process.poll() is None:
            left = jobs_left(db)
            if time.monotonic() - began >= next_mark or left == 0:
                samples.append((time.monotonic() - began, left, rss_mib(process.pid), size_mib(db)))
                print(f"  {samples[-1][0]:6.1f}s  Jobs left {left:8d}  RSS {samples[-1][2]:6.1f} MiB  file+WAL {samples[-1][3]:6.0f} MiB")
                next_mark *= 1.5
            if left == 0:
                break
            time.sleep(0.2)
        took = time.monotonic() - began
        print(f"drained {args.messages} Jobs through the chain in {took:.0f}s ({2 * args.messages / took:.0f} handlings/s)")
        rss = [s[2] for s in samples]
        print(f"RSS: first {rss[0]:.1f} MiB, highest {max(rss):.1f} MiB, last {rss[-1]:.1f} MiB")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        log.close()
    print(f"after a clean stop: file+WAL {size_mib(db):.0f} MiB (the collector keeps {args.messages} Dones)")


if __name__ == "__main__":
    main()
