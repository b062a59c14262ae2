"""The Ollama engine, as a CONTRACT TEST against a loopback FAKE Ollama server.

Ollama cannot be installed on the CI host, so ``tests/fakes/fake_ollama_server.py`` plays
it: a real HTTP server on 127.0.0.1 (a thread in this process, or — as the ``ollama``
binary — a child process) that follows Ollama's published API,
https://github.com/ollama/ollama/blob/main/docs/api.md (``/api/version``, ``/api/show``,
``/api/pull`` with its NDJSON ``{status, digest, total, completed}`` progress and
``{"error": …}`` lines, ``/api/generate`` with ``keep_alive``, ``/api/ps``) and
https://github.com/ollama/ollama/blob/main/docs/openai.md (``/v1/models``,
``/v1/chat/completions``). The adapter is driven phase by phase, and once end to end
through a real ``ltcai serve`` subprocess pointed at the fake by ``OLLAMA_HOST``.

``test_live_ollama_*`` (marker ``live``) talks to a real Ollama when one answers at
``OLLAMA_HOST`` and says why it skips otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fake_ollama_server import SMOKE_ANSWER, VERSION, FakeOllama
from ltcai.compat import SMOKE_PROMPT, classify_answer, detect_family, resolve
from ltcai.compat import Resolution
from ltcai.engines import ollama, openai_client
from ltcai.engines.base import ChatRequest
from ltcai.engines.ollama import INSTALL_HINT, OllamaEngine, host_url
from ltcai.errors import DownloadError, EngineError, EngineUnavailable

from .conftest import closed_port, install_script

FAKE_SERVER = Path(__file__).resolve().parents[1] / "fakes" / "fake_ollama_server.py"
MODEL = "llama3.2:1b"
LAYERS = [3_000_000, 1_200, 485]  # weights, template, params: Ollama pulls a few blobs


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOllama]:
    """A fake Ollama that knows ``llama3.2:1b``, found through ``OLLAMA_HOST=host:port``."""
    with FakeOllama(library={MODEL: list(LAYERS)}) as server:
        monkeypatch.setenv("OLLAMA_HOST", server.host_port)
        yield server


@pytest.fixture
def no_ollama(monkeypatch: pytest.MonkeyPatch, bare_path: Path) -> str:
    """No server answers at OLLAMA_HOST and no ``ollama`` binary is on PATH."""
    host = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("OLLAMA_HOST", host)
    return host


def res(model: str = MODEL) -> Resolution:
    return resolve(model, "ollama")


def bytes_reports(progress: Any) -> list[Any]:
    return progress.measured("B")


# ---------------------------------------------------------------------------- OLLAMA_HOST


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),  # host:port, no scheme
        ("localhost", "http://localhost:11434"),  # a bare host keeps Ollama's port
        ("0.0.0.0", "http://127.0.0.1:11434"),  # where a server binds is not where to connect
        ("0.0.0.0:9999", "http://127.0.0.1:9999"),
        ("http://ollama.lan", "http://ollama.lan:80"),  # a scheme without a port: its port
        ("https://ollama.example.com/", "https://ollama.example.com:443"),
        ("http://[::1]:7000", "http://[::1]:7000"),
        ("", "http://127.0.0.1:11434"),
    ],
)
def test_ollama_host_is_read_the_way_ollama_reads_it(value: str, url: str) -> None:
    assert host_url(value, default_port=11434) == url


# ---------------------------------------------------------------------------------- check


@pytest.mark.asyncio
async def test_check_finds_the_server_at_ollama_host_given_as_host_port(fake: FakeOllama, engine_harness: Any) -> None:
    async with engine_harness() as h:
        check = await OllamaEngine().check(h.ctx())
    assert check.available and check.version == VERSION
    assert check.details == {"server": fake.url, "started_by_ltcai": False}
    assert ("GET", "/api/version", {}) in fake.requests


@pytest.mark.asyncio
async def test_the_host_option_wins_over_ollama_host(fake: FakeOllama, engine_harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{closed_port()}")
    async with engine_harness() as h:
        check = await OllamaEngine().check(h.ctx(host=fake.url))
    assert check.available and check.details["server"] == fake.url


@pytest.mark.asyncio
async def test_check_with_no_server_and_no_binary_says_why_and_how_to_install(no_ollama: str, engine_harness: Any) -> None:
    async with engine_harness() as h:
        engine = OllamaEngine()
        check = await engine.check(h.ctx())
        with pytest.raises(EngineUnavailable) as err:
            await engine.serve(h.ctx(), res(), None)
    assert not check.available and check.installable is False  # never installed silently
    assert check.reason == (
        f"no Ollama server answers at http://{no_ollama} (OLLAMA_HOST) and the `ollama` binary is not on PATH"
    )
    assert check.install_hint == INSTALL_HINT
    assert "https://ollama.com/download" in INSTALL_HINT and "install.sh" in INSTALL_HINT
    assert err.value.code == "engine_unavailable" and err.value.hint == INSTALL_HINT


@pytest.mark.asyncio
async def test_a_binary_without_a_server_starts_ollama_serve_once(
    no_ollama: str, bare_path: Path, engine_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the binary: check reads its version; serve runs ``ollama serve`` on a free port, shared."""
    install_script(bare_path, "ollama", FAKE_SERVER)
    monkeypatch.setenv("FAKE_OLLAMA_LIBRARY", json.dumps({MODEL: LAYERS}))
    async with engine_harness() as h:
        engine = OllamaEngine()
        check = await engine.check(h.ctx())
        served = await engine.serve(h.ctx(), res(), None)
        processes = list(h.supervisor.processes.values())
        again = await engine.serve(h.ctx(), res("qwen2.5:0.5b"), None)
        after = await engine.check(h.ctx())
        download = await engine.download(h.ctx(), res())
        loaded = await engine.load(h.ctx(), served)
        # A chat on the OpenAI route (no num_ctx there) keeps the context: the server ltcai
        # started has it as its default (OLLAMA_CONTEXT_LENGTH), so Ollama does not reload.
        await openai_client.chat_completion(h.chat, served, ChatRequest([{"role": "user", "content": "Hi"}], {}))
        ps = (await h.ctx().http.get(served.base_url.removesuffix("/v1") + "/api/ps")).json()["models"]
        assert len(processes) == 1 and processes[0].running
        argv = processes[0].argv
    assert check.available and check.version == VERSION
    assert check.details["binary"] == str(bare_path / "ollama")
    assert "ltcai starts `ollama serve`" in check.details["server"]
    assert argv[-1] == "serve"
    # Not the configured (dead) address: a free loopback port of ltcai's own.
    assert served.base_url.startswith("http://127.0.0.1:") and no_ollama not in served.base_url
    assert again.base_url == served.base_url  # one `ollama serve` for every model
    assert not processes[0].running and processes[0].returncode is not None  # stopped with the supervisor
    # A server shared by every Ollama model is never stopped per model.
    assert served.process is None
    assert after.available and after.details["started_by_ltcai"] is True
    assert download is not None and download.downloaded and download.bytes == sum(LAYERS)
    assert loaded is not None and loaded.current_id == MODEL
    assert [(m["name"], m["context_length"]) for m in ps] == [(MODEL, 8192)]


