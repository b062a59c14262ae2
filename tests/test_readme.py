"""The README points only inside the repository: a clone has nothing outside it.

Links (``[text](target)``) and backticked file paths (``docs/x.md``) are both checked;
URLs are not paths. It once sent readers to ``../shared/DESIGN.md``.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_BACKTICKED_FILE = re.compile(r"`([^`\s]+\.(?:md|toml|py))`")


def referenced_paths(text: str) -> list[str]:
    targets = _LINK.findall(text) + _BACKTICKED_FILE.findall(text)
    return [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+://", t) and not t.startswith("#")]


def test_the_readme_refers_only_to_files_inside_the_repository() -> None:
    paths = referenced_paths((REPO / "README.md").read_text())
    outside = [p for p in paths if Path(p).is_absolute() or not (REPO / p).resolve().is_relative_to(REPO)]
    assert outside == []
    assert "docs/reliability.md" in paths and "docs/architecture.md" in paths


def test_the_check_sees_a_path_outside() -> None:
    paths = referenced_paths("The design is in `../shared/DESIGN.md`, see [it](../shared/SPEC.md).")
    assert paths == ["../shared/SPEC.md", "../shared/DESIGN.md"]
    assert all(not (REPO / p).resolve().is_relative_to(REPO) for p in paths)
