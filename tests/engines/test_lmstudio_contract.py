"""The LM Studio engine, as a CONTRACT TEST against a FAKE ``lms`` CLI and a FAKE LM Studio server.

LM Studio cannot be installed on the CI host. ``tests/fakes/fake_lms.py`` stands in for
the ``lms`` CLI as documented at https://lmstudio.ai/docs/cli (``lms server start``,
``lms get <model> --yes`` with LM Studio's progress bar, ``lms ls --json``, ``lms load
<model> --identifier <id> --yes``, ``lms ps --json``, ``lms unload``, ``lms version``),
placed on PATH as ``lms`` or named by ``[engines.lmstudio] lms``.
``tests/fakes/fake_lmstudio_server.py`` is LM Studio's local server as documented at
https://lmstudio.ai/docs/app/api/endpoints/rest and
https://lmstudio.ai/docs/app/api/endpoints/openai (``/v1/models``, ``/api/v0/models``,
``/v1/chat/completions``): a real HTTP server on 127.0.0.1 that ``lms server start``
runs detached, as LM Studio's is. Both share one JSON state file, so what the CLI loaded
is what the server chats with.

The identifier LM Studio gives a loaded instance (``<id>:2`` when another instance holds
``<id>``) flows back into the resolution and the current id (SPEC.md §5 "after load").
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fake_lms import CLI_VERSION, load_state, new_state, save_state, server_running
from fake_lmstudio_server import SMOKE_ANSWER
from ltcai.compat import resolve
from ltcai.engines import lmstudio, openai_client
from ltcai.engines.base import ChatRequest, DownloadResult
from ltcai.engines.lmstudio import INSTALL_HINT, LMStudioEngine
from ltcai.errors import DownloadError, EngineError, EngineUnavailable, ServerStartError

from .conftest import closed_port, install_script

FAKE_LMS = Path(__file__).resolve().parents[1] / "fakes" / "fake_lms.py"
KEY = "qwen2.5-0.5b-instruct"
PATH_IN_LMS = "lmstudio-community/Qwen2.5-0.5B-Instruct-GGUF/Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"
SIZE = 400_000_000
CATALOG = {KEY: {"modelKey": KEY, "path": PATH_IN_LMS, "sizeBytes": SIZE, "displayName": "Qwen2.5 0.5B Instruct"}}
OTHER = {
    "type": "llm", "modelKey": "llama-3.2-1b-instruct", "format": "gguf", "displayName": "Llama 3.2 1B",
    "path": "lmstudio-community/Llama-3.2-1B-Instruct-GGUF/Llama-3.2-1B-Instruct-Q4_K_M.gguf", "sizeBytes": 800_000_000,
}  # fmt: skip


@dataclass
class FakeLMStudio:
    """The fake ``lms`` on PATH, its state file, and the port its server will listen on."""

    state_path: Path
    lms: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self) -> dict[str, Any]:
        return load_state(self.state_path)

    def change(self, **values: Any) -> None:
        state = self.state()
        state.update(values)
        save_state(state, self.state_path)

    def calls(self, command: str) -> list[list[str]]:
        return [c for c in self.state()["calls"] if c[:1] == [command]]

    def download(self, model: dict[str, Any]) -> None:
        self.change(downloaded=[*self.state()["downloaded"], model])

    def stop_server(self) -> None:
        pid = self.state()["server"].get("pid")
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)  # a child only when this process started it; else init reaps it
            deadline = time.monotonic() + 5
            while server_running(self.state()) and time.monotonic() < deadline:
                time.sleep(0.02)


def downloaded(key: str = KEY) -> dict[str, Any]:
    entry = CATALOG[key]
    return {"type": "llm", "modelKey": key, "format": "gguf", "displayName": entry["displayName"], "path": entry["path"], "sizeBytes": SIZE}


def instance(model: dict[str, Any], identifier: str) -> dict[str, Any]:
    return {**model, "identifier": identifier, "instanceReference": f"ref-{identifier}"}


@pytest.fixture
def fake_lms(tmp_path: Path, bare_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLMStudio]:
    """``lms`` on PATH, LMSTUDIO_HOST at a free port where no server runs yet, HOME empty."""
    state_path = tmp_path / "lms-state.json"
    save_state(new_state(CATALOG), state_path)
    fake = FakeLMStudio(state_path, install_script(bare_path, "lms", FAKE_LMS), closed_port())
    monkeypatch.setenv("FAKE_LMS_STATE", str(state_path))
    monkeypatch.setenv("LMSTUDIO_HOST", f"127.0.0.1:{fake.port}")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.lmstudio/bin/lms of the host's
    try:
        yield fake
    finally:
        fake.stop_server()


def res(model: str = KEY) -> Any:
    return resolve(model, "lmstudio")


async def _served(engine: LMStudioEngine, h: Any, **options: Any) -> Any:
    """Serve the downloaded KEY: the server started, the artifact LM Studio's key."""
    download = DownloadResult(path=KEY, downloaded=False, source="lmstudio")
    return await engine.serve(h.ctx(**options), res(), download)


