"""Building llama-server: the real build path (cmake, ninja/make, install by rename) on a
FAKE llama.cpp source tree (``tests/fakes/llama_cpp_source``), so it runs in seconds.

What the real 12-minute build of the pinned source does is exercised by CI's set-up
(``scripts/build-llama-server``) and by every end-to-end test that then runs it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from ltcai.engines.llama_server_build import StepParser, install_dir, plan_build
from ltcai.engines.llamacpp import LlamaCppEngine
from ltcai.errors import EngineUnavailable

FAKE_SOURCE = Path(__file__).resolve().parents[1] / "fakes" / "llama_cpp_source"



@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the fake source, and a PATH on which no real llama-server is found."""
    copy = tmp_path / "llama.cpp"
    shutil.copytree(FAKE_SOURCE, copy)
    kept = [d for d in os.environ["PATH"].split(os.pathsep) if d and not (Path(d) / "llama-server").exists()]
    monkeypatch.setenv("PATH", os.pathsep.join(kept))
    for knob in ("FAKE_BUILD_BREAK", "FAKE_BUILD_SLEEP", "FAKE_BUILD_COUNTER"):
        monkeypatch.delenv(knob, raising=False)
    return copy


def _options(source: Path) -> dict[str, Any]:
    return {"source_dir": str(source), "server": "llama-server", "build_backend": "cpu"}


def _leftovers(engines_dir: Path) -> list[Path]:
    return sorted((engines_dir / "llamacpp").glob(".build-*"))


@pytest.mark.asyncio
async def test_install_builds_llama_server_with_step_progress_and_installs_it_whole(
    engine_harness: Callable[..., Any], source: Path
) -> None:
    engine = LlamaCppEngine()
    async with engine_harness() as h:
        ctx = h.ctx(**_options(source))
        before = await engine.check(ctx)
        assert not before.available and before.installable, before
        assert "ltcai engines install llamacpp" in (before.install_hint or "")

        result = await engine.install(ctx, before)
        after = await engine.check(ctx)

    assert result is not None and result.installed and result.version == "0.6.0-fake (fa4e123)"
    folder = install_dir(h.tmp / "engines", plan_build(_options(source)))
    assert (folder / "bin" / "llama-server").is_file() and (folder / "build.json").is_file()
    assert after.available and after.version == "0.6.0-fake (fa4e123)"
    assert after.details["origin"] == "ltcai build" and after.details["binary"] == str(folder / "bin" / "llama-server")
    steps = h.progress.measured("steps")
    assert steps, h.progress.messages  # cmake's [n/m] lines became progress
    assert [r.done for r in steps] == sorted(r.done for r in steps)
    assert steps[-1].done == steps[-1].total
    assert _leftovers(h.tmp / "engines") == []


@pytest.mark.asyncio
async def test_a_failed_build_fails_with_its_own_output_and_installs_nothing(
    engine_harness: Callable[..., Any], source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_BUILD_BREAK", "1")
    engine = LlamaCppEngine()
    async with engine_harness() as h:
        ctx = h.ctx(**_options(source))
        with pytest.raises(EngineUnavailable) as failure:
            await engine.install(ctx, await engine.check(ctx))
        after = await engine.check(ctx)
    assert failure.value.code == "engine_install_failed"
    assert "compiling" in failure.value.message
    assert "broken.c" in (failure.value.hint or "")  # the compiler's own words
    assert not after.available and after.installable  # a failed build never counts
    assert not install_dir(h.tmp / "engines", plan_build(_options(source))).exists()
    assert _leftovers(h.tmp / "engines") == []


@pytest.mark.asyncio
async def test_concurrent_installs_build_once(
    engine_harness: Callable[..., Any], source: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    counter = tmp_path / "builds.txt"
    monkeypatch.setenv("FAKE_BUILD_COUNTER", str(counter))
    monkeypatch.setenv("FAKE_BUILD_SLEEP", "1")
    engine = LlamaCppEngine()  # the daemon has one adapter object for every prepare
    results: list[Any] = []
    async with engine_harness() as h:
        ctx = h.ctx(**_options(source))
        check = await engine.check(ctx)

        async def install() -> None:
            results.append(await engine.install(ctx, check))

        async with anyio.create_task_group() as tg:
            tg.start_soon(install)
            tg.start_soon(install)
    assert counter.read_text().splitlines() == ["built"]
    assert len(results) == 2 and all(r.installed for r in results)
    assert sorted(r.message.split()[0] for r in results) == ["built", "found"]
    assert "another prepare" in " ".join(h.progress.messages)


@pytest.mark.asyncio
async def test_a_cancelled_build_leaves_no_process_and_no_install(
    engine_harness: Callable[..., Any], source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_BUILD_SLEEP", "60")
    engine = LlamaCppEngine()
    async with engine_harness() as h:
        ctx = h.ctx(**_options(source))
        check = await engine.check(ctx)
        with anyio.move_on_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(engine.install, ctx, check)
                while not any(m.startswith("compiling") for m in h.progress.messages):
                    await anyio.sleep(0.05)
                await anyio.sleep(0.5)  # inside the sleeping build step
                tg.cancel_scope.cancel()
        assert not h.supervisor.processes, "the build's processes must be stopped"
    assert not install_dir(h.tmp / "engines", plan_build(_options(source))).exists()
    assert _leftovers(h.tmp / "engines") == []


@pytest.mark.parametrize(
    ("line", "step"),
    [
        ("[12/206] Building CXX object src/llama.cpp.o", (12, 206)),
        ("[206/206] Linking CXX executable bin/llama-server", (206, 206)),
        ("[ 45%] Building C object ggml/src/ggml.c.o", (45, 100)),
        ("[100%] Built target llama-server", (100, 100)),
        ("-- Configuring done", None),
        ("In file included from [12/206]", None),
    ],
)
def test_build_steps_are_read_from_ninja_and_make(line: str, step: tuple[int, int] | None) -> None:
    assert StepParser().parse(line) == step
