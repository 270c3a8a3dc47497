"""bus.log_level and bus.log_levels filter the twistd log: Twisted events too."""

from __future__ import annotations

import re
import signal
import time

CONFIG = """
[bus]
log_level = "{level}"
{levels}

[apps.clock]
builder = "apps.clock:make_clock"
config = {{ every = 0.2 }}

[apps.squares]
builder = "apps.squares:make_squares"
"""


def run_until(bus, text, timeout=60):
    deadline = time.monotonic() + timeout
    while text not in bus.log():
        assert time.monotonic() < deadline and bus.process.poll() is None, bus.log()
        time.sleep(0.1)


def levels_in(log: str) -> set[tuple[str, str]]:
    return set(re.findall(r"\[([\w.]+)#(\w+)\]", log))


def test_twisted_events_below_the_bus_level_are_not_logged(tmp_path, run_twistd):
    config = tmp_path / "scbus.toml"
    config.write_text(CONFIG.format(level="warn", levels=""))
    bus = run_twistd(str(tmp_path), str(config))
    run_until(bus, "unrouted: no app subscribes to squares.Squared")
    assert bus.terminate() == -signal.SIGTERM
    seen = levels_in(bus.log())
    assert seen and {level for _ns, level in seen} == {"warn"}, seen


def test_a_namespace_can_have_its_own_level(tmp_path, run_twistd):
    config = tmp_path / "scbus.toml"
    config.write_text(CONFIG.format(level="error", levels='log_levels = { "scbus.mainbus" = "info" }'))
    bus = run_twistd(str(tmp_path), str(config))
    run_until(bus, "squares: subscribed to clock.Tick")
    time.sleep(1.0)  # ticks are unrouted (warn) from now on: none may show
    assert bus.terminate() == -signal.SIGTERM
    assert levels_in(bus.log()) == {("scbus.mainbus", "info")}
