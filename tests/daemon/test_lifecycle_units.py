"""The lifecycle's parts alone: keep_alive/size/budget parsing and settings, the slots/queue
gate, and the memory estimate of the project's REAL GGUF models (their headers)."""

from __future__ import annotations

import math
from pathlib import Path

import anyio
import pytest

from ltcai.config.settings import load_settings
from ltcai.config.units import KEEP_FOREVER, MemoryBudget, format_bytes, parse_bytes, parse_keep_alive, parse_memory_budget
from ltcai.daemon.admission import Gate, TooBusy
from ltcai.daemon.memory import ENGINE_OVERHEAD_BYTES, estimate_need
from ltcai.engines.base import DownloadResult
from ltcai.engines.gguf_metadata import read_gguf_shape
from ltcai.errors import InvalidRequest
from tests.engines.test_gguf_metadata import smollm2_path  # noqa: F401 — the real file, as a fixture


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5m", 300), ("30s", 30), ("1h30m", 5400), ("1.5h", 5400), ("500ms", 0.5), (300, 300), (2.5, 2.5),
     ("300", 300), ("0", 0), (0, 0), ("-1", KEEP_FOREVER), (-1, KEEP_FOREVER), ("-5m", KEEP_FOREVER)],
)  # fmt: skip
def test_keep_alive_takes_ollamas_format(value, seconds):
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["", "soon", "5 minutes", "5mm", "m5", True, None, [5], "nan", math.nan])
def test_a_bad_keep_alive_is_refused_with_an_example(value):
    with pytest.raises(InvalidRequest) as caught:
        parse_keep_alive(value)
    assert "5m" in (caught.value.hint or "")


def test_sizes_and_budgets():
    assert parse_bytes("12GiB") == 12 << 30
    assert parse_bytes("512 MiB") == 512 << 20
    assert parse_bytes("1.5G") == 1_500_000_000
    assert parse_bytes(1024) == 1024
    assert parse_memory_budget("80%") == MemoryBudget(share=0.8)
    assert parse_memory_budget("80%").bytes_of(10 << 30) == 8 << 30
    assert parse_memory_budget("2GiB").bytes_of(10 << 30) == 2 << 30
    for bad in ("0%", "101%", "lots", "-1", "12 parsecs"):
        with pytest.raises(InvalidRequest):
            parse_memory_budget(bad)
    assert format_bytes(5.1 * (1 << 30)) == "5.1 GiB"
    assert format_bytes(312 << 20) == "312 MiB"


def test_lifecycle_settings_from_the_file_and_the_environment(tmp_path: Path):
    config = tmp_path / "c"
    config.mkdir()
    (config / "config.toml").write_text(
        'keep_alive = "10m"\nmax_loaded_models = 2\nmemory_budget = "4GiB"\nmax_queue = 3\n'
        '[models.smollm2]\nkeep_alive = -1\npin = true\n'
    )
    env = {"LTCAI_CONFIG_DIR": str(config), "LTCAI_DATA_DIR": str(tmp_path / "d")}
    settings = load_settings(env)
    assert (settings.keep_alive, settings.max_loaded_models, settings.max_queue) == (600, 2, 3)
    assert settings.memory_budget == MemoryBudget(fixed_bytes=4 << 30)
    assert settings.models == {"smollm2": {"keep_alive": KEEP_FOREVER, "pin": True}}
    env.update(LTCAI_KEEP_ALIVE="30s", LTCAI_MAX_LOADED_MODELS="1", LTCAI_MEMORY_BUDGET="50%", LTCAI_MAX_QUEUE="0")
    settings = load_settings(env)
    assert (settings.keep_alive, settings.max_loaded_models, settings.max_queue) == (30, 1, 0)
    assert settings.memory_budget == MemoryBudget(share=0.5)

    for bad in ('[models.x]\npinned = true\n', '[models.x]\npin = "yes"\n', 'max_queue = -1\n', 'keep_alive = "soon"\n'):
        (config / "config.toml").write_text(bad)
        with pytest.raises(InvalidRequest) as caught:
            load_settings({"LTCAI_CONFIG_DIR": str(config), "LTCAI_DATA_DIR": str(tmp_path / "d")})
        assert caught.value.code == "invalid_config"
        assert "config.toml" in caught.value.message


