"""docs/reliability.md names only tests that exist, and every fault test is in it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reliability.md"


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test_")}


def test_every_test_the_reliability_table_names_exists():
    cited = re.findall(r"`(tests/[\w/]+\.py)::(\w+)(?:\[[^\]]*\])?`", DOC.read_text())
    assert len(cited) > 30
    missing = [f"{file}::{name}" for file, name in cited if not (REPO / file).is_file() or name not in _tests_in(REPO / file)]
    assert missing == [], missing


def test_every_fault_test_is_in_the_reliability_table():
    cited = {f"{file}::{name}" for file, name in re.findall(r"`(tests/[\w/]+\.py)::(\w+)", DOC.read_text())}
    here = Path(__file__).resolve().parent
    fault_tests = {
        f"tests/faults/{path.name}::{name}"
        for path in here.glob("test_*.py") if path.name != Path(__file__).name
        for name in _tests_in(path)
    }
    assert fault_tests - cited == set()
