"""
Wall time of `scbus status` and `scbus ping` against a live bus, interpreter start-up
included, as an operator or a health check runs them.

    python -m bench.cli_latency [--runs 10]

Starts its own RabbitMQ node and one `twistd -n scbus` process with two apps, then runs
each command --runs times in a fresh interpreter and prints the median and the slowest
wall time, and the median CPU time of the command's process, beside `python -c pass` and
`scbus --version` (start-up alone). On a busy machine wall time includes waiting for a
core; the load average is printed first. The commands
return as soon as every expected process answered, so the figures should not depend on
--timeout (given as 10 s here).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.broker.test_processes import wait_in_log  # noqa: E402
from tests.e2e.conftest import Twistd  # noqa: E402
from tests.rabbit import RabbitNode, available  # noqa: E402

CONFIG = """
[bus]
name = "latency"

[transport]
type = "amqp"
url = "{url}"

[apps.clock]
builder = "apps.clock:make_clock"

[apps.squares]
builder = "apps.squares:make_squares"
"""

BIN = os.path.dirname(sys.executable)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wall(command: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each run (CPU: on a busy machine wall time waits for a core)."""
    times, cpu = [], []
    for _ in range(runs):
        cpu_before = children_cpu()
        started = time.perf_counter()
        out = subprocess.run(command, capture_output=True, text=True, timeout=120)
        times.append(time.perf_counter() - started)
        cpu.append(children_cpu() - cpu_before)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(command)} exited {out.returncode}: {out.stdout}{out.stderr}")
    return times, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    reason = available()
    if reason:
        raise SystemExit(f"cannot start a RabbitMQ node: {reason}")
    node = RabbitNode(name="scbus-cli-latency")  # its own name: other benchmarks may run beside it
    node.start()
    work = tempfile.mkdtemp(prefix="scbus-cli-latency-")
    config = os.path.join(work, "scbus.toml")
    with open(config, "w") as f:
        f.write(CONFIG.format(url=node.url))
    bus = Twistd(work, config)
    try:
        wait_in_log(bus, "squares: consuming", 90)
        scbus = os.path.join(BIN, "scbus")
        cases = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("scbus --version", [scbus, "--version"]),
            ("scbus status", [scbus, "status", "--config", config, "--timeout", "10"]),
            ("scbus status --json", [scbus, "status", "--config", config, "--json", "--timeout", "10"]),
            ("scbus ping", [scbus, "ping", "--config", config, "--timeout", "10"]),
            ("scbus ping --app squares", [scbus, "ping", "--config", config, "--app", "squares", "--timeout", "10"]),
        ]
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.runs} runs each, --timeout 10")
        print(f"{'command':<28} {'median s':>9} {'slowest s':>10} {'median CPU s':>13}")
        for name, command in cases:
            times, cpu = wall(command, args.runs)
            print(f"{name:<28} {statistics.median(times):>9.3f} {max(times):>10.3f} {statistics.median(cpu):>13.3f}")
    finally:
        bus.terminate()
        bus.kill()
        node.cleanup()


if __name__ == "__main__":
    main()
