"""pytest.ini silences only warnings that something in the project can raise."""

import ast
import configparser
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def imported_modules() -> set[str]:
    found = set()
    for top in ("scbus", "tests", "apps", "bench"):
        for folder, _dirs, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith(".py"):
                    with open(os.path.join(folder, name), encoding="utf-8") as f:
                        tree = ast.parse(f.read())
                    for node in ast.walk(tree):
                        if isinstance(node, ast.Import):
                            found |= {alias.name for alias in node.names}
                        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                            found.add(node.module)
    return found


def test_every_module_filtered_is_one_the_project_imports():
    ini = configparser.ConfigParser()
    ini.read(os.path.join(ROOT, "pytest.ini"))
    filters = [line.strip() for line in ini["pytest"].get("filterwarnings", "").splitlines() if line.strip()]
    modules = [f.split(":")[3] for f in filters if len(f.split(":")) > 3 and f.split(":")[3]]
    imported = imported_modules()
    assert [m for m in modules if not any(i == m or i.startswith(m + ".") for i in imported)] == []
