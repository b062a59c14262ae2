"""The README and ``docs/*.md`` point only at files inside the repository, and those exist.

Links (``[text](target)``, relative to the document) and backticked file paths
(``docs/x.md``, relative to the repository root) are both checked; URLs are not paths,
nor are paths in a user's directories (``~/…``, ``$LTCAI_DATA_DIR/…``, ``<config>/…``).
The README once sent readers to ``../shared/DESIGN.md``, and linked
``docs/architecture.md`` before it existed. The prepare state table in
``docs/architecture.md`` is checked against the machine's own table.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ltcai.daemon.prepare_states import READINESS, TRANSITIONS, PrepareState

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_BACKTICKED_FILE = re.compile(r"`([^`\s]+\.(?:md|toml|py))`")
_USER_PATH = ("~", "$", "<")  # a file in the user's directories, not the repository's


def _local(targets: list[str]) -> list[str]:
    return [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+://", t) and not t.startswith("#")]


def referenced_paths(text: str) -> list[str]:
    """Every link and backticked file path in ``text``, URLs and anchors left out."""
    return _local(_LINK.findall(text) + _BACKTICKED_FILE.findall(text))


def referenced_files(document: Path, text: str | None = None) -> list[Path]:
    """What ``document`` (whose text is ``text``, read if None) points at: links resolved
    from its folder, backticked paths from the repository root, user paths left out."""
    text = document.read_text() if text is None else text
    links = [document.parent / p for p in _local(_LINK.findall(text))]
    mentioned = [REPO / p for p in _local(_BACKTICKED_FILE.findall(text)) if not p.startswith(_USER_PATH)]
    return links + mentioned


def test_the_readme_refers_only_to_files_inside_the_repository() -> None:
    paths = referenced_paths((REPO / "README.md").read_text())
    outside = [p for p in paths if Path(p).is_absolute() or not (REPO / p).resolve().is_relative_to(REPO)]
    assert outside == []
    assert "docs/reliability.md" in paths and "docs/architecture.md" in paths


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_file_a_document_points_at_is_in_the_repository_and_exists(document: Path) -> None:
    files = referenced_files(document)
    assert files, f"{document.name} points at no file: the check would prove nothing"
    outside = [str(f) for f in files if not f.resolve().is_relative_to(REPO)]
    missing = [str(f.relative_to(REPO)) for f in files if f.resolve().is_relative_to(REPO) and not f.exists()]
    assert outside == [] and missing == []


def test_the_check_sees_a_path_outside() -> None:
    paths = referenced_paths("The design is in `../shared/DESIGN.md`, see [it](../shared/SPEC.md).")
    assert paths == ["../shared/SPEC.md", "../shared/DESIGN.md"]
    assert all(not (REPO / p).resolve().is_relative_to(REPO) for p in paths)


def test_the_check_sees_a_missing_file_and_resolves_links_from_the_document() -> None:
    docs = REPO / "docs"
    text = "[up](../README.md) [gone](gone.md) `ltcai/gone.py` `~/.config/ltcai/config.toml` `<config>/config.toml`"
    found = referenced_files(docs / "made-up.md", text)
    assert found == [REPO / "docs" / "../README.md", docs / "gone.md", REPO / "ltcai/gone.py"]
    assert [f.exists() for f in found] == [True, False, False]


def test_the_architecture_docs_state_table_is_the_machines() -> None:
    """Each row: the state, its allowed next states and its readiness, as the code has them."""
    text = (REPO / "docs" / "architecture.md").read_text()
    table = text.split("<!-- state-table", 1)[1].split("<!-- /state-table -->", 1)[0]
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| `")]
    documented = {
        PrepareState(re.findall(r"`([a-z_]+)`", state)[0]): (
            {PrepareState(name) for name in re.findall(r"`([a-z_]+)`", may_go_to)},
            re.findall(r"`([a-z_]+)`", readiness)[:1],
        )
        for state, _meaning, _step, may_go_to, readiness in rows
    }
    actual = {
        state: (set(TRANSITIONS[state]), [READINESS[state].value] if state in READINESS else [])
        for state in PrepareState
    }
    assert documented == actual