# ---------------------------------------------------------------------------------- check


@pytest.mark.asyncio
async def test_check_with_lms_but_no_server_is_available_with_the_cli_version(fake_lms: FakeLMStudio, engine_harness: Any) -> None:
    async with engine_harness() as h:
        check = await LMStudioEngine().check(h.ctx())
    assert check.available and check.version == CLI_VERSION
    assert check.details["lms"] == str(fake_lms.lms)
    assert check.details["server"] == f"none answers at {fake_lms.url}; ltcai runs `lms server start`"
    assert fake_lms.calls("version") == [["version"]]


@pytest.mark.asyncio
async def test_check_finds_lms_named_in_the_config(fake_lms: FakeLMStudio, engine_harness: Any, tmp_path: Path) -> None:
    elsewhere = install_script(tmp_path / "elsewhere", "lms-cli", FAKE_LMS)
    fake_lms.lms.unlink()
    async with engine_harness() as h:
        configured = await LMStudioEngine().check(h.ctx(lms=str(elsewhere)))
        missing = await LMStudioEngine().check(h.ctx(lms=str(tmp_path / "nope" / "lms")))
    assert configured.available and configured.details["lms"] == str(elsewhere)
    assert not missing.available


@pytest.mark.asyncio
async def test_check_without_lms_or_server_says_why_and_how_to_install(
    fake_lms: FakeLMStudio, engine_harness: Any
) -> None:
    fake_lms.lms.unlink()
    async with engine_harness() as h:
        engine = LMStudioEngine()
        check = await engine.check(h.ctx())
        with pytest.raises(EngineUnavailable) as err:
            await engine.download(h.ctx(), res())
    assert not check.available and check.installable is False  # never installed by ltcai
    assert check.reason == (
        f"no LM Studio server answers at {fake_lms.url} and the `lms` CLI is not on PATH (nor in ~/.lmstudio/bin)"
    )
    assert check.install_hint == INSTALL_HINT and "https://lmstudio.ai/download" in INSTALL_HINT
    assert err.value.code == "engine_unavailable" and err.value.hint == INSTALL_HINT


@pytest.mark.asyncio
async def test_lms_in_lmstudios_own_bin_folder_is_found(fake_lms: FakeLMStudio, engine_harness: Any, tmp_path: Path) -> None:
    fake_lms.lms.unlink()
    bundled = install_script(tmp_path / "home" / ".lmstudio" / "bin", "lms", FAKE_LMS)
    async with engine_harness() as h:
        check = await LMStudioEngine().check(h.ctx())
    assert check.available and check.details["lms"] == str(bundled)


# ------------------------------------------------------------------------------- download


