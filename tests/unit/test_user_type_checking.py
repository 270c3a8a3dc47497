"""
What mypy makes of scbus in a user's project: a small project in a temporary directory,
checked with `mypy --strict` against scbus as it is installed (found through the
interpreter's site-packages, as a user's mypy finds it, never through this source tree).

Every line of the project marked `# E: text` must get an error containing that text
(several markers, several errors); every unmarked line must get none. So the same files
say what mypy must report and what it must accept.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

MESSAGES = '''
from __future__ import annotations

import dataclasses
from dataclasses import field

from scbus import Message


class Order(Message, wire_name="shop.Order"):
    sku: str
    qty: int = 1
    tags: list[str] = field(default_factory=list)
    note: str | None = None
    prices: dict[str, float] = field(default_factory=dict)


class PriorityOrder(Order, wire_name="shop.PriorityOrder"):
    rank: int = 0


class Shipped(Message, wire_name="shop.Shipped"):
    order: Order
    parcels: list[int] = dataclasses.field(default_factory=list)


class Unnamed(Message):
    n: int
'''

APP = '''
from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from scbus import AppErrorOccurredMessage, Message
from scbus.testing import BusHarness

from shop.messages import Order, PriorityOrder, Shipped


def on_order(order: Order) -> Shipped:
    return Shipped(order=order, parcels=[order.qty])


def on_priority(order: PriorityOrder) -> list[Message]:
    return [Shipped(order=order, correlation_id=order.id), Order(sku=order.sku, note=None)]


async def on_error(report: AppErrorOccurredMessage) -> None:
    print(report.app_name, report.error_type, report.attempts + 1)


def tick() -> Order | None:
    return None


def make_shop(
    name: str, root_config: Mapping[str, Any], config: Mapping[str, Any]
) -> dict[type[Message] | timedelta, Callable[..., object]]:
    return {Order: on_order, PriorityOrder: on_priority, AppErrorOccurredMessage: on_error, timedelta(seconds=5): tick}


def exercise() -> list[Shipped]:
    order = Order(sku="a")
    order.qty = 3
    order.note = "fragile"
    order.tags.append("gift")
    order.correlation_id = "c1"
    rank: int = PriorityOrder(sku="b", rank=2).rank
    first: Order = PriorityOrder(sku="c")
    created: float = order.created_at + rank + first.qty
    name: str = Order.wire_name
    print(created, name, order.to_dict()["data"], Order.from_dict(order.to_dict()).sku)
    harness = BusHarness()
    harness.add_app("shop", make_shop)
    harness.start()
    harness.send(order)
    return harness.sent_of(Shipped)
'''

MISTAKES = '''
from __future__ import annotations

from dataclasses import field

from scbus import Message

from shop.messages import Order, PriorityOrder, Shipped

Order(sku=1, qty="x")  # E: Argument "sku" to "Order" has incompatible type "int"; expected "str"  # E: Argument "qty" to "Order" has incompatible type "str"; expected "int"
Order(sku="a", qyt=2)  # E: Unexpected keyword argument "qyt" for "Order"
Order(qty=2)  # E: Missing named argument "sku" for "Order"
Order("a")  # E: Too many positional arguments for "Order"  # E: Missing named argument "sku" for "Order"
Order(sku="a", note=3)  # E: Argument "note" to "Order" has incompatible type "int"; expected "str | None"
Order(sku="a", tags=[1])  # E: List item 0 has incompatible type "int"; expected "str"
PriorityOrder(sku="a", rank="high")  # E: Argument "rank" to "PriorityOrder" has incompatible type "str"; expected "int"
Shipped(order="o1")  # E: Argument "order" to "Shipped" has incompatible type "str"; expected "Order"

order = Order(sku="a")
order.qty = "five"  # E: Incompatible types in assignment (expression has type "str", variable has type "int")
order.qyt = 5  # E: "Order" has no attribute "qyt"
order.wire_name = "other"  # E: Cannot assign to class variable "wire_name" via instance
order.id = None  # E: Incompatible types in assignment (expression has type "None", variable has type "str")
print(order.sku.upper(), order.qty.upper())  # E: "int" has no attribute "upper"


class WrongDefault(Message, wire_name="shop.WrongDefault"):
    qty: int = "one"  # E: Incompatible types in assignment (expression has type "str", variable has type "int")
    tags: list[str] = field(default_factory=dict)  # E: Argument "default_factory" to "field" has incompatible type


class Clash(Message, wire_name=3):  # E: Argument "wire_name" to "__init_subclass__" of "Message" has incompatible type "int"; expected "str | None"
    n: int


def on_order(order: Order) -> Shipped:
    return Order(sku=order.sku)  # E: Incompatible return value type (got "Order", expected "Shipped")
'''

MYPY_INI = """
[mypy]
strict = True
"""

MARKER = re.compile(r"#\s*E:\s*(.*?)\s*(?=#\s*E:|$)")


def write_project(root: Path) -> Path:
    project = root / "project"
    for relative, text in {
        "mypy.ini": MYPY_INI,
        "shop/__init__.py": "",
        "shop/messages.py": MESSAGES,
        "shop/app.py": APP,
        "shop/mistakes.py": MISTAKES,
    }.items():
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return project


def expected_errors(project: Path) -> dict[tuple[str, int], list[str]]:
    expected = {}
    for path in sorted((project / "shop").glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            texts = MARKER.findall(line)
            if texts:
                expected[(f"shop/{path.name}", number)] = texts
    return expected


def clean_env() -> dict[str, str]:
    """The environment without paths of its own: imports resolve as the interpreter sets them."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}


