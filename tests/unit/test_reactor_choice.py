"""
bus.reactor: checked like every key; "asyncio" installs Twisted's asyncio reactor when
twistd has not installed one yet, and is one line naming --reactor=asyncio when it has
installed another.
"""

import os
import subprocess
import sys

import pytest

# This process runs on the default reactor, installed here if nothing did before.
from twisted.internet import reactor

from scbus.config import parse_config
from scbus.errors import ConfigError
from scbus.tap import Options, install_reactor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP = {"apps": {"clock": {"builder": "apps.clock:make_clock"}}}


def test_the_key_defaults_to_whichever_reactor_twistd_runs():
    assert parse_config(APP).bus.reactor == "default"


def test_an_unknown_reactor_is_one_line():
    with pytest.raises(ConfigError) as e:
        parse_config({**APP, "bus": {"reactor": "trio"}}, "bus.toml")
    assert str(e.value) == "bus.toml: bus.reactor: must be one of 'default', 'asyncio', got str 'trio'"


def test_default_leaves_the_installed_reactor_alone():
    install_reactor(parse_config(APP))
    from twisted.internet import reactor as now

    assert now is reactor


def test_asyncio_after_another_reactor_was_installed_is_one_line_naming_the_option():
    config = parse_config({**APP, "bus": {"reactor": "asyncio"}}, "bus.toml")
    with pytest.raises(ConfigError) as e:
        install_reactor(config)
    line = str(e.value)
    assert line.startswith('bus.toml: bus.reactor: "asyncio" cannot be honoured: the reactor is already twisted.internet.')
    assert "run twistd --reactor=asyncio -n scbus" in line and "\n" not in line


def test_twistd_options_stop_with_that_line_and_exit_status_2(tmp_path, capsys):
    path = tmp_path / "bus.toml"
    path.write_text('[bus]\nreactor = "asyncio"\n[apps.clock]\nbuilder = "apps.clock:make_clock"\n')
    with pytest.raises(SystemExit) as e:
        Options().parseOptions([f"--config={path}"])
    assert e.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"scbus: {path}: bus.reactor: ") and "--reactor=asyncio" in line


def test_asyncio_is_installed_before_the_builders_are_imported(tmp_path):
    """In a fresh process, as under twistd: the builder's module imports the reactor."""
    (tmp_path / "importer.py").write_text(
        "from twisted.internet import reactor\n"
        "def make(name, root, config):\n"
        "    async def tick():\n"
        "        return None\n"
        "    import datetime\n"
        "    return {datetime.timedelta(seconds=1): tick}\n"
    )
    path = tmp_path / "bus.toml"
    path.write_text('[bus]\nreactor = "asyncio"\n[apps.x]\nbuilder = "importer:make"\n')
    script = (
        "import sys\n"
        "from scbus.tap import Options\n"
        f"Options().parseOptions(['--config={path}'])\n"
        "from twisted.internet import reactor\n"
        "print(type(reactor).__name__, type(sys.modules['importer'].reactor).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["AsyncioSelectorReactor", "AsyncioSelectorReactor"]
