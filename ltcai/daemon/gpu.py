"""GPU memory, where the host has NVIDIA GPUs: what ``nvidia-smi`` reports, read rarely.

A llama.cpp model that offloads its layers (``[engines.llamacpp] n_gpu_layers``) keeps
its weights and KV cache in GPU memory, not in RAM: the lifecycle counts that share
against ``gpu_memory_budget`` (a share of the GPUs' memory, or a size) instead of
``memory_budget``. On macOS there is no nvidia-smi: Apple silicon's memory is unified,
so everything stays in the one memory budget. Several GPUs count as one pool, as
llama.cpp splits the layers over all of them by default.

``nvidia-smi`` takes ~20–100 ms and is run in a child process (never on the event
loop), at most once per ``_TTL_S`` seconds.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass

import anyio
import structlog

__all__ = ["GpuMemory", "gpu_memory"]

log = structlog.get_logger(__name__)

_QUERY = ["--query-gpu=memory.total,memory.used", "--format=csv,noheader,nounits"]
_TTL_S = 10.0  # the total never changes; "used" in ltcai ps may be this old
_TIMEOUT_S = 5.0
_MiB = 1 << 20


@dataclass(frozen=True)
class GpuMemory:
    total: int  # bytes, all GPUs together
    used: int  # bytes in use now, by anyone (nvidia-smi's memory.used)
    gpus: int


_cache: tuple[float, GpuMemory | None] | None = None


def _parse(text: str) -> GpuMemory | None:
    """``nvidia-smi --format=csv,noheader,nounits``: one ``total, used`` line (MiB) per GPU."""
    total = used = gpus = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            total_mib, used_mib = (int(part.strip()) for part in line.split(","))
        except ValueError:
            return None  # "[N/A]" or an error text: nothing to count on
        total, used, gpus = total + total_mib * _MiB, used + used_mib * _MiB, gpus + 1
    return GpuMemory(total, used, gpus) if gpus else None


async def _read() -> GpuMemory | None:
    if sys.platform == "darwin":
        return None  # unified memory: one budget
    binary = await anyio.to_thread.run_sync(shutil.which, "nvidia-smi")
    if binary is None:
        return None
    try:
        with anyio.fail_after(_TIMEOUT_S):
            result = await anyio.run_process([binary, *_QUERY], check=False)
    except (OSError, TimeoutError) as exc:
        log.warning("nvidia-smi did not answer", error=str(exc) or type(exc).__name__)
        return None
    if result.returncode != 0:
        log.warning("nvidia-smi failed", code=result.returncode, stderr=result.stderr.decode(errors="replace")[:200])
        return None
    return _parse(result.stdout.decode(errors="replace"))


async def gpu_memory(max_age_s: float = _TTL_S) -> GpuMemory | None:
    """The NVIDIA GPUs' memory (None: none here, or nvidia-smi will not say), at most
    ``max_age_s`` old."""
    global _cache
    now = time.monotonic()
    if _cache is None or now - _cache[0] > max_age_s:
        _cache = (now, await _read())
    return _cache[1]