@pytest.mark.asyncio
async def test_lms_get_progress_bar_becomes_byte_progress(fake_lms: FakeLMStudio, engine_harness: Any) -> None:
    async with engine_harness() as h:
        result = await LMStudioEngine().download(h.ctx(), res())
    assert result is not None
    assert (result.path, result.downloaded, result.bytes, result.source) == (KEY, True, SIZE, "lmstudio")
    assert fake_lms.calls("get") == [["get", KEY, "--yes"]]
    reports = h.progress.measured("B")
    assert len(reports) >= 8  # one per bar refresh
    dones = [r.done for r in reports]
    assert dones == sorted(dones) and {r.total for r in reports} == {SIZE}
    assert reports[-1].done == SIZE
    # The bar's cursor save/restore and hide/show escapes, even split across reads, never leak.
    assert not [m for m in h.progress.messages if "\x1b" in m or "[s" in m or "?25" in m]
    assert f"lms get {KEY}: Finalizing download..." in h.progress.messages


@pytest.mark.asyncio
async def test_a_model_lms_ls_lists_is_not_downloaded_again(fake_lms: FakeLMStudio, engine_harness: Any) -> None:
    fake_lms.download(downloaded())
    async with engine_harness() as h:
        by_key = await LMStudioEngine().download(h.ctx(), res())
        by_repo = await LMStudioEngine().download(h.ctx(), res("lmstudio-community/Qwen2.5-0.5B-Instruct-GGUF"))
    assert by_key is not None and by_key.downloaded is False and by_key.path == KEY
    assert by_repo is not None and by_repo.downloaded is False and by_repo.path == KEY
    assert fake_lms.calls("get") == []
    assert fake_lms.calls("ls") == [["ls", "--json"], ["ls", "--json"]]


@pytest.mark.asyncio
async def test_lms_get_of_an_unknown_model_is_model_not_found(fake_lms: FakeLMStudio, engine_harness: Any) -> None:
    async with engine_harness() as h:
        with pytest.raises(DownloadError) as err:
            await LMStudioEngine().download(h.ctx(), res("no-such-model-7b"))
    assert err.value.code == "model_not_found"
    assert "LM Studio found no model no-such-model-7b" in err.value.message
    assert "No models found with the specified search criteria." in (err.value.hint or "")


@pytest.mark.asyncio
async def test_lms_get_losing_the_network_is_a_network_error(fake_lms: FakeLMStudio, engine_harness: Any) -> None:
    fake_lms.change(fail={"get": "network"})
    async with engine_harness() as h:
        with pytest.raises(DownloadError) as err:
            await LMStudioEngine().download(h.ctx(), res())
    assert err.value.code == "network_error"
    assert "ECONNRESET" in (err.value.hint or "")
    assert fake_lms.state()["downloaded"] == []
    assert h.progress.measured("B")[-1].done < SIZE


# ---------------------------------------------------------------------------------- serve


@pytest.mark.asyncio
async def test_serve_starts_lmstudios_server_when_none_answers_and_reuses_a_running_one(
    fake_lms: FakeLMStudio, engine_harness: Any
) -> None:
    async with engine_harness() as h:
        engine = LMStudioEngine()
        served = await _served(engine, h)
        again = await _served(engine, h)
    assert fake_lms.calls("server") == [["server", "start", "--port", str(fake_lms.port)]]  # once
    assert server_running(fake_lms.state())
    assert served.base_url == again.base_url == fake_lms.url + "/v1"
    assert served.process is None  # LM Studio's server, never stopped by ltcai
    assert served.model == KEY and served.artifact_path == KEY
    assert not h.supervisor.processes


@pytest.mark.asyncio
async def test_a_server_that_will_not_start_fails_with_what_lms_said(fake_lms: FakeLMStudio, engine_harness: Any) -> None:
    fake_lms.change(fail={"server_start": True})
    async with engine_harness() as h:
        with pytest.raises(ServerStartError) as err:
            await _served(LMStudioEngine(), h)
    assert "`lms server start` failed (exit 1)" in err.value.message
    assert "EADDRINUSE" in (err.value.hint or "") and "lms daemon up" in (err.value.hint or "")


# ----------------------------------------------------------------------------------- load


