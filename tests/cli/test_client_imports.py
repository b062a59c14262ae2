"""Client commands load no daemon code: each real ``ltcai`` command under ``python -X importtime``.

The client is a thin thing that talks to the daemon over its socket, or (``inspect``)
computes with ``ltcai.core`` alone. Importing the daemon's modules or its web stack would
cost start-up time on every command and tie the client to the daemon's internals, so
each command runs in a subprocess with ``-X importtime`` and the modules it imported are
read off stderr. Commands that need no daemon run against an empty data dir; the others
against the session's real ``ltcai serve`` with the FAKE engine plugin (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

FORBIDDEN = ("ltcai.daemon", "starlette", "uvicorn", "aiohttp")
# Heavy libraries no client command needs: huggingface_hub (~150 ms) is the daemon's for
# downloads, and the gguf package (numpy, PyYAML, sentencepiece: ~600 ms) is bypassed by
# ltcai.engines.gguf_constants when ``inspect`` reads a GGUF header.
HEAVY = ("huggingface_hub", "numpy", "gguf")


def imported_modules(importtime_stderr: str) -> set[str]:
    """Every module a ``-X importtime`` run imported (one ``import time:`` line each)."""
    modules = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":  # the header line
                modules.add(name)
    return modules


def forbidden_in(modules: set[str], forbidden: tuple[str, ...] = FORBIDDEN) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden))


def run_traced(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ltcai", *args],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, imported_modules(result.stderr)


def assert_clean(env: dict[str, str], *args: str, exit_code: int = 0) -> subprocess.CompletedProcess[str]:
    result, modules = run_traced(env, *args)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == exit_code, (args, result.stdout[-2000:], result.stderr[-2000:])
    assert "ltcai.cli" in modules, f"`ltcai {' '.join(args)}` did not run the CLI"
    assert forbidden_in(modules) == [], f"`ltcai {' '.join(args)}` imported {forbidden_in(modules)}"
    assert forbidden_in(modules, HEAVY) == [], f"`ltcai {' '.join(args)}` imported {forbidden_in(modules, HEAVY)}"
    return result


def test_the_scan_sees_the_daemon_when_a_process_imports_it() -> None:
    """The check itself works: a process that imports the control API or gguf is caught."""
    code = "import ltcai.daemon.api, gguf, huggingface_hub"
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    assert {"ltcai.daemon.api", "starlette"} <= set(forbidden_in(modules))
    assert {"gguf", "numpy", "huggingface_hub"} <= set(forbidden_in(modules, HEAVY))


@pytest.fixture
def no_daemon(daemon_root: Path) -> dict[str, str]:
    """An isolated data dir with no daemon on its socket; the fake engine plugin still loads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LTCAI_", "NOTIFY_SOCKET"))}
    fakes = str(Path(__file__).resolve().parents[1] / "fakes")
    return {
        **env,
        "LTCAI_DATA_DIR": str(daemon_root / "d"),
        "LTCAI_CONFIG_DIR": str(daemon_root / "c"),
        "LTCAI_SOCKET": str(daemon_root / "s.sock"),
        "LTCAI_PLUGINS": "ltcai_fake_engine",
        "PYTHONPATH": os.pathsep.join(filter(None, [fakes, env.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1",
    }


@pytest.mark.parametrize(
    ("args", "exit_code"),
    [
        (("--help",), 0),
        (("--version",), 0),
        (("token",), 0),
        (("inspect", "smollm2"), 0),
        (("inspect", "smollm2", "--json"), 0),
        (("inspect", "some-org/some-model", "--engine", "vllm"), 0),
        (("status",), 1),  # "the daemon is not running": the error path is client code too
        (("ps",), 1),
        (("chat", "smollm2", "hi"), 1),
        (("logs",), 1),  # no daemon log yet
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else None,
)
def test_commands_without_a_daemon_import_no_daemon_code(no_daemon: dict[str, str], args: tuple[str, ...], exit_code: int) -> None:
    result = assert_clean(no_daemon, *args, exit_code=exit_code)
    if exit_code:
        assert "error:" in result.stderr


def test_logs_reads_the_daemon_log_without_the_daemons_modules(no_daemon: dict[str, str]) -> None:
    log = Path(no_daemon["LTCAI_DATA_DIR"]) / "logs" / "daemon.log"
    log.parent.mkdir(parents=True)
    log.write_text('{"event": "daemon ready"}\n')
    result = assert_clean(no_daemon, "logs", "-n", "5")
    assert result.stdout == '{"event": "daemon ready"}\n'


def test_inspect_shows_the_profile_from_the_bundled_files_metadata(no_daemon: dict[str, str]) -> None:
    data = json.loads(assert_clean(no_daemon, "inspect", "smollm2", "--json").stdout)
    assert data["file"] and data["file"].endswith(".gguf")
    layers = {row["field"]: row["layer"] for row in data["explain"]}
    assert layers["chat_template"] == "model"  # read from the GGUF header, without the daemon


def test_commands_against_a_daemon_import_no_daemon_code(daemon: Any, tag: str) -> None:
    """Every command that talks to the daemon, on the session's real ``ltcai serve``."""
    env = daemon.env
    model = f"fake-imports-{tag}"
    assert_clean(env, "status")
    assert_clean(env, "engines")
    assert_clean(env, "prepare", model, "--engine", "fake")
    jobs = json.loads(assert_clean(env, "jobs", "--json").stdout)
    job_id = next(j["job_id"] for j in jobs if j["model"] == model)
    assert_clean(env, "jobs", job_id)
    assert_clean(env, "ps")
    assert_clean(env, "pin", model, "--engine", "fake")
    assert_clean(env, "unpin", model, "--engine", "fake")
    profiles = json.loads(assert_clean(env, "profiles", "--json").stdout)
    key = next(p["key"] for p in profiles if p["model_id"] == model)
    assert_clean(env, "profiles", key)
    answer = assert_clean(env, "chat", model, "what is 2+2?", "--engine", "fake", "--no-stream")
    assert "2 + 2 = 4." in answer.stdout
    assert_clean(env, "chat", model, "what is 2+2?", "--engine", "fake")  # streamed
    assert_clean(env, "logs", "--engine", "fake")
    assert_clean(env, "unload", model, "--engine", "fake")
    daemon.remember_engines()


def test_stop_imports_no_daemon_code(start_daemon: Any) -> None:
    """``ltcai stop`` on a private daemon (the session's one must keep running)."""
    daemon = start_daemon()
    assert_clean(daemon.env, "stop")
    assert daemon.process.wait(timeout=30) == 0