@pytest.mark.asyncio
async def test_the_gate_runs_slots_queues_first_come_first_served_and_refuses_past_the_queue():
    gate = Gate(slots=2, max_queue=2)
    order: list[str] = []
    await gate.acquire("m")
    await gate.acquire("m")
    assert (gate.running, gate.queued) == (2, 0)

    async def waiter(name: str) -> None:
        await gate.acquire("m")
        order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, "first")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter, "second")
        await anyio.wait_all_tasks_blocked()
        assert gate.queued == 2
        with pytest.raises(TooBusy) as refused:
            await gate.acquire("m")
        assert refused.value.http_status == 429 and refused.value.retry_after_s >= 1
        gate.release(0.5)
        gate.release(0.5)
    assert order == ["first", "second"]
    assert (gate.running, gate.queued) == (2, 0)


@pytest.mark.asyncio
async def test_a_waiter_that_is_cancelled_leaves_the_queue():
    gate = Gate(slots=1, max_queue=4)
    await gate.acquire("m")
    with anyio.move_on_after(0.05):
        await gate.acquire("m")
    assert (gate.running, gate.queued) == (1, 0)

    gate.release(None)
    assert (gate.running, gate.queued) == (0, 0)


def test_the_gguf_header_gives_the_kv_cache_shape(smollm2_path: Path):
    shape = read_gguf_shape(smollm2_path)
    assert (shape.architecture, shape.block_count, shape.head_count, shape.head_count_kv) == ("llama", 30, 9, 3)
    assert shape.embedding_length == 576 and shape.key_length is None  # head width = 576 / 9
    assert shape.kv_bytes_per_token() == 30 * 3 * (64 + 64) * 2


@pytest.mark.asyncio
async def test_the_estimate_of_a_gguf_is_weights_plus_kv_for_n_ctx_plus_overhead(smollm2_path: Path):
    size = smollm2_path.stat().st_size
    download = DownloadResult(path=str(smollm2_path), downloaded=False, bytes=size)
    estimate = await estimate_need("llamacpp", download, {"n_ctx": 2048})
    assert estimate is not None
    assert (estimate.weights, estimate.kv_cache, estimate.context_tokens) == (size, 23040 * 2048, 2048)
    assert estimate.total == size + 23040 * 2048 + ENGINE_OVERHEAD_BYTES["llamacpp"]
    default = await estimate_need("llamacpp", download, {})
    assert default is not None and default.context_tokens == 4096  # the engine's default n_ctx
    model_own = await estimate_need("llamacpp", download, {"n_ctx": 0})
    assert model_own is not None and model_own.context_tokens == 8192  # 0: the model's trained context

    assert await estimate_need("openai", None, {}) is None  # nothing of ours to count
    fake = await estimate_need("fake", DownloadResult(path=None, downloaded=True, bytes=1_000_000), {})
    assert fake is not None and (fake.weights, fake.kv_cache) == (1_000_000, 0)


@pytest.mark.asyncio
async def test_prepare_comments_say_each_step_and_keep_a_quiet_wait_alive(monkeypatch):
    """A stand-in job (the FAKE of a prepare): two state events, a silence, then done."""
    from types import SimpleNamespace

    from ltcai.daemon import in_flight

    monkeypatch.setattr(in_flight, "_KEEPALIVE_S", 0.05)
    changed = anyio.Event()
    job = SimpleNamespace(id="j1", machine=SimpleNamespace(model="m"), events=[], done=anyio.Event())

    async def wait_changed() -> None:
        await changed.wait()

    job.wait_changed = wait_changed
    comments: list[bytes] = []

    async def run_job() -> None:
        nonlocal changed
        job.events += [{"type": "state", "state": "downloading", "message": "get\nweights"}]
        changed.set()
        changed = anyio.Event()
        await anyio.sleep(0.2)  # silence: the stream still speaks
        job.events += [{"type": "report"}]
        job.done.set()
        changed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_job)
        async for comment in in_flight.prepare_comments(job):
            comments.append(comment)
    assert comments[0] == b": preparing m (j1) downloading: get weights\n\n"  # one line, always
    assert len(comments) >= 3 and all(c == b": preparing m (j1) still downloading: get weights\n\n" for c in comments[1:])
