"""Repository-level rules: the import direction between packages, and CI = README."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: package -> packages of ours it must never import.
FORBIDDEN = {
    "features": {"training", "serving", "touchpoint", "mlflow", "fastapi", "lightgbm"},
    "serving": {"training", "touchpoint", "mlflow"},
    "training": {"touchpoint", "fastapi"},
}


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_import_direction_is_one_way() -> None:
    violations = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            bad = _imported_roots(path) & forbidden
            if bad:
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert violations == [], "\n".join(violations)


def test_only_training_imports_mlflow() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("features", "serving")
        for path in (ROOT / package).rglob("*.py")
        if "mlflow" in _imported_roots(path)
    ]
    assert offenders == []


def _readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, flags=re.S)
    assert len(blocks) >= 2, "README must open with two command blocks"
    return blocks[1].strip()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    command = _readme_test_command()
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command in ci_lines, f"{command!r} is not a line of .ci/run"