# ------------------------------------------------------------------------------- download


@pytest.mark.asyncio
async def test_pull_progress_is_the_sum_of_the_layers_in_bytes(fake: FakeOllama, engine_harness: Any) -> None:
    async with engine_harness() as h:
        result = await OllamaEngine().download(h.ctx(), res())
    assert result is not None
    assert (result.path, result.downloaded, result.bytes, result.source) == (MODEL, True, sum(LAYERS), "ollama")
    assert MODEL in fake.store
    reports = bytes_reports(h.progress)
    dones = [r.done for r in reports]
    assert dones == sorted(dones), "byte progress went back"
    # Once every layer is announced, the total is all of them, never one layer's size.
    announced = len(LAYERS)
    assert {r.total for r in reports[announced - 1 :]} == {sum(LAYERS)}
    assert reports[-1].done == reports[-1].total == sum(LAYERS)
    assert len(reports) > len(LAYERS) + 2  # it moved in steps, not only at the end
    assert any("pulling manifest" in m for m in h.progress.messages)
    pull = [body for method, path, body in fake.requests if path == "/api/pull"]
    assert pull == [{"model": MODEL, "stream": True}]


@pytest.mark.asyncio
async def test_a_model_already_in_ollamas_store_is_not_pulled(fake: FakeOllama, engine_harness: Any) -> None:
    fake.store.add(MODEL)
    async with engine_harness() as h:
        result = await OllamaEngine().download(h.ctx(), res())
    assert result is not None and result.downloaded is False
    assert result.message == f"{MODEL} is already in Ollama's model store"
    assert "/api/show" in fake.paths() and "/api/pull" not in fake.paths()
    assert bytes_reports(h.progress) == []


