"""GPU memory counted apart (issue 13 item 2): a FAKE ``nvidia-smi`` on PATH (this host has
no GPU) stands for NVIDIA's, printing what ``--query-gpu=memory.total,memory.used
--format=csv,noheader,nounits`` prints. A llama.cpp model with ``n_gpu_layers`` counts
its weights and KV cache against ``gpu_memory_budget``, its overhead against RAM; the
REAL SmolLM2 header sizes it."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import anyio
import pytest

from ltcai.config.paths import default_paths
from ltcai.config.settings import Settings, load_settings
from ltcai.config.units import MemoryBudget, format_bytes
from ltcai.daemon import gpu
from ltcai.daemon.gpu import GpuMemory, gpu_memory
from ltcai.daemon.lifecycle import Lifecycle
from ltcai.daemon.memory import ENGINE_OVERHEAD_BYTES, estimate_need
from ltcai.daemon.metrics import Metrics
from ltcai.daemon.models import ModelRegistry
from ltcai.engines.base import DownloadResult
from ltcai.errors import InvalidRequest, ServerStartError
from tests.engines.test_gguf_metadata import smollm2_path  # noqa: F401 — the real file, as a fixture

_MiB = 1 << 20
_OVERHEAD = ENGINE_OVERHEAD_BYTES["llamacpp"]


@pytest.fixture
def nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install a fake nvidia-smi that prints ``output`` (and exits ``code``); no cached reading."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(gpu, "_cache", None)

    def install(output: str, code: int = 0) -> Path:
        script = folder / "nvidia-smi"
        script.write_text(f"#!/bin/sh\necho \"$@\" > {folder}/args\nprintf '{output}'\nexit {code}\n")
        script.chmod(0o755)
        monkeypatch.setattr(gpu, "_cache", None)
        return folder / "args"

    return install


@pytest.mark.asyncio
async def test_nvidia_smi_is_read_per_gpu_and_summed_and_cached(nvidia_smi) -> None:
    args = nvidia_smi("24576, 1024\n24576, 512\n")
    assert await gpu_memory() == GpuMemory(total=48 << 30, used=1536 * _MiB, gpus=2)
    assert args.read_text().split() == ["--query-gpu=memory.total,memory.used", "--format=csv,noheader,nounits"]
    args.unlink()
    assert await gpu_memory() == GpuMemory(total=48 << 30, used=1536 * _MiB, gpus=2)
    assert not args.exists()  # cached: nvidia-smi was not run again
    assert (await gpu_memory(max_age_s=0)) is not None and args.exists()


@pytest.mark.asyncio
@pytest.mark.parametrize(("output", "code"), [("", 9), ("[N/A], [N/A]\n", 0), ("", 0)])
async def test_no_answer_from_nvidia_smi_means_no_gpu_budget(nvidia_smi, output: str, code: int) -> None:
    nvidia_smi(output, code)
    assert await gpu_memory() is None


@pytest.mark.asyncio
async def test_without_nvidia_smi_there_is_no_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(gpu, "_cache", None)
    assert await gpu_memory() is None


def test_gpu_memory_budget_from_the_file_and_the_environment(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('gpu_memory_budget = "20GiB"\n')
    env = {"LTCAI_CONFIG_DIR": str(tmp_path), "LTCAI_DATA_DIR": str(tmp_path / "d")}
    assert load_settings(env).gpu_memory_budget == MemoryBudget(fixed_bytes=20 << 30)
    assert load_settings({**env, "LTCAI_GPU_MEMORY_BUDGET": "75%"}).gpu_memory_budget == MemoryBudget(share=0.75)
    assert Settings(paths=default_paths(env)).gpu_memory_budget == MemoryBudget(share=0.9)
    (tmp_path / "config.toml").write_text('gpu_memory_budget = "120%"\n')
    with pytest.raises(InvalidRequest) as bad:
        load_settings(env)
    assert bad.value.code == "invalid_config" and "gpu_memory_budget '120%' is not valid" in bad.value.message


def _download(path: Path) -> DownloadResult:
    return DownloadResult(path=str(path), downloaded=False, bytes=path.stat().st_size)


@pytest.mark.asyncio
async def test_offloaded_layers_are_the_gpus_share_of_the_estimate(smollm2_path: Path) -> None:
    size = smollm2_path.stat().st_size
    kv = 23040 * 4096
    full = await estimate_need("llamacpp", _download(smollm2_path), {"n_gpu_layers": -1}, gpu=True)
    assert full is not None and (full.gpu, full.ram) == (size + kv, _OVERHEAD)
    half = await estimate_need("llamacpp", _download(smollm2_path), {"n_gpu_layers": 15}, gpu=True)  # 15 of 30 layers
    assert half is not None and half.gpu == (size + kv) // 2 and half.ram == half.total - half.gpu
    for options, on_gpu in (({}, True), ({"n_gpu_layers": 0}, True), ({"n_gpu_layers": -1}, False)):
        none = await estimate_need("llamacpp", _download(smollm2_path), options, gpu=on_gpu)
        assert none is not None and (none.gpu, none.ram) == (0, none.total)  # no GPU, or nothing offloaded


def _lifecycle(tmp_path: Path, ram: int, gpu_budget: MemoryBudget) -> Lifecycle:
    settings = Settings(paths=default_paths({"LTCAI_DATA_DIR": str(tmp_path), "LTCAI_CONFIG_DIR": str(tmp_path)}),
                        memory_budget=MemoryBudget(fixed_bytes=ram), gpu_memory_budget=gpu_budget)  # fmt: skip
    return Lifecycle(SimpleNamespace(settings=settings, models=ModelRegistry(), metrics=Metrics()))  # type: ignore[arg-type]


def _job() -> SimpleNamespace:
    resolution = SimpleNamespace(engine="llamacpp", resolved_model="smollm2-135m", input_id="smollm2")
    return SimpleNamespace(id="job-1", resolution=resolution, done=anyio.Event())


@pytest.mark.asyncio
async def test_an_offloaded_model_fits_a_small_ram_budget_and_is_counted_on_the_gpu(
    nvidia_smi, smollm2_path: Path, tmp_path: Path
) -> None:
    nvidia_smi("1024, 100\n")  # a 1 GiB GPU: the budget "50%" is 512 MiB
    lifecycle = _lifecycle(tmp_path, ram=_OVERHEAD + 1, gpu_budget=MemoryBudget(share=0.5))
    with pytest.raises(ServerStartError) as in_ram:  # not offloaded: weights and KV cache in RAM
        await lifecycle.make_room(_job(), _download(smollm2_path), {"n_ctx": 4096}, 1)  # type: ignore[arg-type]
    assert "memory budget" in in_ram.value.message and "GPU" not in in_ram.value.message
    chosen = await lifecycle.make_room(_job(), _download(smollm2_path), {"n_ctx": 4096, "n_gpu_layers": -1}, 1)  # type: ignore[arg-type]
    assert chosen is not None and chosen.context_tokens == 4096 and chosen.context_note is None
    assert (lifecycle.used_bytes(), lifecycle.gpu_used_bytes()) == (_OVERHEAD, chosen.gpu)
    summary = lifecycle.summary([])
    assert summary["gpu_memory_budget"] == 512 * _MiB and summary["gpu_memory_budget_setting"] == "50% of GPU memory"
    assert (summary["gpu_memory_used_estimated"], summary["gpu_total_memory"], summary["gpu_memory_used"]) == (chosen.gpu, 1 << 30, 100 * _MiB)


@pytest.mark.asyncio
async def test_a_gpu_budget_too_small_for_the_context_shrinks_it_or_refuses_with_gpu_numbers(
    nvidia_smi, smollm2_path: Path, tmp_path: Path
) -> None:
    nvidia_smi("81559, 0\n")
    options = {"n_ctx": 4096, "n_gpu_layers": -1}
    at_2816 = await estimate_need("llamacpp", _download(smollm2_path), {**options, "n_ctx": 2816}, 4, gpu=True)
    assert at_2816 is not None
    budget = at_2816.gpu + 1000
    lifecycle = _lifecycle(tmp_path, ram=1 << 40, gpu_budget=MemoryBudget(fixed_bytes=budget))
    chosen = await lifecycle.make_room(_job(), _download(smollm2_path), options, 4)  # type: ignore[arg-type]
    assert chosen is not None and chosen.context_tokens == 2816
    assert chosen.context_note == f"4096 did not fit the {format_bytes(budget)} GPU memory budget"

    lifecycle = _lifecycle(tmp_path, ram=1 << 40, gpu_budget=MemoryBudget(fixed_bytes=at_2816.weights))
    with pytest.raises(ServerStartError) as refused:
        await lifecycle.make_room(_job(), _download(smollm2_path), options, 4)  # type: ignore[arg-type]
    assert refused.value.code == "not_enough_memory"
    assert "of GPU memory; " in refused.value.message and "GPU memory budget after unloading 0 idle models" in refused.value.message
    assert "; even at 2048 tokens per slot it needs " in refused.value.message and refused.value.message.endswith(" of GPU memory")
