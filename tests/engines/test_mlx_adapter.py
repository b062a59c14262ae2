"""The MLX adapter's own steps, against real interpreters and files (no server here).

The full path — install check, import, ``mlx_lm.server``, warm-up, smoke test — runs
for real in ``tests/e2e/test_mlx_e2e.py``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
import pytest
import pytest_asyncio

from ltcai.compat import default_engine, resolve
from ltcai.engines.base import EngineContext
from ltcai.engines.managed_venv import engine_python
from ltcai.engines.mlx import MlxEngine, imported_dir, install_packages
from ltcai.errors import DownloadError, InvalidRequest
from ltcai.plugins import DEFAULT_PLUGINS, build_plugin_host

_MODULE = "ltcai.engines.mlx"


def _resolution(model: str) -> SimpleNamespace:
    return SimpleNamespace(resolved_model=model, download_id=model)


@pytest_asyncio.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[Callable[..., EngineContext]]:
    """Contexts for check and download, which start no process (no supervisor needed)."""
    reports: list[str] = []
    async with httpx.AsyncClient() as http:

        def make(**options: Any) -> EngineContext:
            return EngineContext(
                options=options,
                models_dir=tmp_path / "models",
                engines_dir=tmp_path / "engines",
                logs_dir=tmp_path / "logs",
                spawn=None,  # type: ignore[arg-type]
                http=http,
                progress=lambda message, **_: reports.append(message),
                run_sync=anyio.to_thread.run_sync,
            )

        yield make


def test_install_adds_the_cpu_backend_only_off_macos() -> None:
    assert install_packages("Darwin") == ["mlx-lm"]
    assert install_packages("Linux") == ["mlx-lm", "mlx[cpu]"]


def test_the_engine_python_is_configured_then_managed_then_our_own(tmp_path: Path) -> None:
    assert engine_python("mlx", {"python": "/opt/py"}, tmp_path) == "/opt/py"
    assert engine_python("mlx", {}, tmp_path) == sys.executable
    managed = tmp_path / "mlx" / "bin" / "python"
    managed.parent.mkdir(parents=True)
    managed.touch()
    assert engine_python("mlx", {}, tmp_path) == str(managed)


def test_imported_folders_live_under_models_mlx_and_bad_names_are_refused(tmp_path: Path) -> None:
    assert imported_dir(tmp_path, "tiny") == tmp_path / "mlx" / "tiny"
    with pytest.raises(InvalidRequest):
        imported_dir(tmp_path, "../../etc")


@pytest.mark.asyncio
async def test_check_finds_mlx_lm_and_its_version_in_this_environment(ctx: Callable[..., EngineContext]) -> None:
    if importlib.util.find_spec("mlx_lm") is None:
        pytest.skip("mlx-lm is not installed here (scripts/setup-env --test installs it)")
    check = await MlxEngine().check(ctx())
    assert check.available, check.reason
    assert check.version == importlib.metadata.version("mlx-lm")
    assert check.details["mlx"] == importlib.metadata.version("mlx")
    assert check.details["python"] == sys.executable


@pytest.mark.asyncio
async def test_check_says_installable_for_a_managed_venv_without_mlx(ctx: Callable[..., EngineContext], tmp_path: Path) -> None:
    venv = tmp_path / "engines" / "mlx"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    check = await MlxEngine().check(ctx())
    configured = await MlxEngine().check(ctx(python=str(venv / "bin" / "python")))
    assert not check.available and check.installable
    assert "mlx-lm is not installed" in (check.reason or "") and "mlx-lm" in (check.install_hint or "")
    assert not configured.available and not configured.installable  # the user's Python is theirs


@pytest.mark.asyncio
async def test_download_accepts_an_mlx_folder_and_refuses_what_it_cannot_fetch(ctx: Callable[..., EngineContext], tmp_path: Path) -> None:
    folder = tmp_path / "my-mlx-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    local = await MlxEngine().download(ctx(), _resolution(str(folder)))
    with pytest.raises(DownloadError) as not_mlx:
        await MlxEngine().download(ctx(), _resolution(str(tmp_path)))
    with pytest.raises(DownloadError) as not_a_repo:
        await MlxEngine().download(ctx(), _resolution("just-a-name"))
    assert local is not None and local.source == "local" and local.path == str(folder) and local.bytes == 12
    assert not_mlx.value.code == not_a_repo.value.code == "model_not_found"


def test_smollm2_resolves_to_the_bundled_model_on_mlx_and_mlx_stays_the_apple_silicon_default() -> None:
    host = build_plugin_host(extra_modules=[] if _MODULE in DEFAULT_PLUGINS else [_MODULE], load_entry_points=False)
    hook = lambda model, engine: host.resolve_model(model_id=model, engine=engine)  # noqa: E731
    assert default_engine("Darwin", "arm64") == "mlx" and default_engine("Linux", "x86_64") == "llamacpp"
    mac = resolve("smollm2", alias_hook=hook, platform_default=default_engine("Darwin", "arm64"))
    assert (mac.engine, mac.resolved_model, mac.load_id) == ("mlx", "smollm2-135m-instruct-q4_1", "smollm2-135m-instruct-q4_1")
    linux = resolve("smollm2", alias_hook=hook, platform_default="llamacpp")
    assert (linux.engine, linux.resolved_model) == ("llamacpp", "smollm2-135m-instruct-q4_1")
    other = resolve("mlx-community/SmolLM2-135M-Instruct-8bit", "mlx", alias_hook=hook)
    assert other.resolved_model == "mlx-community/SmolLM2-135M-Instruct-8bit" and other.source == "input"


@pytest.mark.asyncio
async def test_the_bundled_gguf_is_imported_once_and_again_only_when_it_changed(
    ctx: Callable[..., EngineContext], tmp_path: Path
) -> None:
    if importlib.util.find_spec("mlx_lm") is None:
        pytest.skip("mlx-lm is not installed here (scripts/setup-env --test installs it)")
    engine = MlxEngine()
    resolution = _resolution("smollm2-135m-instruct-q4_1")
    first = await engine.download(ctx(), resolution)
    second = await engine.download(ctx(), resolution)
    assert first is not None and second is not None
    assert (first.downloaded, second.downloaded) == (True, False)
    assert first.source == second.source == "imported"
    assert first.path == second.path == str(tmp_path / "models" / "mlx" / "smollm2-135m-instruct-q4_1")
    assert "imported earlier" in second.message
    # A record of another source (as after the package was upgraded) means import again.
    record = Path(first.path) / "ltcai_import.json"
    record.write_text(record.read_text().replace('"source_size": ', '"source_size": 1'))
    third = await engine.download(ctx(), resolution)
    assert third is not None and third.downloaded is True
