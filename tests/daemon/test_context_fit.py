"""The context that fits the memory budget (issue 13 item 3), on the REAL SmolLM2 header:
the arithmetic of :func:`memory.fit_context`, and ``Lifecycle.make_room`` choosing the
largest context per slot that fits, or refusing with the floor's need when none does."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import anyio
import pytest

from ltcai.config.paths import default_paths
from ltcai.config.settings import Settings
from ltcai.config.units import MemoryBudget, format_bytes
from ltcai.daemon import memory
from ltcai.daemon.lifecycle import Lifecycle
from ltcai.daemon.memory import CONTEXT_FLOOR_TOKENS, CONTEXT_STEP, estimate_need, fit_context
from ltcai.daemon.metrics import Metrics
from ltcai.daemon.models import ModelRegistry
from ltcai.engines.base import DownloadResult
from ltcai.errors import ServerStartError
from tests.engines.test_gguf_metadata import smollm2_path  # noqa: F401 — the real file, as a fixture

_PER_TOKEN = 30 * 3 * (64 + 64) * 2  # SmolLM2's KV cache per token (f16), from its header
_SLOTS = 4


def _download(path: Path) -> DownloadResult:
    return DownloadResult(path=str(path), downloaded=False, bytes=path.stat().st_size)


async def _estimate(path: Path, n_ctx: int, slots: int = _SLOTS) -> memory.MemoryEstimate:
    estimate = await estimate_need("llamacpp", _download(path), {"n_ctx": n_ctx}, slots)
    assert estimate is not None
    return estimate


@pytest.mark.asyncio
async def test_fit_context_is_the_largest_multiple_of_256_that_fits_never_below_the_floor(smollm2_path: Path):
    full = await _estimate(smollm2_path, 4096)
    assert (full.kv_bytes_per_token, full.trained_context, full.context_tokens) == (_PER_TOKEN, 8192, 4096)
    at_2816 = (await _estimate(smollm2_path, 2816)).total
    assert fit_context(full, full.total) == 4096  # it fits as configured: no change
    assert fit_context(full, at_2816) == 2816
    assert fit_context(full, at_2816 + _SLOTS * _PER_TOKEN * (CONTEXT_STEP - 1)) == 2816  # rounded down to 256
    floor = (await _estimate(smollm2_path, CONTEXT_FLOOR_TOKENS)).total
    assert fit_context(full, floor) == CONTEXT_FLOOR_TOKENS
    assert fit_context(full, floor - 1) is None  # below the floor: refused, not shrunk further
    # A configured context under the floor is its own floor: never grown, never shrunk.
    small = await _estimate(smollm2_path, 1024)
    assert fit_context(small, small.total) == 1024 and fit_context(small, small.total - 1) is None
    # Nothing known about the KV cache (not a GGUF): nothing to shrink.
    assert fit_context(memory.MemoryEstimate(weights=10, kv_cache=0, overhead=10), 1) is None


def _lifecycle(tmp_path: Path, budget: int) -> Lifecycle:
    settings = Settings(paths=default_paths({"LTCAI_DATA_DIR": str(tmp_path), "LTCAI_CONFIG_DIR": str(tmp_path)}),
                        memory_budget=MemoryBudget(fixed_bytes=budget))  # fmt: skip
    return Lifecycle(SimpleNamespace(settings=settings, models=ModelRegistry(), metrics=Metrics()))  # type: ignore[arg-type]


def _job() -> SimpleNamespace:
    resolution = SimpleNamespace(engine="llamacpp", resolved_model="smollm2-135m", input_id="smollm2")
    return SimpleNamespace(id="job-1", resolution=resolution, done=anyio.Event())


@pytest.mark.asyncio
async def test_make_room_chooses_the_largest_context_that_fits_the_budget_and_says_why(smollm2_path: Path, tmp_path: Path):
    budget = (await _estimate(smollm2_path, 2816)).total + 1000
    lifecycle = _lifecycle(tmp_path, budget)
    chosen = await lifecycle.make_room(_job(), _download(smollm2_path), {"n_ctx": 4096}, _SLOTS)  # type: ignore[arg-type]
    assert chosen is not None and chosen.context_tokens == 2816
    assert chosen.kv_cache == _PER_TOKEN * 2816 * _SLOTS and chosen.total <= budget
    assert chosen.context_note == f"4096 did not fit the {format_bytes(budget)} memory budget"
    assert chosen.to_dict()["context_note"] == chosen.context_note
    assert lifecycle.used_bytes() == chosen.total  # reserved at the size it will really have


@pytest.mark.asyncio
async def test_make_room_keeps_the_configured_context_when_it_fits(smollm2_path: Path, tmp_path: Path):
    full = await _estimate(smollm2_path, 4096)
    lifecycle = _lifecycle(tmp_path, full.total)
    chosen = await lifecycle.make_room(_job(), _download(smollm2_path), {"n_ctx": 4096}, _SLOTS)  # type: ignore[arg-type]
    assert chosen is not None and (chosen.context_tokens, chosen.context_note) == (4096, None)


@pytest.mark.asyncio
async def test_when_even_the_floor_does_not_fit_the_refusal_gives_both_needs(smollm2_path: Path, tmp_path: Path):
    floor = await _estimate(smollm2_path, CONTEXT_FLOOR_TOKENS)
    lifecycle = _lifecycle(tmp_path, floor.total - 1)
    with pytest.raises(ServerStartError) as refused:
        await lifecycle.make_room(_job(), _download(smollm2_path), {"n_ctx": 4096}, _SLOTS)  # type: ignore[arg-type]
    assert refused.value.code == "not_enough_memory"
    message = refused.value.message
    assert message.startswith("smollm2 needs ") and "memory budget after unloading 0 idle models; 0 busy" in message
    assert message.endswith(f"; even at {CONTEXT_FLOOR_TOKENS} tokens per slot it needs {format_bytes(floor.total)}")
    assert lifecycle.used_bytes() == 0  # nothing reserved
