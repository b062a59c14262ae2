"""The vLLM engine adapter, as CONTRACT tests against a LOOPBACK FAKE of vLLM's server.

vLLM needs a GPU and several GB of wheels, so the server here is ``tests/fakes/fake_vllm_server.py``:
a stdlib script that follows vLLM's published OpenAI-compatible server API
(https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html — ``/health``,
``/v1/models``, ``/v1/chat/completions``) and takes vLLM's command line. It is spawned
as a REAL subprocess through the daemon's real ``Supervisor``, in place of vLLM, through
the adapter's ``[engines.vllm] command`` option; it records the argv it received, so the
tests check every passed-through option reached the server with vLLM's flag name.

``test_live_vllm_*`` (marked ``live``) run the real vLLM when it is importable and the
host has a GPU, and say which of the two is missing when they skip.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from ltcai.compat import Resolution, resolve
from ltcai.engines import openai_client, vllm
from ltcai.engines.base import ChatRequest, DownloadResult, EngineContext
from ltcai.engines.vllm import NO_ACCELERATOR, PASSTHROUGH_FLAGS, VllmEngine, detect_accelerator
from ltcai.errors import DownloadError, InvalidRequest, ServerStartError

FAKE_SERVER = Path(__file__).resolve().parents[1] / "fakes" / "fake_vllm_server.py"
FAKE_COMMAND = [sys.executable, str(FAKE_SERVER)]
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


def gpu() -> str:
    return "NVIDIA GPU"


def no_gpu() -> None:
    return None


def resolution(model: str = MODEL) -> Resolution:
    return resolve(model, "vllm")


def fake_options(tmp: Path, **options: Any) -> dict[str, Any]:
    """Options that run the fake in place of vLLM and make it record its argv."""
    env = {"FAKE_VLLM_RECORD": str(tmp / "argv.json"), **options.pop("env", {})}
    return {"command": FAKE_COMMAND, "env": env, **options}


def recorded_argv(tmp: Path) -> list[str]:
    return json.loads((tmp / "argv.json").read_text())["argv"]


def flag_value(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, f"{flag} given {argv.count(flag)} times in {argv}"
    return argv[argv.index(flag) + 1]


# ------------------------------------------------------------------------------ check


@pytest.mark.asyncio
async def test_check_without_accelerator_says_so_and_is_not_installable(tmp_path: Path, engine_harness: Any) -> None:
    async with engine_harness() as h:
        check = await VllmEngine(accelerator=no_gpu).check(h.ctx())
    assert not check.available
    assert check.reason == NO_ACCELERATOR
    assert "no supported accelerator on this host (vLLM needs an NVIDIA/AMD GPU or a CPU build)" in check.reason
    assert check.installable is False
    assert "allow_cpu = true" in (check.install_hint or "")
    assert check.details["accelerator"] is None


@pytest.mark.asyncio
async def test_check_allow_cpu_makes_a_missing_vllm_installable(tmp_path: Path, engine_harness: Any) -> None:
    async with engine_harness() as h:
        check = await VllmEngine(accelerator=no_gpu).check(h.ctx(allow_cpu=True))
    # This interpreter has no vLLM; the managed venv does not exist.
    assert importlib.util.find_spec("vllm") is None
    assert not check.available
    assert check.reason == f"vLLM is not installed for {sys.executable}"
    assert check.installable is True
    assert 'pip install "vllm"' in (check.install_hint or "")


@pytest.mark.asyncio
async def test_check_on_a_gpu_host_without_vllm_is_installable(tmp_path: Path, engine_harness: Any) -> None:
    async with engine_harness() as h:
        check = await VllmEngine(accelerator=gpu).check(h.ctx())
    assert not check.available and check.installable
    assert check.details["accelerator"] == "NVIDIA GPU"


@pytest.mark.asyncio
async def test_check_a_configured_python_is_the_users_to_install_into(tmp_path: Path, engine_harness: Any) -> None:
    async with engine_harness() as h:
        check = await VllmEngine(accelerator=gpu).check(h.ctx(python=sys.executable))
        broken = await VllmEngine(accelerator=gpu).check(h.ctx(python=str(tmp_path / "nope" / "python")))
    assert not check.available and not check.installable
    assert check.install_hint == f'{sys.executable} -m pip install "vllm"'
    assert not broken.available and "cannot run" in (broken.reason or "")


@pytest.mark.asyncio
async def test_check_with_a_command_needs_its_executable(tmp_path: Path, engine_harness: Any) -> None:
    async with engine_harness() as h:
        ok = await VllmEngine(accelerator=gpu).check(h.ctx(command=FAKE_COMMAND))
        missing = await VllmEngine(accelerator=gpu).check(h.ctx(command=["no-such-vllm-binary", "serve"]))
        bad = VllmEngine(accelerator=gpu).check(h.ctx(command="vllm serve"))
        with pytest.raises(InvalidRequest, match="must be a list of strings"):
            await bad
    assert ok.available and ok.details["command"] == FAKE_COMMAND
    assert not missing.available and "'no-such-vllm-binary' was not found" in (missing.reason or "")


def test_detect_accelerator_matches_this_host() -> None:
    has_device = any(
        Path(p).exists() for p in ("/dev/nvidia0", "/proc/driver/nvidia/version", "/dev/kfd")
    ) or any(shutil.which(tool) for tool in ("nvidia-smi", "rocm-smi", "amd-smi"))
    assert (detect_accelerator() is not None) == has_device


# --------------------------------------------------------------------------- download


@pytest.mark.asyncio
async def test_download_a_local_folder_is_used_as_is(tmp_path: Path, engine_harness: Any) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 100)
    local = Resolution(str(folder), "vllm", str(folder), str(folder), f"vllm:{folder}", f"vllm:{folder}")
    async with engine_harness() as h:
        result = await VllmEngine(accelerator=gpu).download(h.ctx(), local)
        missing = replace(local, resolved_model=str(tmp_path / "x"), download_id=str(tmp_path / "x"))
        with pytest.raises(DownloadError) as err:
            await VllmEngine(accelerator=gpu).download(h.ctx(), missing)
    assert result is not None
    assert (result.path, result.downloaded, result.source, result.bytes) == (str(folder), False, "local", 102)
    assert err.value.code == "model_not_found"


@pytest.mark.asyncio
async def test_download_a_hub_id_goes_through_the_snapshot_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine_harness: Any) -> None:
    calls: list[tuple[str, Any, Any]] = []

    async def fake_snapshot(ctx: EngineContext, repo_id: str, *, allow_patterns: Any = None, revision: Any = None) -> DownloadResult:
        calls.append((repo_id, allow_patterns, revision))
        return DownloadResult(path="/snap", downloaded=True, source="hf")

    monkeypatch.setattr(vllm, "download_snapshot", fake_snapshot)
    async with engine_harness() as h:
        options = {"allow_patterns": ["*.json", "*.safetensors"], "revision": "main"}
        result = await VllmEngine(accelerator=gpu).download(h.ctx(**options), resolution())
    assert result is not None and result.path == "/snap"
    assert calls == [(MODEL, ["*.json", "*.safetensors"], "main")]


# ------------------------------------------------------------------------------ serve


@pytest.mark.asyncio
async def test_serve_passes_every_option_through_with_vllms_flag(tmp_path: Path, engine_harness: Any) -> None:
    options = fake_options(
        tmp_path,
        dtype="bfloat16",
        max_model_len=8192,
        gpu_memory_utilization=0.85,
        tensor_parallel_size=4,
        pipeline_parallel_size=2,
        distributed_executor_backend="ray",
        extra_args=["--enforce-eager", "--swap-space", "8"],
    )
    download = DownloadResult(path="/models/qwen", downloaded=True, source="hf")
    async with engine_harness() as h:
        served = await VllmEngine(accelerator=gpu).serve(h.ctx(**options), resolution(), download)
        try:
            argv = recorded_argv(tmp_path)
            assert served.process is not None and served.process.running
            models = (await h.http.get(served.base_url + "/models")).json()
        finally:
            await served.process.stop()
    assert argv[:2] == ["--model", "/models/qwen"]
    assert flag_value(argv, "--served-model-name") == MODEL
    assert flag_value(argv, "--host") == "127.0.0.1"
    assert flag_value(argv, "--port") == served.base_url.split(":")[-1].removesuffix("/v1")
    assert flag_value(argv, "--dtype") == "bfloat16"
    assert flag_value(argv, "--max-model-len") == "8192"
    assert flag_value(argv, "--gpu-memory-utilization") == "0.85"
    assert flag_value(argv, "--tensor-parallel-size") == "4"
    assert flag_value(argv, "--pipeline-parallel-size") == "2"
    assert flag_value(argv, "--distributed-executor-backend") == "ray"
    assert argv[-3:] == ["--enforce-eager", "--swap-space", "8"]
    assert {key for key, _ in PASSTHROUGH_FLAGS} <= set(options)
    assert served.engine == "vllm" and served.model == MODEL and served.artifact_path == "/models/qwen"
    assert [m["id"] for m in models["data"]] == [MODEL]
    assert any("vLLM server starting" in m for m in h.progress.messages)


@pytest.mark.asyncio
async def test_serve_without_options_passes_only_the_basics(tmp_path: Path, engine_harness: Any) -> None:
    async with engine_harness() as h:
        served = await VllmEngine(accelerator=gpu).serve(h.ctx(**fake_options(tmp_path)), resolution(), None)
        assert served.process is not None
        await served.process.stop()
    argv = recorded_argv(tmp_path)
    assert argv[:2] == ["--model", MODEL]  # no download: vLLM fetches the hub id itself
    assert [a for a in argv if a.startswith("--")] == ["--model", "--served-model-name", "--host", "--port"]


@pytest.mark.asyncio
async def test_served_model_name_option_is_the_id_chat_uses(tmp_path: Path, engine_harness: Any) -> None:
    options = fake_options(tmp_path, served_model_name="qwen-small", env={"FAKE_VLLM_ANSWER": "Four, that is 4."})
    async with engine_harness() as h:
        engine = VllmEngine(accelerator=gpu)
        served = await engine.serve(h.ctx(**options), resolution(), None)
        try:
            assert await engine.load(h.ctx(**options), served) is None  # loaded at start
            request = ChatRequest([{"role": "user", "content": "What is 2 + 2?"}], {"max_tokens": 16})
            answer = await openai_client.chat_completion(h.chat, served, request)
            chunks = [c async for c in openai_client.stream_chat_completion(h.chat, served, request)]
        finally:
            assert served.process is not None
            await engine.unload(h.ctx(**options), served)
        assert not served.process.running
    assert served.model == "qwen-small"
    assert flag_value(recorded_argv(tmp_path), "--served-model-name") == "qwen-small"
    assert answer["choices"][0]["message"]["content"] == "Four, that is 4."
    assert "".join(c.content for c in chunks) == "Four, that is 4."
    assert chunks[-1].finish_reason == "stop"


@pytest.mark.asyncio
async def test_readiness_waits_for_health_while_the_model_loads(tmp_path: Path, engine_harness: Any) -> None:
    options = fake_options(tmp_path, env={"FAKE_VLLM_LOAD_S": "0.5"})
    async with engine_harness() as h:
        started = anyio.current_time()
        served = await VllmEngine(accelerator=gpu).serve(h.ctx(**options), resolution(), None)
        waited = anyio.current_time() - started
        assert (await h.http.get(served.base_url.removesuffix("/v1") + "/health")).status_code == 200
        assert served.process is not None
        await served.process.stop()
    assert waited >= 0.5


@pytest.mark.asyncio
async def test_a_server_that_exits_at_start_fails_with_its_last_lines(tmp_path: Path, engine_harness: Any) -> None:
    options = fake_options(tmp_path, env={"FAKE_VLLM_EXIT_AT_START": "3"})
    async with engine_harness() as h:
        with pytest.raises(ServerStartError) as err:
            await VllmEngine(accelerator=gpu).serve(h.ctx(**options), resolution(), None)
        assert not h.supervisor.processes  # nothing left running
    assert "vLLM server exited with code 3 before it was ready" in err.value.message
    assert "CUDA out of memory while loading the model (fake)" in (err.value.hint or "")
    assert "EngineCore failed to start" in (err.value.hint or "")


@pytest.mark.asyncio
async def test_env_option_reaches_the_server_and_bad_values_are_config_errors(tmp_path: Path, engine_harness: Any) -> None:
    async with engine_harness() as h:
        engine = VllmEngine(accelerator=gpu)
        with pytest.raises(InvalidRequest) as err:
            await engine.serve(h.ctx(**fake_options(tmp_path, extra_args="--enforce-eager")), resolution(), None)
        assert err.value.code == "invalid_config"
        with pytest.raises(InvalidRequest, match="env must be a table"):
            await engine.serve(h.ctx(command=FAKE_COMMAND, env=["A=1"]), resolution(), None)
        assert not h.supervisor.processes


def test_vllm_registers_through_its_hook() -> None:
    registered: list[Any] = []
    vllm.ltcai_register_engines(register=registered.append)
    assert [type(a) for a in registered] == [VllmEngine] and registered[0].name == "vllm"


# ------------------------------------------------------------------------------- live


def _live_prerequisites() -> str | None:
    missing = []
    if importlib.util.find_spec("vllm") is None:
        missing.append("vllm is not importable")
    if detect_accelerator() is None:
        missing.append("no GPU on this host")
    return "; ".join(missing) or None


@pytest.mark.live
@pytest.mark.asyncio
async def test_live_vllm_check_download_serve_chat(tmp_path: Path, engine_harness: Any) -> None:
    """The real vLLM: check → download → serve → chat with a small model (LTCAI_VLLM_LIVE_MODEL)."""
    missing = _live_prerequisites()
    if missing:
        pytest.skip(f"live vLLM test: {missing}")
    model = os.environ.get("LTCAI_VLLM_LIVE_MODEL", MODEL)
    options = {"python": sys.executable, "max_model_len": 2048, "gpu_memory_utilization": 0.5}
    async with engine_harness() as h:
        engine = VllmEngine()
        check = await engine.check(h.ctx(**options))
        assert check.available, check.reason
        download = await engine.download(h.ctx(**options), resolution(model))
        served = await engine.serve(h.ctx(**options), resolution(model), download)
        try:
            request = ChatRequest([{"role": "user", "content": "What is 2 + 2?"}], {"max_tokens": 32})
            answer = await openai_client.chat_completion(h.chat, served, request, timeout=120)
        finally:
            await engine.unload(h.ctx(**options), served)
    assert answer["choices"][0]["message"]["content"].strip()