def run_mypy(project: Path, python: str) -> subprocess.CompletedProcess[str]:
    """mypy on the project, finding packages where C{python} finds them."""
    return subprocess.run(
        [
            sys.executable, "-m", "mypy", "--python-executable", python,
            "--cache-dir", str(project / ".mypy_cache"), "--no-error-summary",
            "--no-pretty", "--no-color-output", "--show-error-codes", "shop",
        ],
        cwd=project, env=clean_env(), capture_output=True, text=True, timeout=120,
    )


def reported_errors(result: subprocess.CompletedProcess[str]) -> dict[tuple[str, int], list[str]]:
    assert result.returncode in (0, 1), result.stdout + result.stderr
    errors: dict[tuple[str, int], list[str]] = {}
    for line in result.stdout.splitlines():
        match = re.match(r"(.+?):(\d+): error: (.*)", line)
        if match:
            errors.setdefault((match[1], int(match[2])), []).append(match[3])
        else:
            assert ": note: " in line, line
    return errors


def assert_mypy_agrees(project: Path, result: subprocess.CompletedProcess[str]) -> None:
    expected = expected_errors(project)
    errors = reported_errors(result)
    unexpected = {where: found for where, found in errors.items() if where not in expected}
    assert not unexpected, f"errors on lines that must be accepted: {unexpected}"
    for where, texts in expected.items():
        found = errors.get(where, [])
        missing = [text for text in texts if not any(text in error for error in found)]
        assert not missing, f"{where[0]}:{where[1]}: expected {missing}, mypy said {found}"
        assert len(found) == len(texts), f"{where[0]}:{where[1]}: mypy said {found}"


def test_mypy_in_a_user_project_checks_messages_and_accepts_correct_code(tmp_path):
    project = write_project(tmp_path)
    assert len(expected_errors(project)) >= 15
    # The interpreter running the tests: scbus installed in it (editable or not).
    assert_mypy_agrees(project, run_mypy(project, sys.executable))


# --- the wheel: it ships the marker, and the marker is what makes the above work ---------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the source tree (the tree itself is left unwritten)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO / "scbus", source / "scbus", ignore=shutil.ignore_patterns("__pycache__"))
    (source / "twisted" / "plugins").mkdir(parents=True)
    shutil.copy(REPO / "twisted" / "plugins" / "scbus_plugin.py", source / "twisted" / "plugins")
    shutil.copy(REPO / "setup.py", source)
    shutil.copy(REPO / "README.md", source)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(root / "dist"), str(source)],
        capture_output=True, text=True, timeout=180,
    )
    assert built.returncode == 0, built.stderr
    [path] = (root / "dist").glob("scbus-*.whl")
    return path


def test_the_wheel_ships_the_py_typed_marker(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "scbus/py.typed" in names
    assert "scbus/message.py" in names


def installed_from(wheel: Path, root: Path) -> tuple[str, Path]:
    """
    A virtual environment with the wheel unpacked into its site-packages (what installing
    a pure-Python wheel amounts to), scbus's dependencies reached through a .pth file.
    Its interpreter and scbus's directory there.
    """
    env_dir = root / "env"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout.strip()
    )
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    dependencies = [p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "twisted").is_dir()]
    assert dependencies, sys.path
    (site / "dependencies.pth").write_text(f"{dependencies[0]}\n")
    return str(python), site / "scbus"


def test_the_py_typed_marker_is_what_makes_mypy_read_scbus(wheel, tmp_path):
    project = write_project(tmp_path)
    python, package = installed_from(wheel, tmp_path)
    found = subprocess.run(
        [python, "-c", "import scbus; print(scbus.__file__)"],
        cwd=project, env=clean_env(), capture_output=True, text=True, timeout=60,
    )
    assert found.stdout.strip() == str(package / "__init__.py"), found.stderr

    assert_mypy_agrees(project, run_mypy(project, python))

    (package / "py.typed").unlink()
    shutil.rmtree(project / ".mypy_cache")
    errors = reported_errors(run_mypy(project, python))
    untyped = [e for found in errors.values() for e in found if "missing library stubs or py.typed marker" in e]
    assert untyped, errors
    # Without it scbus is Any: wire_name= is refused as object's, and no mistake made
    # with Order is caught.
    assert any('Unexpected keyword argument "wire_name"' in e for found in errors.values() for e in found)
    caught_with_marker = [where for where, texts in expected_errors(project).items() if '"Order"' in " ".join(texts)]
    assert len(caught_with_marker) >= 5
    assert not [errors[where] for where in caught_with_marker if where in errors]
