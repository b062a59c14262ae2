"""Model lifecycle with REAL llama.cpp server processes and the real SmolLM2 model.

Two models are two real engine processes: ``smollm2`` (the bundled file) and a copy of
that file under the data dir's models folder (another id, another server). Gemma 3 270M
cannot be the second: its smoke test honestly fails, so it never becomes a loaded model.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from ltcai.daemon.memory import estimate_need
from ltcai.engines.base import DownloadResult
from ltcai.engines.llama_server import default_slots
from ltcai.engines.bundled import BUNDLED_MODELS, locate_bundled

from .conftest import RunningDaemon, pid_alive, serving

pytestmark = pytest.mark.e2e

_PROMPT = "Count from one to twenty in words."


def _bundled_smollm2() -> Path:
    (bundled,) = BUNDLED_MODELS.values()
    return locate_bundled(bundled).path


def _copy_of_smollm2(root: Path) -> str:
    """SmolLM2 again under another id: the data dir's models folder is an allowed root."""
    target = root / "data" / "models" / "smollm2-copy.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_bundled_smollm2(), target)
    return str(target)


def _models(daemon: RunningDaemon) -> dict[str, dict[str, Any]]:
    return {m["input_id"]: m for m in daemon.client().get("/models")["models"]}


def _wait_until(condition: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"not within {timeout} s: {condition}"
        time.sleep(0.05)
    return value


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _raw_client(daemon: RunningDaemon) -> httpx.Client:
    """Status codes and headers as they are (the CLI's client turns errors into exceptions)."""
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://ltcai", timeout=300)


def _stream(daemon: RunningDaemon, model: str, **body: Any) -> list[dict[str, Any]]:
    request = {"model": model, "prompt": _PROMPT, "max_tokens": 48, "temperature": 0, "stream": True, **body}
    return list(daemon.client(timeout=300).stream("POST", "/chat", request))


def test_keep_alive_unloads_an_idle_model_and_v1_brings_it_back(llamacpp_installed: None, daemon_root: Path) -> None:
    with serving(daemon_root, {"LTCAI_KEEP_ALIVE": "2s"}) as daemon:
        assert daemon.prepare("smollm2")["state"] == "ready"
        ready_at = time.monotonic()
        pid = _models(daemon)["smollm2"]["pid"]
        _wait_until(lambda: not pid_alive(pid), timeout=20)
        assert time.monotonic() - ready_at >= 1.9
        assert _models(daemon) == {}

        # The OpenAI route prepares it again just in time; a stream whose keep_alive (0)
        # runs out while it is still going is never cut, and the model goes after it.
        body = {"model": "smollm2", "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 16}
        with _raw_client(daemon) as raw:
            answer = raw.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"].strip()
        again = _models(daemon)["smollm2"]["pid"]
        assert again != pid and pid_alive(again)
        events = _stream(daemon, "smollm2", keep_alive=0)
        assert events[-1].get("finish_reason") in ("stop", "length"), events[-1]  # a whole answer, not cut
        assert "".join(e.get("content", "") for e in events).strip()
        _wait_until(lambda: not pid_alive(again), timeout=20)

        # /metrics counted all of it (the unload is counted once its process is reaped: wait).
        idle_unloads = ("ltcai_model_unloads_total", (("cause", "idle"), ("engine", "llamacpp")))
        with _raw_client(daemon) as raw:
            metrics = _wait_until(lambda: (m := _samples(raw.get("/metrics").text)).get(idle_unloads) == 2 and m)
        model = (("engine", "llamacpp"), ("model", "smollm2-135m-instruct-q4_1"))
        assert metrics[("ltcai_requests_total", (*model, ("outcome", "ok"), ("route", "/v1/chat/completions")))] == 1
        assert metrics[("ltcai_requests_total", (*model, ("outcome", "ok"), ("route", "/chat")))] == 1
        assert metrics[("ltcai_time_to_first_token_seconds_count", (*model, ("route", "/chat")))] == 1
        assert metrics[("ltcai_tokens_total", (("direction", "out"), *model))] > 0  # the /v1 answer's usage
        assert metrics[("ltcai_prepares_total", (("engine", "llamacpp"), ("outcome", "ok")))] == 2
        assert metrics[("ltcai_models_loaded", ())] == 0


def test_max_loaded_models_one_a_second_model_evicts_the_first(llamacpp_installed: None, daemon_root: Path) -> None:
    copy = _copy_of_smollm2(daemon_root)
    with serving(daemon_root, {"LTCAI_MAX_LOADED_MODELS": "1"}) as daemon:
        assert daemon.prepare("smollm2")["state"] == "ready"
        first = _models(daemon)["smollm2"]["pid"]
        assert daemon.prepare(copy)["state"] == "ready"
        assert set(_models(daemon)) == {copy}
        assert not pid_alive(first)
        assert pid_alive(_models(daemon)[copy]["pid"])


def test_a_budget_for_one_model_evicts_the_idle_one_and_refuses_while_it_streams(llamacpp_installed: None, daemon_root: Path) -> None:
    copy = _copy_of_smollm2(daemon_root)
    path = _bundled_smollm2()
    # llama-server (the default) holds a KV cache per slot: the estimate counts them all.
    need = anyio.run(
        estimate_need, "llamacpp", DownloadResult(str(path), False, path.stat().st_size), {}, default_slots()
    )
    assert need is not None
    budget = int(need.total * 1.5)  # one fits, two do not
    with serving(daemon_root, {"LTCAI_MEMORY_BUDGET": str(budget)}) as daemon:
        assert daemon.prepare("smollm2")["state"] == "ready"
        listed = _models(daemon)["smollm2"]
        assert listed["memory"]["estimated"]["total"] == need.total
        # The estimate is close to what the real server holds (measured: llama-server with
        # 4 slots 613 MiB estimated vs 490-513 MiB RSS; llama_cpp.server 343 vs 327 MiB).
        assert 0.7 < listed["memory"]["rss"] / need.total < 1.3, listed["memory"]
        first = listed["pid"]

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            streaming = pool.submit(_stream, daemon, "smollm2", max_tokens=200)
            _wait_until(lambda: _models(daemon)["smollm2"]["in_flight"] == 1)
            refused = daemon.prepare(copy)
            events = streaming.result(timeout=300)
        assert refused["error"]["code"] == "not_enough_memory", refused
        assert "after unloading 0 idle models; 1 busy" in refused["error"]["message"]
        assert events[-1].get("finish_reason"), events[-1]  # the stream was never cut
        assert pid_alive(first) and set(_models(daemon)) == {"smollm2"}

        assert daemon.prepare(copy)["state"] == "ready"  # now idle: smollm2 is evicted
        assert not pid_alive(first) and set(_models(daemon)) == {copy}


def test_the_queue_answers_429_past_max_queue(llamacpp_installed: None, daemon_root: Path) -> None:
    with serving(daemon_root, {"LTCAI_MAX_QUEUE": "1"}) as daemon:
        assert daemon.prepare("smollm2")["state"] == "ready"
        slots = _models(daemon)["smollm2"]["slots"]
        held = slots + 1  # every slot busy, one waiting in the queue
        with concurrent.futures.ThreadPoolExecutor(max_workers=held) as pool:
            streams = [pool.submit(_stream, daemon, "smollm2", max_tokens=120) for _ in range(held)]
            _wait_until(lambda: (lambda m: m["busy"] == slots and m["queued"] == 1)(_models(daemon)["smollm2"]))
            with _raw_client(daemon) as raw:
                refused = raw.post("/chat", json={"model": "smollm2", "prompt": "hi"})
            answers = [s.result(timeout=300) for s in streams]
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "too_busy"
        assert int(refused.headers["retry-after"]) >= 1
        assert all(a[-1].get("finish_reason") for a in answers)  # the queued one ran too


def test_a_v1_stream_that_waits_on_a_prepare_is_kept_alive_and_names_the_job(llamacpp_installed: None, daemon_root: Path) -> None:
    with serving(daemon_root) as daemon, _raw_client(daemon) as raw:
        body = {"model": "smollm2", "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 16, "stream": True}
        with raw.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            job_id = response.headers["x-ltcai-prepare-job"]
            lines = [line for line in response.iter_lines() if line]
        comments = [line for line in lines if line.startswith(":")]
        data = [line for line in lines if line.startswith("data: ")]
        assert comments and lines.index(comments[0]) == 0  # the wait said something at once
        assert any("smoke_test" in c for c in comments) and all(job_id in c for c in comments)
        assert data[-1] == "data: [DONE]" and '"content"' in "".join(data)
        assert daemon.client().get(f"/jobs/{job_id}")["report"]["ready_to_chat"] is True

        # A ready model: no comments and no job header; a prepare that fails ends the stream
        # with an error event that names the reason (the header names the failed job).
        with raw.stream("POST", "/v1/chat/completions", json=body) as response:
            assert "x-ltcai-prepare-job" not in response.headers
            assert not any(line.startswith(":") for line in response.iter_lines())
        missing = str(daemon_root / "data" / "models" / "missing.gguf")
        with raw.stream("POST", "/v1/chat/completions", json={**body, "model": missing}) as response:
            failed_job = response.headers["x-ltcai-prepare-job"]
            events = [line for line in response.iter_lines() if line.startswith("data: {")]
        error = json.loads(events[-1][len("data: "):])["error"]
        assert error["code"] == "model_not_ready" and failed_job in error["hint"]

        # Not streamed: the answer comes once the model is ready, with the job in a header.
        assert daemon.client().post("/models/unload", {"model": "smollm2"})
        whole = raw.post("/v1/chat/completions", json={**body, "stream": False})
        assert whole.status_code == 200 and whole.headers["x-ltcai-prepare-job"] != job_id
