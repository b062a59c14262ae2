"""Memory: what a model will need before its engine starts, what the machine has, what a process uses.

The estimate is what decides evictions, so it is made from the model's own files before
anything runs:

- a GGUF (llama.cpp): the weights are the file (mapped and touched whole), plus the KV
  cache the server allocates up front for its context, from the file's header — layers ×
  KV heads × (K width + V width) × 2 bytes (f16 cache) per token, × ``n_ctx`` tokens,
  × the server's slots (llama-server keeps one context per slot);
- other weights (an MLX or vLLM folder, a fake's byte count): their size on disk;
- plus the engine's own overhead (``ENGINE_OVERHEAD_BYTES``): the server process and its
  compute buffers. Measured for llama.cpp: llama_cpp.server with SmolLM2-135M at n_ctx
  4096, after a chat, holds 327 MiB RSS; the estimate is 343 MiB (93 MiB weights + 90 MiB
  KV cache + 160 MiB overhead). llama-server with 4 slots of 4096: 490–513 MiB RSS against
  an estimate of 613 MiB (93 + 4 × 90 + 160): its own overhead is smaller.

When the configured context does not fit the budget even after evicting what may be
evicted, the lifecycle asks :func:`fit_context` for the largest one that does: a smaller
context per slot, in steps of ``CONTEXT_STEP`` tokens, never below ``CONTEXT_FLOOR_TOKENS``.

Models whose memory is another program's (Ollama, LM Studio, a remote API: no engine
process of ltcai's) are not counted: there is nothing ltcai could evict to make room.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio

from .._lazy import import_off_loop
from ..engines.base import DownloadResult

__all__ = [
    "CONTEXT_FLOOR_TOKENS",
    "CONTEXT_STEP",
    "ENGINE_OVERHEAD_BYTES",
    "MemoryEstimate",
    "estimate_need",
    "fit_context",
    "process_rss",
    "total_memory",
]

_MiB = 1 << 20
# The server process and its working buffers, besides weights and KV cache.
ENGINE_OVERHEAD_BYTES: dict[str, int] = {"llamacpp": 160 * _MiB, "mlx": 400 * _MiB, "vllm": 1024 * _MiB}
_DEFAULT_OVERHEAD_BYTES = 64 * _MiB
# llama.cpp's context when [engines.llamacpp] n_ctx is not set (the engine's own default).
_DEFAULT_N_CTX = 4096
# The smallest context ltcai shrinks a model to so that it fits the budget: below ~2k
# tokens a chat model cannot hold a system prompt, a tool definition or two and a few
# turns, so a smaller context would load a model that fails most real requests — better
# to refuse with not_enough_memory. A model trained for less keeps its own (smaller) one.
CONTEXT_FLOOR_TOKENS = 2048
# A shrunk context is a multiple of this: llama.cpp pads its KV cache to 256 cells, and
# round numbers read better in reports than 2831.
CONTEXT_STEP = 256


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    overhead: int
    context_tokens: int | None = None  # what the KV cache was sized for, per sequence
    sequences: int = 1  # how many such contexts (slots)
    kv_bytes_per_token: int = 0  # one token of one sequence's KV cache (0: not known)
    trained_context: int | None = None  # the model's own, from its header
    context_note: str | None = None  # why context_tokens is below what was configured
    # The share of the weights and KV cache offloaded to the GPU (llama.cpp's n_gpu_layers
    # over the model's layers; 0 without a GPU): counted against the GPU budget, not RAM.
    gpu_share: float = 0.0

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead

    @property
    def gpu(self) -> int:
        """Bytes in GPU memory."""
        return int((self.weights + self.kv_cache) * self.gpu_share)

    @property
    def ram(self) -> int:
        """Bytes in RAM: the engine's overhead and what is not offloaded."""
        return self.total - self.gpu

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "weights": self.weights,
            "kv_cache": self.kv_cache,
            "overhead": self.overhead,
            "context_tokens": self.context_tokens,
            "sequences": self.sequences,
            "context_note": self.context_note,
            "gpu": self.gpu,
        }

    def fits(self, room: int | None, gpu_room: int | None) -> bool:
        return (room is None or self.ram <= room) and (gpu_room is None or self.gpu <= gpu_room)

    def with_context(self, tokens: int, note: str) -> MemoryEstimate:
        """The same model with a KV cache of ``tokens`` per sequence, and why."""
        kv_cache = self.kv_bytes_per_token * tokens * self.sequences
        return replace(self, kv_cache=kv_cache, context_tokens=tokens, context_note=note)


def context_floor(estimate: MemoryEstimate) -> int:
    """The smallest context :func:`fit_context` may choose for this model."""
    limits = [CONTEXT_FLOOR_TOKENS, estimate.trained_context, estimate.context_tokens]
    return min(v for v in limits if v)


