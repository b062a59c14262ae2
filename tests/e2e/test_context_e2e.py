"""Context that fits, and says so (issue 13 item 3), with the REAL SmolLM2 on both llama.cpp
servers: a memory budget too small for the configured context starts the model with the
largest context that fits (and the prepare report and the context probe say why), and a
prompt longer than the context gets a clear 400 with both numbers, on /v1 and /api,
without the model being retried or harmed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from ltcai.config.units import format_bytes
from ltcai.daemon.memory import estimate_need
from ltcai.engines.base import DownloadResult
from ltcai.engines.bundled import BUNDLED_MODELS, locate_bundled
from ltcai.engines.llama_server import default_slots

from .conftest import PYTHON_SERVER, RunningDaemon, serving

pytestmark = pytest.mark.e2e

# ~10 tokens a repetition in SmolLM2's tokenizer (4031 in all): far past a 512- or 2816-token context.
_LONG = "the quick brown fox jumps over the lazy dog. " * 400


def _server(request: pytest.FixtureRequest, server: str) -> str:
    request.getfixturevalue("python_server_installed" if server == "python" else "llamacpp_installed")
    return PYTHON_SERVER if server == "python" else "[engines.llamacpp]\n"


def _raw(daemon: RunningDaemon) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://ltcai", timeout=300)


def _chat(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": "smollm2", "messages": [{"role": "user", "content": prompt}], "max_tokens": 16, **extra}


@pytest.mark.parametrize("server", ["llama-server", "python"])
def test_a_budget_too_small_for_the_context_starts_the_largest_that_fits(
    request: pytest.FixtureRequest, daemon_root: Path, server: str
) -> None:
    config = _server(request, server)
    (bundled,) = BUNDLED_MODELS.values()
    path = locate_bundled(bundled).path
    slots = default_slots() if server == "llama-server" else 1
    download = DownloadResult(str(path), False, path.stat().st_size)
    at_2816 = anyio.run(estimate_need, "llamacpp", download, {"n_ctx": 2816}, slots)
    assert at_2816 is not None
    budget = at_2816.total + 1000  # 4096 (the default n_ctx) does not fit; 2816 does, 3072 not
    why = f"4096 did not fit the {format_bytes(budget)} memory budget"
    with serving(daemon_root, {"LTCAI_MEMORY_BUDGET": str(budget)}, config=config) as daemon:
        report = daemon.prepare("smollm2")
        assert report["status"] == "ok", report
        starting = next(s for s in report["stage_logs"] if s["state"] == "server_starting")
        assert starting["message"].endswith(f"; context 2816 tokens per slot: {why}"), starting
        smoke = next(s for s in report["stage_logs"] if s["state"] == "smoke_test")
        context = smoke["extra"]["capabilities"]["context"]
        assert context["status"] == "ok" and context["reason"].startswith("2816 tokens per slot"), context
        assert context["reason"].endswith(why), context
        (listed,) = daemon.client().get("/models")["models"]
        assert listed["memory"]["estimated"]["context_tokens"] == 2816
        assert listed["memory"]["estimated"]["total"] <= budget

        # The engine really has 2816: a prompt longer than that is refused with its numbers.
        with _raw(daemon) as raw:
            refused = raw.post("/v1/chat/completions", json=_chat(_LONG))
        assert refused.status_code == 400, refused.text
        assert "-token context per request" in refused.json()["error"]["message"]
        assert "has a 2816-token context" in refused.json()["error"]["message"]

    # Even the floor (2048 tokens per slot) does not fit: refused, with both needs.
    with serving(daemon_root, {"LTCAI_MEMORY_BUDGET": str(at_2816.weights + at_2816.overhead)}, config=config) as daemon:
        report = daemon.prepare("smollm2")
        assert report["error"]["code"] == "not_enough_memory", report
        assert "; even at 2048 tokens per slot it needs " in report["error"]["message"], report["error"]
        assert daemon.client().get("/models")["models"] == []


@pytest.mark.parametrize("server", ["llama-server", "python"])
def test_a_prompt_longer_than_the_context_is_a_400_with_the_numbers_on_v1_and_api(
    request: pytest.FixtureRequest, daemon_root: Path, server: str
) -> None:
    config = _server(request, server) + "n_ctx = 512\n"
    with serving(daemon_root, config=config) as daemon, _raw(daemon) as raw:
        assert daemon.prepare("smollm2")["status"] == "ok"
        refused = raw.post("/v1/chat/completions", json=_chat(_LONG))
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "context_exceeded" and error["type"] == "invalid_request_error", error
        prompt_tokens = int(error["message"].split("the prompt is ")[1].split(" tokens")[0])
        assert prompt_tokens > 512, error
        assert error["message"].endswith("; smollm2-135m-instruct-q4_1 has a 512-token context per request"), error
        assert "n_ctx in [engines.llamacpp]" in error["hint"]

        # Ollama's API: its error shape, the same numbers.
        messages = [{"role": "user", "content": _LONG}]
        ollama = raw.post("/api/chat", json={"model": "smollm2", "messages": messages, "stream": False, "options": {"num_predict": 16}})
        assert ollama.status_code == 400, ollama.text
        assert ollama.json()["code"] == "context_exceeded"
        assert ollama.json()["error"] == error["message"]

        # A stream is refused the same way, before it starts: a real 400, as OpenAI's API
        # answers, not a 200 whose stream says so (no text was made up from a cut prompt).
        streams = [("/v1/chat/completions", _chat(_LONG, stream=True))]
        if server == "llama-server":  # llama-cpp-python streams an empty legacy completion instead (noted)
            streams.append(("/v1/completions", {"model": "smollm2", "prompt": _LONG, "max_tokens": 16, "stream": True}))
        for path, body in streams:
            streamed = raw.post(path, json=body)
            assert streamed.status_code == 400, (path, streamed.text)
            assert streamed.json()["error"]["code"] == "context_exceeded", streamed.text
            assert streamed.json()["error"]["message"].startswith("the prompt is "), streamed.text

        # Nothing was retried or marked broken: the model answers the next short prompt.
        fine = raw.post("/v1/chat/completions", json=_chat("What is 2+2?"))
        assert fine.status_code == 200, fine.text
        (listed,) = daemon.client().get("/models")["models"]
        assert listed["status"] == "ready", listed
