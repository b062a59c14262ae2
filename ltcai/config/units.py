"""Durations and sizes as users write them: ``keep_alive = "5m"``, ``memory_budget = "12GiB"``.

``keep_alive`` follows Ollama's format, so a value copied from an Ollama set-up means the
same here: a number of seconds, or a Go-style duration (``"30s"``, ``"5m"``, ``"1h30m"``);
``0`` unloads a model after each request, any negative value keeps it loaded forever.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ErrorCode, InvalidRequest

__all__ = ["KEEP_FOREVER", "MemoryBudget", "format_bytes", "parse_bytes", "parse_keep_alive", "parse_memory_budget"]

# A keep_alive that never runs out (a negative value in Ollama's format).
KEEP_FOREVER = math.inf

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1 << 10, "ki": 1 << 10,
    "m": 1000**2, "mb": 1000**2, "mib": 1 << 20, "mi": 1 << 20,
    "g": 1000**3, "gb": 1000**3, "gib": 1 << 30, "gi": 1 << 30,
    "t": 1000**4, "tb": 1000**4, "tib": 1 << 40, "ti": 1 << 40,
}  # fmt: skip


def _bad(what: str, value: Any, example: str, origin: str) -> InvalidRequest:
    return InvalidRequest(f"{origin}: {what} {value!r} is not valid", hint=f"write it like {example}", code=ErrorCode.INVALID_CONFIG)


def parse_keep_alive(value: Any, origin: str = "keep_alive") -> float:
    """Seconds a model stays loaded after its last request; ``KEEP_FOREVER`` for never unloading."""
    example = '"5m", "30s", "1h30m", 300, 0 (unload after each request) or -1 (never)'
    if isinstance(value, bool):
        raise _bad("keep_alive", value, example, origin)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        try:
            seconds = sign * float(body)
        except ValueError:
            parts = _DURATION_PART.findall(body)
            if not body or "".join(n + u for n, u in parts) != body:
                raise _bad("keep_alive", value, example, origin) from None
            seconds = sign * sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    else:
        raise _bad("keep_alive", value, example, origin)
    if math.isnan(seconds):
        raise _bad("keep_alive", value, example, origin)
    return KEEP_FOREVER if seconds < 0 else seconds


def parse_bytes(value: Any, origin: str = "size") -> int:
    """``"12GiB"``, ``"512MB"``, ``"1.5G"`` (1000-based, as in ``ls -h --si``) or a plain byte count."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _bad("size", value, '"12GiB", "512MiB" or a byte count', origin)
    if isinstance(value, (int, float)):
        if value < 0:
            raise _bad("size", value, '"12GiB", "512MiB" or a byte count', origin)
        return int(value)
    match = _SIZE.match(value)
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise _bad("size", value, '"12GiB", "512MiB" or a byte count', origin)
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


@dataclass(frozen=True)
class MemoryBudget:
    """What the served models may use together: a fixed byte count, or a share of the machine's memory."""

    fixed_bytes: int | None = None
    share: float | None = None  # 0 < share <= 1

    def bytes_of(self, total_memory: int) -> int:
        if self.fixed_bytes is not None:
            return self.fixed_bytes
        assert self.share is not None
        return int(total_memory * self.share)

    def describe(self, of: str = "memory") -> str:
        return f"{self.share * 100:g}% of {of}" if self.share is not None else format_bytes(self.fixed_bytes or 0)


def parse_memory_budget(value: Any, origin: str = "memory_budget", what: str = "memory_budget") -> MemoryBudget:
    """``"80%"`` of the machine's (or the GPUs') memory, or a size (``"12GiB"``)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            share = float(value.strip()[:-1]) / 100
        except ValueError:
            share = math.nan
        if not 0 < share <= 1:
            raise _bad(what, value, '"80%" (above 0, at most 100) or "12GiB"', origin)
        return MemoryBudget(share=share)
    return MemoryBudget(fixed_bytes=parse_bytes(value, origin))


def format_bytes(count: float) -> str:
    """``5.1 GiB``, ``312 MiB``: binary units, as memory is sized."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(count) >= size:
            value = count / size
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(count)} B"
