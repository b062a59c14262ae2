"""``ltcai engines`` on a host with only llama.cpp, through a real daemon and the real CLI.

The daemon runs every built-in engine's check for real: no Ollama server (OLLAMA_HOST at a
closed port) and no binary, no LM Studio, no API keys; llama.cpp is this environment's.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from ltcai.engines.lmstudio import INSTALL_HINT as LMSTUDIO_HINT
from ltcai.engines.ollama import INSTALL_HINT as OLLAMA_HINT
from ltcai.plugins import DEFAULT_PLUGINS

KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENROUTER_API_KEY", "GROQ_API_KEY", "TOGETHER_API_KEY", "OPENAI_BASE_URL")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def bare_host(tmp_path: Path) -> dict[str, str]:
    """The environment of a host with nothing but ltcai (and its llama.cpp) installed."""
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {
        "PATH": str(empty),
        "HOME": str(tmp_path / "home"),
        "OLLAMA_HOST": f"127.0.0.1:{_closed_port()}",
        "LMSTUDIO_HOST": f"127.0.0.1:{_closed_port()}",
        "COLUMNS": "200",
    }
    env.update({name: "" for name in KEY_VARIABLES})
    return env


def test_engines_shows_each_engine_its_status_version_why_not_and_how_to_install(start_daemon: Any, bare_host: dict[str, str]) -> None:
    daemon = start_daemon(bare_host)
    listed = daemon.cli("engines", "--json")
    shown = daemon.cli("engines")
    assert listed.returncode == 0 and shown.returncode == 0, shown.stderr
    engines = {e["name"]: e for e in json.loads(listed.stdout)}
    assert {"llamacpp", "ollama", "vllm", "lmstudio", "openai", "anthropic", "openrouter", "groq", "together", "fake"} <= set(engines)
    assert engines["llamacpp"]["available"] is True and engines["llamacpp"]["version"]
    assert engines["ollama"]["available"] is False and engines["ollama"]["install_hint"] == OLLAMA_HINT
    assert engines["lmstudio"]["available"] is False and engines["lmstudio"]["install_hint"] == LMSTUDIO_HINT
    assert engines["openai"]["reason"] == "no API key for openai: OPENAI_API_KEY is not set"
    assert {e["kind"] for e in engines.values() if e["name"] in ("openai", "groq")} == {"remote"}
    assert engines["ollama"]["kind"] == engines["llamacpp"]["kind"] == "local"

    lines = shown.stdout.splitlines()
    rows = {line.split()[0]: line for line in lines if line and not line.startswith(" ") and len(line.split()) > 2}
    assert rows["ENGINE"].split()[:4] == ["ENGINE", "KIND", "STATUS", "VERSION"]
    assert rows["llamacpp"].split()[1:4] == ["local", "available", engines["llamacpp"]["version"]]
    assert rows["ollama"].split()[1:4] == ["local", "not", "available"]
    assert f"no Ollama server answers at http://{bare_host['OLLAMA_HOST']} (OLLAMA_HOST)" in rows["ollama"]
    assert "no API key for groq: GROQ_API_KEY is not set" in rows["groq"]
    # Local engines come before remote providers.
    names = [line.split()[0] for line in lines[1 : lines.index("")]]
    assert names.index("vllm") < names.index("anthropic")
    available = sorted(name for name, e in engines.items() if e["available"])
    assert f"{len(available)} of {len(engines)} engines available: " in shown.stdout
    how = lines[lines.index("To make one available:") + 1 :]
    assert any(line.split()[0] == "ollama" and OLLAMA_HINT in line for line in how)
    assert any(line.split()[0] == "lmstudio" and LMSTUDIO_HINT in line for line in how)
    assert not any(line.split()[0] == "llamacpp" for line in how if line.strip())


def test_disabled_engines_are_not_listed(start_daemon: Any, bare_host: dict[str, str]) -> None:
    daemon = start_daemon({**bare_host, "LTCAI_DISABLE_PLUGINS": "ollama,openai_remote"})
    names = {e["name"] for e in daemon.client.get("/engines").json()["engines"]}
    status = daemon.client.get("/status").json()
    mlx = {"mlx"} if "ltcai.engines.mlx" in DEFAULT_PLUGINS else set()
    assert names == set(status["engines"]) == {"llamacpp", "vllm", "lmstudio", "fake"} | mlx