@pytest.mark.asyncio
async def test_pulling_a_model_the_registry_lacks_is_model_not_found(fake: FakeOllama, engine_harness: Any) -> None:
    async with engine_harness() as h:
        with pytest.raises(DownloadError) as err:
            await OllamaEngine().download(h.ctx(), res("llama9:404b"))
    assert err.value.code == "model_not_found"
    assert "pull model manifest: file does not exist" in err.value.message
    assert "https://ollama.com/library" in (err.value.hint or "")


@pytest.mark.asyncio
async def test_an_invalid_name_is_refused_with_ollamas_reason(fake: FakeOllama, engine_harness: Any) -> None:
    bad = Resolution("-bad/name!", "ollama", "-bad/name!", "-bad/name!", "ollama:-bad/name!", "ollama:-bad/name!")
    async with engine_harness() as h:
        with pytest.raises(DownloadError) as err:
            await OllamaEngine().download(h.ctx(), bad)
    assert err.value.code == "invalid_reference"
    assert "invalid model name" in err.value.message and "'-bad/name!'" in err.value.message
    assert "hf.co/<user>/<repo>:<quantization>" in (err.value.hint or "")


@pytest.mark.asyncio
async def test_a_network_error_reported_mid_pull_is_a_resumable_network_error(fake: FakeOllama, engine_harness: Any) -> None:
    fake.pull_failure = "network"
    async with engine_harness() as h:
        with pytest.raises(DownloadError) as err:
            await OllamaEngine().download(h.ctx(), res())
    assert err.value.code == "network_error"
    assert "connection reset by peer" in err.value.message
    assert "resumes the pull" in (err.value.hint or "")
    assert MODEL not in fake.store
    assert bytes_reports(h.progress)[-1].done < sum(LAYERS)


@pytest.mark.asyncio
async def test_a_connection_dropped_mid_pull_is_interrupted_and_prepare_again_finishes(
    fake: FakeOllama, engine_harness: Any
) -> None:
    fake.pull_failure = "drop"
    async with engine_harness() as h:
        engine = OllamaEngine()
        with pytest.raises(DownloadError) as err:
            await engine.download(h.ctx(), res())
        assert MODEL not in fake.store
        fake.pull_failure = None
        retry = await engine.download(h.ctx(), res())
    assert err.value.code == "network_error"
    assert "dropped while pulling llama3.2:1b" in err.value.message
    assert "again resumes the pull where it stopped" in (err.value.hint or "")
    assert retry is not None and retry.downloaded and MODEL in fake.store


@pytest.mark.asyncio
async def test_the_server_gone_before_the_pull_is_a_clear_error(no_ollama: str, engine_harness: Any) -> None:
    async with engine_harness() as h:
        with pytest.raises(EngineUnavailable) as err:
            await OllamaEngine().download(h.ctx(), res())
    assert f"no Ollama server answers at http://{no_ollama}" in err.value.message


# ---------------------------------------------------------------------------- load / chat


@pytest.mark.asyncio
async def test_load_uses_generate_with_keep_alive_and_takes_the_name_from_ps(fake: FakeOllama, engine_harness: Any) -> None:
    fake.store.add(MODEL)
    async with engine_harness() as h:
        engine = OllamaEngine()
        served = await engine.serve(h.ctx(keep_alive="10m"), res(), None)
        result = await engine.load(h.ctx(keep_alive="10m"), served)
    assert served.process is None and served.base_url == fake.url + "/v1"
    generate = [body for _, path, body in fake.requests if path == "/api/generate"]
    # The context is asked for (num_ctx): Ollama's own default would cut long conversations.
    assert generate == [{"model": MODEL, "prompt": "", "keep_alive": "10m", "stream": False, "options": {"num_ctx": 8192}}]
    assert fake.running == {MODEL: "10m"} and fake.contexts == {MODEL: 8192}
    assert fake.paths().index("/api/ps") > fake.paths().index("/api/generate")  # confirmed after
    assert result is not None and result.loaded and result.current_id == MODEL
    assert result.message == f"{MODEL} is loaded (keep_alive 10m, context 8192)"
    assert served.context == 8192


