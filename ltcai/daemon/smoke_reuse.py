"""When a prepare may trust an earlier smoke verdict instead of chatting again (issue 13).

A model unloaded after ``keep_alive`` (or evicted) comes back on the next request that
names it, and that client waits for the whole prepare. The smoke test is one real
completion: about a second for a small model on a CPU, far more for a big one, and it
only repeats what was measured a moment ago. So a prepare started *just in time* by a
client's request reuses the last verdict when nothing it measured can have changed:

- the verdict was ``ok`` or ``degraded`` (a failed model is tested again: it may be fixed);
- it is younger than ``SMOKE_REUSE_MAX_AGE_S`` (a week: a re-check now and then costs
  little and catches what no stamp sees, like a driver update);
- the weights are the same: same path, size and modification time as when the verdict
  was measured (for a folder, every file in it);
- the same set-up: the profile's fields (template, stops, sampling…), the engine's
  version and its settings from the config (``fingerprint``).

A prepare the user asks for (``ltcai prepare``, ``POST /prepare``, Ollama's ``/api/pull``)
always runs the smoke test: asking to prepare is asking to have it tested. The context
probe is not skipped either: it is one GET, and the context a load gets can differ from
one load to the next (the memory budget chooses it).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from ..compat import Profile
from ..config.units import format_bytes
from .report import SmokeTest

__all__ = ["SMOKE_REUSE_MAX_AGE_S", "SmokeRecord", "WeightsStamp", "fingerprint", "reuse_refusal", "stamp_weights"]

# How long a measured verdict stands in for a new smoke test (see the module docstring).
SMOKE_REUSE_MAX_AGE_S: Final = 7 * 24 * 3600.0
_REUSABLE: Final = ("ok", "degraded")
_PER_LOAD: Final = frozenset({"n_ctx"})  # engine options chosen per load, not by the user alone


@dataclass(frozen=True)
class WeightsStamp:
    """What identifies the weights a verdict was measured on, without reading them."""

    path: str
    size: int
    mtime_ns: int

    def describe(self) -> str:
        modified = datetime.fromtimestamp(self.mtime_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M UTC")
        return f"{Path(self.path).name}, {format_bytes(self.size)}, modified {modified}"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeightsStamp:
        return cls(str(data["path"]), int(data["size"]), int(data["mtime_ns"]))


def stamp_weights(path: str) -> WeightsStamp | None:
    """The stamp of a file, or of a folder as the sum of its files' sizes and the newest
    of their times; None if it cannot be read. Blocking (a folder is walked): off the loop."""
    try:
        if not os.path.isdir(path):
            info = os.stat(path)
            return WeightsStamp(path, info.st_size, info.st_mtime_ns)
        size, newest = 0, 0
        for folder, _dirs, files in os.walk(path):
            for name in files:
                info = os.stat(os.path.join(folder, name))
                size, newest = size + info.st_size, max(newest, info.st_mtime_ns)
        return WeightsStamp(path, size, newest)
    except OSError:
        return None


def fingerprint(profile: Profile, engine_version: str | None, options: Mapping[str, Any]) -> str:
    """A digest of what shapes the smoke chat besides the weights: the profile's fields and
    the layer each came from, the engine's version and this engine's settings."""
    # Not n_ctx: the memory budget may shrink it load by load (make_room), the context
    # probe measures it anew each time, and a smoke chat of a few tokens does not depend on it.
    settings = {key: value for key, value in options.items() if key not in _PER_LOAD}
    document = {"fields": profile.to_dict()["fields"], "engine_version": engine_version, "options": settings}
    encoded = json.dumps(document, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:32]


@dataclass(frozen=True)
class SmokeRecord:
    """A measured smoke verdict with what it was measured on (kept per profile key)."""

    smoke: SmokeTest
    measured_at: float  # epoch seconds
    weights: WeightsStamp
    setup: str  # ``fingerprint`` at the time

    def describe(self, now: float) -> str:
        """Why a prepare did not repeat it, for the report's stage log."""
        verdict = "passed" if self.smoke.status == "ok" else f"found problems ({self.smoke.reason})"
        return (
            f"smoke test {verdict} {_age(now - self.measured_at)} ago on this file"
            f" ({self.weights.describe()}); not repeated"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "smoke_test": self.smoke.to_dict(),
            "measured_at": self.measured_at,
            "weights": self.weights.to_dict(),
            "setup": self.setup,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SmokeRecord:
        """Raises ``ValueError`` (or KeyError/TypeError) on a damaged record."""
        return cls(
            SmokeTest.from_dict(data["smoke_test"]),
            float(data["measured_at"]),
            WeightsStamp.from_dict(data["weights"]),
            str(data["setup"]),
        )


def reuse_refusal(record: SmokeRecord | None, weights: WeightsStamp | None, setup: str, now: float | None = None) -> str | None:
    """Why ``record`` cannot stand in for a smoke test now; None when it can."""
    now = time.time() if now is None else now
    if record is None:
        return "no earlier smoke test on record"
    if record.smoke.status not in _REUSABLE:
        return f"the last smoke test {record.smoke.status}"
    age = now - record.measured_at
    if not 0 <= age <= SMOKE_REUSE_MAX_AGE_S:
        return f"the last smoke test is {_age(abs(age))} old (at most {_age(SMOKE_REUSE_MAX_AGE_S)})"
    if weights is None:
        return "the weights have no file to compare"
    if weights != record.weights:
        return "the weights changed since the last smoke test"
    if setup != record.setup:
        return "the profile, engine version or engine settings changed since the last smoke test"
    return None


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"
