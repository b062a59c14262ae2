"""What a model can do on an engine, as measured (issue 14 item 5): one verdict per
capability, each with a status, the reason and when it was measured.

Peers publish what a user declares; ltcai records what a probe found. The smoke test is
the ``chat`` probe (``learn_from_smoke`` records it); the other probes fill the rest.
A capability nobody measured is ``untested``, never assumed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

__all__ = [
    "CAPABILITY_KEYS",
    "CAPABILITY_STATUSES",
    "Capabilities",
    "Capability",
    "capabilities_from_dict",
    "capabilities_to_dict",
    "untested_capabilities",
    "with_capability",
]

CAPABILITY_KEYS: tuple[str, ...] = ("chat", "stream", "tools", "json_schema", "embeddings", "vision", "context")
CAPABILITY_STATUSES: tuple[str, ...] = ("ok", "degraded", "failed", "untested")


@dataclass(frozen=True, slots=True)
class Capability:
    """One capability's verdict: ``reason`` says why (a probe's finding, or ``not measured``)."""

    status: str = "untested"
    reason: str = "not measured"
    measured_at: str | None = None  # ISO 8601; None while untested

    def __post_init__(self) -> None:
        if self.status not in CAPABILITY_STATUSES:
            raise ValueError(f"capability status must be one of {CAPABILITY_STATUSES}, got {self.status!r}")
        if not isinstance(self.reason, str) or not self.reason:
            raise ValueError(f"a capability needs a reason, got {self.reason!r}")
        if self.measured_at is not None and not isinstance(self.measured_at, str):
            raise ValueError(f"measured_at must be an ISO 8601 string or null, got {self.measured_at!r}")

    @property
    def usable(self) -> bool:
        """A request may count on it: measured, and not failed."""
        return self.status in ("ok", "degraded")

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "measured_at": self.measured_at}


Capabilities = Mapping[str, Capability]
_UNTESTED = Capability()


def untested_capabilities() -> Capabilities:
    """Every capability, none measured (a new profile, or one saved before they existed)."""
    return MappingProxyType(dict.fromkeys(CAPABILITY_KEYS, _UNTESTED))


def with_capability(
    capabilities: Capabilities, key: str, status: str, reason: str, measured_at: str | datetime | None
) -> Capabilities:
    """A copy with ``key``'s verdict replaced; an unknown key is refused."""
    if key not in CAPABILITY_KEYS:
        raise ValueError(f"unknown capability {key!r}; the capabilities are {CAPABILITY_KEYS}")
    when = measured_at.isoformat() if isinstance(measured_at, datetime) else measured_at
    return MappingProxyType({**capabilities, key: Capability(status, reason, when)})


def capabilities_to_dict(capabilities: Capabilities) -> dict[str, dict[str, Any]]:
    """The JSON form: every key, in ``CAPABILITY_KEYS`` order."""
    return {key: capabilities.get(key, _UNTESTED).to_dict() for key in CAPABILITY_KEYS}


def capabilities_from_dict(data: Mapping[str, Any] | None) -> Capabilities:
    """Read :func:`capabilities_to_dict` back. Missing (an older profile) or missing keys
    are untested; a key this version does not know (a newer writer) is ignored; a damaged
    entry raises ``ValueError``."""
    if data is None:
        return untested_capabilities()
    if not isinstance(data, Mapping):
        raise ValueError(f"capabilities must be an object, got {type(data).__name__}")
    found = dict(untested_capabilities())
    for key in CAPABILITY_KEYS:
        entry = data.get(key)
        if entry is None:
            continue
        if not isinstance(entry, Mapping):
            raise ValueError(f"capability {key!r} must be an object, got {entry!r}")
        found[key] = Capability(entry.get("status"), entry.get("reason"), entry.get("measured_at"))  # type: ignore[arg-type]
    return MappingProxyType(found)
