"""Every third-party package the code imports is declared in pyproject.toml (dependencies or an extra)."""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_levels(folder: Path) -> set[str]:
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", "refusal_sae"}


def test_every_imported_package_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    declared = {_normal(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in requirements}
    dists = packages_distributions()
    missing = {m: dists.get(m) for m in _imported_top_levels(ROOT / "src")
               if not {_normal(d) for d in dists.get(m, [m])} & declared}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