def fit_context(estimate: MemoryEstimate, room: int | None, gpu_room: int | None = None) -> int | None:
    """The largest context per sequence (a multiple of ``CONTEXT_STEP``, or the floor)
    whose estimate fits in ``room`` bytes of RAM and ``gpu_room`` of GPU memory (None: no
    limit there); None when even the floor does not, or when the KV cache's size per
    token is not known (nothing to shrink)."""
    if not estimate.kv_bytes_per_token or not estimate.context_tokens:
        return None
    per_token = estimate.kv_bytes_per_token * estimate.sequences
    share = estimate.gpu_share
    limits = [estimate.context_tokens]
    if room is not None and share < 1:
        limits.append(int((room - estimate.overhead - estimate.weights * (1 - share)) / (per_token * (1 - share))))
    if gpu_room is not None and share > 0:
        limits.append(int((gpu_room - estimate.weights * share) / (per_token * share)))
    if estimate.fits(room, gpu_room):
        return estimate.context_tokens
    floor = context_floor(estimate)
    candidate = min(limits) // CONTEXT_STEP * CONTEXT_STEP
    for tokens in (candidate, candidate - CONTEXT_STEP, floor):  # bytes round per device: a step may go
        if tokens >= floor and estimate.with_context(tokens, "").fits(room, gpu_room):
            return tokens
    return None


def _size_on_disk(path: Path) -> int | None:
    """A file's size, or the sum of a folder's files (HF snapshots link to blobs: follow)."""
    try:
        if path.is_file():
            return path.stat().st_size
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return None
    return None


def _context_tokens(options: dict[str, Any], trained: int | None) -> int:
    n_ctx = options.get("n_ctx", _DEFAULT_N_CTX)
    if not isinstance(n_ctx, int) or n_ctx <= 0:  # 0: the model's own context
        return trained or _DEFAULT_N_CTX
    return n_ctx


async def estimate_need(
    engine: str, download: DownloadResult | None, options: dict[str, Any], sequences: int = 1, *, gpu: bool = False
) -> MemoryEstimate | None:
    """What serving these weights on ``engine`` will take; None when nothing says (no weights).
    ``sequences``: the contexts the server allocates a KV cache for up front (llama-server's
    slots, each ``n_ctx`` tokens). ``gpu``: the host has a GPU of its own memory, so layers
    llama.cpp offloads (``n_gpu_layers``) live there."""
    if download is None:
        return None
    path = Path(download.path) if download.path else None
    weights = await anyio.to_thread.run_sync(_size_on_disk, path) if path is not None else None
    if weights is None:
        weights = download.bytes
    if weights is None:
        return None
    kv_cache, context, per_token, trained, layers = 0, None, 0, None, None
    if path is not None and path.suffix == ".gguf" and path.is_file():
        gguf_metadata = await import_off_loop("ltcai.engines.gguf_metadata")
        shape = await anyio.to_thread.run_sync(gguf_metadata.read_gguf_shape, path)
        per_token = shape.kv_bytes_per_token() or 0
        trained, layers = shape.context_length, shape.block_count
        if per_token:
            context = _context_tokens(options, trained)
            kv_cache = per_token * context * max(1, sequences)
    overhead = ENGINE_OVERHEAD_BYTES.get(engine, _DEFAULT_OVERHEAD_BYTES)
    share = _gpu_share(options.get("n_gpu_layers"), layers) if gpu and engine == "llamacpp" else 0.0
    return MemoryEstimate(weights, kv_cache, overhead, context, max(1, sequences), per_token, trained, gpu_share=share)


def _gpu_share(n_gpu_layers: Any, layers: int | None) -> float:
    """How much of the model llama.cpp puts on the GPU: -1 (or at least every layer) all of
    it, N of L layers N/L (their weights and KV cache); unset or 0, none."""
    if isinstance(n_gpu_layers, bool) or not isinstance(n_gpu_layers, int) or n_gpu_layers == 0:
        return 0.0
    if n_gpu_layers < 0 or not layers or n_gpu_layers >= layers:
        return 1.0
    return n_gpu_layers / layers


def _meminfo_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_limit() -> int | None:
    """A container's memory limit (cgroup v2), when lower than the machine's."""
    try:
        raw = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return None
    return int(raw) if raw.isdigit() else None


def _total_memory() -> int:
    total = _meminfo_total()
    if total is None and hasattr(os, "sysconf"):  # macOS and other Unixes without /proc
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            total = None
    limit = _cgroup_limit() if sys.platform.startswith("linux") else None
    candidates = [v for v in (total, limit) if v]
    return min(candidates) if candidates else 0


async def total_memory() -> int:
    """The memory this machine (or its container) has, in bytes; 0 when nothing tells."""
    return await anyio.to_thread.run_sync(_total_memory)


def _rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


async def process_rss(pids: list[int]) -> dict[int, int | None]:
    """Resident memory of each process (Linux /proc; None elsewhere or once it is gone)."""
    return await anyio.to_thread.run_sync(lambda: {pid: _rss(pid) for pid in pids})
