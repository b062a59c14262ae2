"""Ollama's clients and the README's client examples against a real daemon and the real SmolLM2.

The official ``ollama`` Python client over loopback TCP with the bearer token, ``curl``
over the Unix socket, and the README's "Clients" section run as written (its port swapped
for a free one). The token-free opt-in is tested in tests/daemon/test_ollama_api.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import ollama
import pytest

from ltcai.compat import BAD_MARKERS

from .conftest import REPO, RunningDaemon, TcpDaemon

pytestmark = pytest.mark.e2e


def test_the_ollama_client_chats_streams_and_lists_with_the_real_engine(tcp_daemon: TcpDaemon) -> None:
    port = tcp_daemon.port
    token = tcp_daemon.token
    client = ollama.Client(host=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=180)
    assert "smollm2" in {m.model for m in client.list().models}  # before anything is prepared
    # Streamed, the first chat waits on the prepare with empty chunks the client parses.
    chunks = list(client.chat(model="smollm2", messages=[{"role": "user", "content": "What is 2+2?"}], stream=True,
                              options={"num_predict": 40}))  # fmt: skip
    assert not chunks[0].message.content and chunks[-1].done
    assert "".join(c.message.content or "" for c in chunks).strip()
    answer = client.chat(model="smollm2", messages=[{"role": "user", "content": "What is 2+2?"}], options={"num_predict": 40})
    assert answer.message.content and not any(m in answer.message.content for m in BAD_MARKERS)
    assert answer.done and answer.eval_count > 0 and answer.prompt_eval_count > 0

    parts = list(client.generate(model="smollm2", prompt="Name three colors.", stream=True, options={"num_predict": 40}))
    text = "".join(p.response for p in parts)
    assert len(parts) > 2 and text.strip() and not any(m in text for m in BAD_MARKERS)
    assert parts[-1].done and parts[-1].eval_count > 0

    structured = client.generate(model="smollm2", prompt="Give a JSON object with a key 'answer' for 2+2.",
                                 format="json", options={"num_predict": 300})  # fmt: skip
    assert structured.done_reason == "stop", structured.response
    assert isinstance(json.loads(structured.response), dict)  # the engine's grammar, not luck

    assert "smollm2" in {m.model for m in client.ps().models}
    shown = client.show("smollm2")
    assert "completion" in shown.capabilities and shown.parameters


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_speaks_ollamas_ndjson_over_the_socket(e2e_daemon: RunningDaemon) -> None:
    def curl(path: str, body: dict[str, object]) -> str:
        result = subprocess.run(
            ["curl", "-sS", "--unix-socket", str(e2e_daemon.socket), f"http://ltcai{path}", "-d", json.dumps(body)],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    lines = [json.loads(line) for line in curl("/api/chat", {"model": "smollm2", "options": {"num_predict": 30},
                                                            "messages": [{"role": "user", "content": "Hi"}]}).splitlines()]  # fmt: skip
    assert len(lines) > 2 and [line["done"] for line in lines].count(True) == 1 and lines[-1]["done"]
    assert "".join(line["message"]["content"] for line in lines).strip()
    refused = json.loads(curl("/api/chat", {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}],
                                            "options": {"mirostat": 2}}))  # fmt: skip
    assert refused["code"] == "unsupported_field" and "mirostat" in refused["error"]


def _readme_client_blocks() -> list[tuple[str, str]]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Clients", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(python|sh)\n(.*?)```", section, flags=re.S)


def test_the_readmes_client_examples_work_as_written(tcp_daemon: TcpDaemon) -> None:
    daemon = tcp_daemon.daemon
    port = tcp_daemon.port
    blocks = _readme_client_blocks()
    assert [kind for kind, _ in blocks] == ["python", "python", "sh"]  # one per client kind
    env = {**daemon.env, "PATH": os.pathsep.join([str(Path(sys.executable).parent), daemon.env.get("PATH", "")])}
    for kind, code in blocks:
        code = code.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        command = [sys.executable, "-c", code] if kind == "python" else ["bash", "-euo", "pipefail", "-c", code]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, f"README {kind} block failed:\n{code}\n{result.stdout}\n{result.stderr}"
        assert result.stdout.strip(), code
