"""A model unloaded after keep_alive comes back without a new smoke test, with REAL
llama-server processes and the real SmolLM2 model (issue 13: fast re-prepare)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import RunningDaemon, pid_alive, serving

pytestmark = pytest.mark.e2e

_BODY = {"model": "smollm2", "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 16}


def _raw_client(daemon: RunningDaemon) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://ltcai", timeout=300)


def _smoke_log(report: dict[str, Any]) -> str:
    return next(log["message"] for log in report["stage_logs"] if log["state"] == "smoke_test")


def _wait_gone(pid: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"engine {pid} still alive after {timeout} s"
        time.sleep(0.05)


def test_a_model_back_after_keep_alive_is_prepared_without_a_smoke_test(llamacpp_installed: None, daemon_root: Path) -> None:
    with serving(daemon_root, {"LTCAI_KEEP_ALIVE": "1s"}) as daemon, _raw_client(daemon) as raw:
        first = daemon.prepare("smollm2")  # asked for: tested
        assert first["state"] == "ready" and _smoke_log(first).startswith("smoke test ok")
        (model,) = daemon.client().get("/models")["models"]
        _wait_gone(model["pid"])

        answer = raw.post("/v1/chat/completions", json=_BODY)
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"].strip()
        again = daemon.client().get(f"/jobs/{answer.headers['x-ltcai-prepare-job']}")["report"]
        assert again["state"] == "ready" and again["smoke_test"] == first["smoke_test"]
        message = _smoke_log(again)
        assert message.startswith("skipped: smoke test passed ") and "SmolLM2" in message, message
        assert message.endswith("; not repeated")
        assert again["duration_s"] < first["duration_s"]
