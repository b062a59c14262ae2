"""``ltcai engines install llamacpp`` and a prepare's ENGINE_INSTALL building llama-server,
through a real daemon and the real CLI, on a FAKE llama.cpp source tree
(``tests/fakes/llama_cpp_source``: a real cmake build of a binary that only answers
``--version`` like llama-server), so the build takes seconds, not ten minutes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest


FAKE_SOURCE = Path(__file__).resolve().parents[1] / "fakes" / "llama_cpp_source"


@pytest.fixture
def build_daemon(start_daemon: Any, tmp_path: Path) -> Any:
    source = tmp_path / "llama.cpp"
    shutil.copytree(FAKE_SOURCE, source)
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if d and not (Path(d) / "llama-server").exists())
    config = f'[engines.llamacpp]\nserver = "llama-server"\nbuild_backend = "cpu"\nsource_dir = "{source}"\n'
    return start_daemon({"PATH": path}, config)


def test_engines_install_builds_once_then_says_it_is_there(build_daemon: Any) -> None:
    first = build_daemon.cli("engines", "install", "llamacpp", timeout=180)
    assert first.returncode == 0, first.stderr
    assert "installed" in first.stdout and "0.6.0-fake (fa4e123)" in first.stdout
    assert "ltcai build" in first.stdout  # where it came from
    again = build_daemon.cli("engines", "install", "llamacpp", "--json")
    assert again.returncode == 0, again.stderr
    last = json.loads(again.stdout.splitlines()[-1])
    assert last["type"] == "installed" and last["already"] is True
    assert last["check"]["details"]["origin"] == "ltcai build"
    listed = {e["name"]: e for e in json.loads(build_daemon.cli("engines", "--json").stdout)}
    assert listed["llamacpp"]["available"] and listed["llamacpp"]["version"] == "0.6.0-fake (fa4e123)"


def test_engines_install_of_an_unknown_engine_is_a_clear_error(build_daemon: Any) -> None:
    result = build_daemon.cli("engines", "install", "nosuch")
    assert result.returncode != 0
    assert "nosuch" in result.stderr and "registered engines" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    missing_name = build_daemon.cli("engines", "install")
    assert missing_name.returncode != 0 and "name the engine" in missing_name.stderr


def test_prepare_builds_llama_server_with_step_progress_then_reports_the_servers_own_words(build_daemon: Any) -> None:
    """The first prepare builds llama-server in ENGINE_INSTALL (progress in steps); the
    FAKE binary cannot serve, so SERVER_STARTING fails quoting its last output."""
    events = build_daemon.prepare("smollm2", engine="llamacpp")
    states = [e["state"] for e in events if e["type"] == "state"]
    assert states[:5] == ["resolving", "engine_check", "engine_install", "downloading", "server_starting"], states
    steps = [e["progress"] for e in events if e["type"] == "progress" and (e.get("progress") or {}).get("unit") == "steps"]
    assert steps and steps[-1]["done"] == steps[-1]["total"]
    report = events[-1]["report"]
    assert report["status"] == "failed" and report["install_result"]["installed"] is True
    assert report["error"]["state"] == "server_starting"
    assert "FAKE llama-server" in (report["error"]["hint"] or "")
