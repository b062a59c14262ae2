"""Engines installed into a virtual environment that ltcai manages (``engines/<name>``).

The daemon never imports an engine; it runs the engine's Python. Installing into our
own venv keeps a 2 GB engine (vLLM, torch) out of the user's environments, and a
failed install out of ours.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from ..errors import EngineUnavailable
from .base import EngineAdapter, EngineCheck, EngineContext, InstallResult

__all__ = [
    "engine_python",
    "install_and_recheck",
    "managed_python",
    "pip_install",
    "recheck_after_install",
    "run_logged",
    "run_probe",
]

_TAIL = 20


def managed_python(ctx: EngineContext, engine: str) -> Path:
    return _venv_python(ctx.engines_dir, engine)


def _venv_python(engines_dir: Path, engine: str) -> Path:
    return engines_dir / engine / "bin" / "python"


def engine_python(engine: str, options: Mapping[str, Any], engines_dir: Path) -> str:
    """The interpreter that runs ``engine``: ``[engines.<engine>] python`` if configured,
    else our managed venv once it exists, else the daemon's own (where the README's
    set-up installs llama.cpp and, for the tests, MLX)."""
    configured = options.get("python")
    if configured:
        return str(configured)
    managed = _venv_python(engines_dir, engine)
    return str(managed) if managed.exists() else sys.executable


async def run_logged(ctx: EngineContext, argv: Sequence[str], what: str) -> None:
    """Run a set-up command, streaming its output as progress; fail with its last lines."""
    tail: list[str] = []
    async with await anyio.open_process(list(argv), stdout=-1, stderr=-2) as proc:  # stderr → stdout
        assert proc.stdout is not None
        pending = b""
        async for data in proc.stdout:
            pending += data
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").rstrip()
                if line:
                    tail = [*tail, line][-_TAIL:]
                    ctx.progress(line[:200])
        code = await proc.wait()
    if code != 0:
        raise EngineUnavailable(
            f"{what} failed (exit {code})",
            hint="last output:\n" + "\n".join(tail),
            code="engine_install_failed",
        )


async def pip_install(ctx: EngineContext, engine: str, packages: Sequence[str]) -> Path:
    """Create ``engines/<engine>`` if needed and pip install ``packages`` into it."""
    python = managed_python(ctx, engine)
    if not python.exists():
        venv = ctx.engines_dir / engine
        ctx.progress(f"creating a virtual environment in {venv}")
        await run_logged(ctx, [sys.executable, "-m", "venv", str(venv)], "creating the venv")
    ctx.progress(f"pip install {' '.join(packages)}")
    await run_logged(
        ctx, [str(python), "-m", "pip", "install", "--progress-bar", "off", *packages], f"pip install {' '.join(packages)}"
    )
    return python


async def run_probe(engine: str, python: str, script: str, *, details: dict[str, Any] | None = None) -> str | EngineCheck:
    """What ``python -c script`` prints — or, when that interpreter cannot run at all, the
    failed check that says so and names the setting that fixes it."""
    try:
        result = await anyio.run_process([python, "-c", script], check=False)
    except OSError as exc:
        return EngineCheck(
            available=False,
            reason=f"the engine's Python {python} cannot run: {exc}",
            install_hint=f"set [engines.{engine}] python in the config to a working interpreter",
            details=details or {},
        )
    return result.stdout.decode()


async def recheck_after_install(adapter: EngineAdapter, ctx: EngineContext, what: str) -> EngineCheck:
    """The engine's check once ``what`` is installed: an install that leaves the engine
    unusable fails here, with what the check says."""
    after = await adapter.check(ctx)
    if not after.available:
        raise EngineUnavailable(
            f"installed {what} but the check still fails: {after.reason}",
            hint=after.install_hint,
            code="engine_install_failed",
        )
    return after


async def install_and_recheck(
    adapter: EngineAdapter, ctx: EngineContext, packages: Sequence[str], what: str
) -> InstallResult:
    """pip install ``packages`` into the engine's managed venv, then check it again: an
    install that leaves the engine unusable fails here, with what the check says."""
    await pip_install(ctx, adapter.name, packages)
    after = await recheck_after_install(adapter, ctx, " ".join(packages))
    return InstallResult(installed=True, message=f"installed {what} {after.version}", version=after.version)