@pytest.mark.asyncio
async def test_load_asks_for_the_identifier_and_it_becomes_the_current_id(fake_lms: FakeLMStudio, engine_harness: Any) -> None:
    fake_lms.download(downloaded())
    options = {"ttl": 600, "context_length": 8192, "gpu": "max"}
    async with engine_harness() as h:
        engine = LMStudioEngine()
        served = await _served(engine, h, **options)
        result = await engine.load(h.ctx(**options), served)
    assert fake_lms.calls("load") == [
        ["load", KEY, "--identifier", KEY, "--yes", "--ttl", "600", "--context-length", "8192", "--gpu", "max"]
    ]
    assert result is not None and result.loaded and result.current_id == KEY
    assert result.message == f"loaded {KEY} in LM Studio as {KEY}"
    loaded = fake_lms.state()["loaded"]
    assert [(i["identifier"], i["ttlMs"], i["contextLength"]) for i in loaded] == [(KEY, 600_000, 8192)]


@pytest.mark.asyncio
async def test_a_taken_identifier_gets_lmstudios_numbered_id_which_flows_into_resolution_and_chat(
    fake_lms: FakeLMStudio, engine_harness: Any
) -> None:
    """Another model holds ``KEY`` (loaded by hand): LM Studio names ours ``KEY:2``."""
    fake_lms.download(downloaded())
    fake_lms.change(loaded=[instance(OTHER, KEY)])
    resolution = res(f"lmstudio:{KEY}")
    async with engine_harness() as h:
        engine = LMStudioEngine()
        served = await _served(engine, h)
        result = await engine.load(h.ctx(), served)
        request = ChatRequest([{"role": "user", "content": "한국어로 한 문장만 답해. 2+2는?"}], {"max_tokens": 32})
        answer = await openai_client.chat_completion(h.chat, served, request)
        chunks = [c async for c in openai_client.stream_chat_completion(h.chat, served, request)]
    assert result is not None and result.current_id == f"{KEY}:2"
    assert served.model == f"{KEY}:2"  # chat talks to our instance, not the other model's
    after = resolution.with_loaded_id(result.current_id)
    assert after.resolved_model == f"{KEY}:2"
    assert after.load_id == after.expected_current == f"lmstudio:{KEY}:2"
    assert after.download_id == KEY and after.source == "engine"
    assert answer["model"] == f"{KEY}:2" and answer["choices"][0]["message"]["content"] == SMOKE_ANSWER
    assert "".join(c.content for c in chunks) == SMOKE_ANSWER
    assert fake_lms.calls("load") == [["load", KEY, "--identifier", KEY, "--yes"]]


@pytest.mark.asyncio
async def test_the_instance_id_is_found_from_lms_ps_when_load_does_not_print_it(fake_lms: FakeLMStudio, engine_harness: Any) -> None:
    fake_lms.download(downloaded())
    fake_lms.change(loaded=[instance(OTHER, KEY)], fail={"load_quiet": True})
    async with engine_harness() as h:
        engine = LMStudioEngine()
        served = await _served(engine, h)
        result = await engine.load(h.ctx(), served)
    assert result is not None and result.current_id == f"{KEY}:2"
    assert len(fake_lms.calls("ps")) == 2  # before and after the load


@pytest.mark.parametrize("identifier", [KEY, f"{KEY}:2"])
@pytest.mark.asyncio
async def test_an_instance_of_the_model_already_loaded_is_reused(
    fake_lms: FakeLMStudio, engine_harness: Any, identifier: str
) -> None:
    model = downloaded()
    fake_lms.download(model)
    fake_lms.change(loaded=[instance(OTHER, "llama"), instance(model, identifier)])
    async with engine_harness() as h:
        engine = LMStudioEngine()
        served = await _served(engine, h)
        result = await engine.load(h.ctx(), served)
    assert result is not None and result.current_id == identifier
    assert result.message == f"already loaded in LM Studio as {identifier}"
    assert served.model == identifier
    assert fake_lms.calls("load") == []  # no second instance, no second copy in memory


