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
from .base import EngineContext

__all__ = ["engine_python", "managed_python", "pip_install", "run_logged"]

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