@pytest.mark.asyncio
async def test_the_context_asked_is_n_ctx_capped_at_the_trained_one(fake: FakeOllama, engine_harness: Any) -> None:
    fake.store.add(MODEL)
    async with engine_harness() as h:
        engine = OllamaEngine()
        served = await engine.serve(h.ctx(), res(), None)
        await engine.load(h.ctx(n_ctx=16384), served)
        assert fake.contexts == {MODEL: 16384} and served.context == 16384
        fake.trained_context = 2048  # /api/show: llama.context_length
        await engine.load(h.ctx(n_ctx=16384), served)
        assert fake.contexts == {MODEL: 2048} and served.context == 2048
        with pytest.raises(EngineError) as bad:
            await engine.load(h.ctx(n_ctx="lots"), served)
    assert bad.value.code == "invalid_config" and "[engines.ollama] n_ctx" in bad.value.message


@pytest.mark.asyncio
async def test_an_untagged_name_becomes_ollamas_latest_as_the_current_id(fake: FakeOllama, engine_harness: Any) -> None:
    fake.store.add("llama3.2:latest")
    resolution = res("ollama:llama3.2")
    async with engine_harness() as h:
        engine = OllamaEngine()
        served = await engine.serve(h.ctx(), resolution, None)
        result = await engine.load(h.ctx(), served)
    assert result is not None and result.current_id == "llama3.2:latest"
    assert served.model == "llama3.2:latest"  # what chat sends from now on
    after = resolution.with_loaded_id(result.current_id)
    assert (after.resolved_model, after.expected_current) == ("llama3.2:latest", "ollama:llama3.2:latest")
    assert after.download_id == "llama3.2"  # what a later prepare pulls stays the user's name


@pytest.mark.asyncio
async def test_loading_a_model_ollama_lacks_is_model_not_found(fake: FakeOllama, engine_harness: Any) -> None:
    async with engine_harness() as h:
        engine = OllamaEngine()
        served = await engine.serve(h.ctx(), res(), None)
        with pytest.raises(EngineError) as err:
            await engine.load(h.ctx(), served)
    assert err.value.code == "model_not_found"
    assert "model 'llama3.2:1b' not found" in err.value.message


@pytest.mark.asyncio
async def test_chat_goes_through_ollamas_openai_route_streamed_or_not(fake: FakeOllama, engine_harness: Any) -> None:
    fake.store.add(MODEL)
    fake.answer = "Paris is the capital of France."
    async with engine_harness() as h:
        engine = OllamaEngine()
        served = await engine.serve(h.ctx(), res(), None)
        await engine.load(h.ctx(), served)
        question = ChatRequest([{"role": "user", "content": "Capital of France?"}], {"max_tokens": 32, "temperature": 0.2})
        smoke = ChatRequest([{"role": "user", "content": SMOKE_PROMPT}], {"max_tokens": 32, "stop": ["</s>"]})
        whole = await openai_client.chat_completion(h.chat, served, question)
        chunks = [c async for c in openai_client.stream_chat_completion(h.chat, served, question)]
        smoke_answer = (await openai_client.chat_completion(h.chat, served, smoke))["choices"][0]["message"]["content"]
    # The daemon's shared OpenAI-compatible client on Ollama's /v1 route.
    assert whole["choices"][0]["message"]["content"] == "Paris is the capital of France."
    assert "".join(c.content for c in chunks) == "Paris is the capital of France."
    assert len(chunks) > 2 and chunks[-1].finish_reason == "stop"
    chats = [body for _, path, body in fake.requests if path == "/v1/chat/completions"]
    assert [c["stream"] for c in chats] == [False, True, False]
    assert all(c["model"] == MODEL for c in chats)
    assert chats[0]["max_tokens"] == 32 and chats[0]["temperature"] == 0.2 and chats[2]["stop"] == ["</s>"]
    assert smoke_answer == SMOKE_ANSWER and classify_answer(smoke_answer).status == "ok"


@pytest.mark.asyncio
async def test_unload_sends_keep_alive_0_and_tolerates_a_model_already_gone(fake: FakeOllama, engine_harness: Any) -> None:
    fake.store.add(MODEL)
    async with engine_harness() as h:
        engine = OllamaEngine()
        served = await engine.serve(h.ctx(), res(), None)
        await engine.load(h.ctx(), served)
        assert MODEL in fake.running
        await engine.unload(h.ctx(), served)
        assert fake.running == {}
        fake.store.discard(MODEL)
        await engine.unload(h.ctx(), served)  # Ollama answers 404: nothing left to free
        fake.stop()
        await engine.unload(h.ctx(), served)  # no server, no model in memory
    unloads = [body for _, path, body in fake.requests if path == "/api/generate" and body.get("keep_alive") == 0]
    assert unloads[0] == {"model": MODEL, "keep_alive": 0, "stream": False}