@pytest.mark.asyncio
async def test_loading_a_model_lm_studio_does_not_have_is_model_not_found(fake_lms: FakeLMStudio, engine_harness: Any) -> None:
    async with engine_harness() as h:
        engine = LMStudioEngine()
        served = await _served(engine, h)
        with pytest.raises(EngineError) as err:
            await engine.load(h.ctx(), served)
    assert err.value.code == "model_not_found"
    assert f"`lms load {KEY}` failed (exit 1)" in err.value.message
    assert "lms ls" in (err.value.hint or "")


@pytest.mark.asyncio
async def test_unload_frees_the_instance_and_tolerates_one_already_gone(fake_lms: FakeLMStudio, engine_harness: Any) -> None:
    fake_lms.download(downloaded())
    fake_lms.change(loaded=[instance(OTHER, KEY)])
    async with engine_harness() as h:
        engine = LMStudioEngine()
        served = await _served(engine, h)
        await engine.load(h.ctx(), served)
        await engine.unload(h.ctx(), served)
        remaining = [i["identifier"] for i in fake_lms.state()["loaded"]]
        await engine.unload(h.ctx(), served)  # a TTL expired, or the user unloaded it
    assert remaining == [KEY]  # the other model's instance is untouched
    assert fake_lms.calls("unload") == [["unload", f"{KEY}:2"], ["unload", f"{KEY}:2"]]


def test_lmstudio_registers_through_its_hook() -> None:
    registered: list[Any] = []
    lmstudio.ltcai_register_engines(register=registered.append)
    assert [type(a) for a in registered] == [LMStudioEngine] and registered[0].name == "lmstudio"


# ----------------------------------------------------------------- through a real daemon


def test_prepare_and_chat_through_a_real_daemon_with_the_instance_id(
    fake_lms: FakeLMStudio, bare_path: Path, start_daemon: Any
) -> None:
    """``ltcai serve`` → lms get, server start, load (``KEY:2``) → READY; chat by the user's id."""
    fake_lms.change(loaded=[instance(OTHER, KEY)])
    daemon = start_daemon(
        {
            "PATH": os.environ["PATH"],  # bare_path: the fake lms, no other engine
            "FAKE_LMS_STATE": str(fake_lms.state_path),
            "LMSTUDIO_HOST": f"127.0.0.1:{fake_lms.port}",
            "HOME": os.environ["HOME"],
        }
    )
    events = daemon.prepare(f"lmstudio:{KEY}", engine=None)
    report = events[-1]["report"]
    chat = daemon.client.post("/chat", json={"model": f"lmstudio:{KEY}", "prompt": "Hello?"})
    models = daemon.client.get("/models").json()["models"]
    unload = daemon.client.post("/models/unload", json={"model": f"lmstudio:{KEY}"})
    assert report["status"] == "ok" and report["ready_to_chat"] is True, report
    assert report["current"] == f"lmstudio:{KEY}:2"
    assert report["resolution"]["resolved_model"] == f"{KEY}:2" and report["resolution"]["download_id"] == KEY
    assert report["download_result"]["bytes"] == SIZE
    assert report["smoke_test"]["answer"] == SMOKE_ANSWER
    assert chat.status_code == 200, chat.text
    assert chat.json()["content"] == "Hello from the fake LM Studio."
    assert [(m["model"], m["current"], m["pid"]) for m in models] == [(f"{KEY}:2", f"lmstudio:{KEY}:2", None)]
    assert unload.status_code == 200, unload.text
    assert [i["identifier"] for i in fake_lms.state()["loaded"]] == [KEY]  # only the other model's


# ----------------------------------------------------------------------------------- live


@pytest.mark.live
@pytest.mark.asyncio
async def test_live_lmstudio_check(engine_harness: Any) -> None:
    """A real LM Studio (``lms`` on PATH or in ~/.lmstudio/bin): check reports its version."""
    engine = LMStudioEngine()
    async with engine_harness() as h:
        if engine._lms(h.ctx()) is None:
            pytest.skip("live LM Studio test: the `lms` CLI is not on PATH nor in ~/.lmstudio/bin")
        check = await engine.check(h.ctx())
    assert check.available and check.version, json.dumps(check.to_dict())