# ------------------------------------------------------------------------------ model ids


@pytest.mark.parametrize(
    ("given", "model", "family"),
    [
        ("ollama:llama3.2:1b", "llama3.2:1b", "llama"),
        ("ollama:gpt-oss:20b", "gpt-oss:20b", "gpt-oss"),
        ("ollama:hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "llama"),
        ("ollama:qwen2.5:0.5b", "qwen2.5:0.5b", "qwen"),
    ],
)
def test_tagged_ids_keep_their_tag_and_resolve_to_ollama(given: str, model: str, family: str) -> None:
    resolution = resolve(given)
    assert resolution.engine == "ollama"
    assert resolution.resolved_model == resolution.download_id == model
    assert resolution.load_id == resolution.expected_current == f"ollama:{model}"
    assert detect_family(given) == detect_family(model) == family


@pytest.mark.asyncio
async def test_a_hugging_face_gguf_id_goes_to_ollama_untouched(fake: FakeOllama, engine_harness: Any) -> None:
    model = "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"
    fake.library[model] = [2_000_000]
    async with engine_harness() as h:
        engine = OllamaEngine()
        download = await engine.download(h.ctx(), res(f"ollama:{model}"))
        served = await engine.serve(h.ctx(), res(f"ollama:{model}"), download)
        loaded = await engine.load(h.ctx(), served)
    assert download is not None and download.bytes == 2_000_000
    assert [b["model"] for _, p, b in fake.requests if p in ("/api/pull", "/api/generate")] == [model, model]
    assert loaded is not None and loaded.current_id == model


def test_ollama_registers_through_its_hook() -> None:
    registered: list[Any] = []
    ollama.ltcai_register_engines(register=registered.append)
    assert [type(a) for a in registered] == [OllamaEngine] and registered[0].name == "ollama"


# ----------------------------------------------------------------- through a real daemon


def test_prepare_and_chat_through_a_real_daemon_against_the_fake(start_daemon: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ltcai serve`` with OLLAMA_HOST at the fake: prepare → READY, chat, models, unload."""
    with FakeOllama(library={MODEL: list(LAYERS)}) as fake:
        daemon = start_daemon({"OLLAMA_HOST": fake.host_port})
        events = daemon.prepare(f"ollama:{MODEL}", engine=None)
        report = events[-1]["report"]
        states = [e["state"] for e in events if e["type"] == "state"]
        chat = daemon.client.post("/chat", json={"model": f"ollama:{MODEL}", "prompt": "Capital of France?"})
        models = daemon.client.get("/models").json()["models"]
        again = daemon.report(f"ollama:{MODEL}", engine=None, force=True)
        engines = {e["name"]: e for e in daemon.client.get("/engines").json()["engines"]}
        unload = daemon.client.post("/models/unload", json={"model": f"ollama:{MODEL}"})
        running_after_unload = dict(fake.running)
    assert states == [
        "resolving", "engine_check", "engine_install", "downloading", "server_starting",
        "model_serving", "model_loading", "smoke_test", "ready",
    ]  # fmt: skip
    assert report["status"] == "ok" and report["ready_to_chat"] is True, report
    assert report["resolution"]["engine"] == "ollama" and report["resolution"]["resolved_model"] == MODEL
    assert report["current"] == f"ollama:{MODEL}"
    assert report["download_result"]["bytes"] == sum(LAYERS) and report["download_result"]["downloaded"] is True
    assert report["smoke_test"]["answer"] == SMOKE_ANSWER and report["smoke_test"]["status"] == "ok"
    # The user's own Ollama (default context 4096 here) reloads the model at its default for
    # the smoke test's /v1 chat, whatever the load asked: the probe says what is really used.
    smoke = next(s for s in report["stage_logs"] if s["state"] == "smoke_test")
    context = smoke["extra"]["capabilities"]["context"]
    assert context["status"] == "degraded", context
    assert context["reason"].startswith("Ollama runs it with 4096 tokens (8192 asked; /api/ps)"), context
    assert "OLLAMA_CONTEXT_LENGTH=8192" in context["reason"]
    progress = [e["progress"] for e in events if e.get("progress") and e["progress"].get("unit") == "B"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] == sum(LAYERS)
    assert chat.status_code == 200, chat.text
    assert chat.json()["content"] == fake.answer
    assert [(m["engine"], m["model"], m["current"], m["pid"]) for m in models] == [("ollama", MODEL, f"ollama:{MODEL}", None)]
    assert again["download_result"]["downloaded"] is False  # already in Ollama's store
    assert engines["ollama"]["available"] is True and engines["ollama"]["version"] == VERSION
    assert unload.status_code == 200, unload.text
    assert running_after_unload == {}
    # The daemon talked to Ollama's own API for every step, and chatted over /v1.
    assert {"/api/version", "/api/show", "/api/pull", "/api/generate", "/api/ps", "/v1/chat/completions"} <= set(fake.paths())


def test_an_untagged_model_is_current_as_latest_and_still_chats_by_the_given_name(start_daemon: Any) -> None:
    """``ollama:llama3.2`` loads as ``llama3.2:latest`` (SPEC §5 "after load"); the user's id still finds it."""
    with FakeOllama(library={"llama3.2:latest": [1000]}) as fake:
        daemon = start_daemon({"OLLAMA_HOST": fake.host_port})
        report = daemon.report("ollama:llama3.2", engine=None)
        chat = daemon.client.post("/chat", json={"model": "ollama:llama3.2", "prompt": "Hello?"})
        models = daemon.client.get("/models").json()["models"]
        unload = daemon.client.post("/models/unload", json={"model": "ollama:llama3.2"})
        running_after_unload = dict(fake.running)
    assert report["status"] == "ok", report
    assert report["current"] == "ollama:llama3.2:latest"
    assert report["resolution"]["resolved_model"] == "llama3.2:latest"
    assert report["resolution"]["download_id"] == "llama3.2"
    assert chat.status_code == 200, chat.text
    assert chat.json()["content"] == fake.answer
    assert [(m["model"], m["current"]) for m in models] == [("llama3.2:latest", "ollama:llama3.2:latest")]
    assert unload.status_code == 200, unload.text
    assert running_after_unload == {}


def test_prepare_with_no_ollama_fails_at_engine_check_with_the_install_hint(start_daemon: Any, bare_path: Path) -> None:
    daemon = start_daemon({"OLLAMA_HOST": f"127.0.0.1:{closed_port()}", "PATH": str(bare_path)})
    report = daemon.report(f"ollama:{MODEL}", engine=None)
    assert report["status"] == "failed" and report["state"] == "failed"
    error = report["error"]
    assert error["code"] == "engine_unavailable" and error["state"] == "engine_check"
    assert "ollama is not available: no Ollama server answers at" in error["message"]
    assert error["hint"] == INSTALL_HINT


# ----------------------------------------------------------------------------------- live


def _real_ollama() -> tuple[str | None, str]:
    """The URL of a real Ollama at OLLAMA_HOST, or None and why not."""
    url = host_url(os.environ.get("OLLAMA_HOST"), default_port=11434)
    try:
        response = httpx.get(url + "/api/version", timeout=2.0)
        version = response.json().get("version")
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return None, f"no Ollama answers at {url} (set OLLAMA_HOST): {type(exc).__name__}"
    if response.status_code != 200 or not version:
        return None, f"{url}/api/version did not answer like Ollama (HTTP {response.status_code})"
    return url, version


@pytest.mark.live
@pytest.mark.asyncio
async def test_live_ollama_pull_load_chat_unload(engine_harness: Any) -> None:
    """A real Ollama: pull (LTCAI_OLLAMA_LIVE_MODEL, default qwen2.5:0.5b, ~400 MB) → load → chat → unload."""
    url, why = _real_ollama()
    if url is None:
        pytest.skip(f"live Ollama test: {why}")
    model = os.environ.get("LTCAI_OLLAMA_LIVE_MODEL", "qwen2.5:0.5b")
    async with engine_harness() as h:
        engine = OllamaEngine()
        check = await engine.check(h.ctx(host=url))
        assert check.available and check.version == why
        await engine.download(h.ctx(host=url), res(model))
        served = await engine.serve(h.ctx(host=url), res(model), None)
        loaded = await engine.load(h.ctx(host=url, keep_alive="2m"), served)
        assert loaded is not None and loaded.current_id
        try:
            request = ChatRequest([{"role": "user", "content": "What is 2 + 2? Answer with a number."}], {"max_tokens": 16})
            answer = await openai_client.chat_completion(h.chat, served, request, timeout=120)
        finally:
            await engine.unload(h.ctx(host=url), served)
    assert answer["choices"][0]["message"]["content"].strip()
