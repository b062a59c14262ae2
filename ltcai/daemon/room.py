"""Room for one more model: which idle models to evict, or why it cannot fit (pure planning).

``Lifecycle.make_room`` asks :func:`plan_room` with the model's estimated need; the plan
names the victims (least recently used idle, unpinned models first) or a refusal with the
numbers. A refusal for memory also says how much room there would be after evicting every
idle model (``Plan.room``): the lifecycle then tries a smaller context that fits it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config.units import format_bytes
from .models import LoadedModel

if TYPE_CHECKING:
    from .jobs import Job
    from .lifecycle import Lifecycle

__all__ = ["Plan", "plan_room"]


@dataclass(frozen=True)
class Plan:
    victims: list[tuple[LoadedModel, str]]  # and what was short: memory or max_loaded_models
    refusal: str | None = None
    # A memory refusal only: the bytes free after evicting every idle model (None: the
    # count, not memory, is what does not fit, so no smaller context would help).
    room: int | None = None
    budget: int | None = None


def plan_room(lifecycle: Lifecycle, job: Job, need: int) -> Plan:
    """Which idle models to evict, least recently used first, so ``need`` more bytes fit."""
    assert job.resolution is not None
    key = (job.resolution.engine, job.resolution.resolved_model)
    resident = lifecycle._resident(excluding=key)
    pending = lifecycle._pending(job)
    count = len(resident) + len(pending)
    used = sum(lifecycle._estimate_of(m) for m in resident) + sum(lifecycle._estimate_of_job(j.id) for j in pending)
    budget = lifecycle.budget_bytes()
    limit = lifecycle.services.settings.max_loaded_models

    def count_fits(count: int) -> bool:
        return not limit or count + 1 <= limit

    def fits(count: int, used: int) -> bool:
        return count_fits(count) and (budget is None or not need or used + need <= budget)

    held = [m for m in resident if lifecycle.in_flight(m) or lifecycle.pinned(m)]
    candidates = sorted((m for m in resident if m not in held), key=lambda m: m.last_used_monotonic)
    victims: list[tuple[LoadedModel, str]] = []
    for candidate in candidates:
        if fits(count, used):
            break
        victims.append((candidate, "memory" if count_fits(count) else "max_loaded_models"))
        count -= 1
        used -= lifecycle._estimate_of(candidate)
    if fits(count, used):
        return Plan(victims)
    busy = sum(1 for m in held if lifecycle.in_flight(m))
    pinned = len(held) - busy
    held_text = f"{busy} busy" + (f", {pinned} pinned" if pinned else "") + (f", {len(pending)} starting" if pending else "")
    unloading = f"after unloading {len(candidates)} idle model{'s' if len(candidates) != 1 else ''}"
    if limit and count + 1 > limit:
        return Plan([], f"max_loaded_models is {limit} and no loaded model can be unloaded ({held_text})")
    assert budget is not None
    free = max(0, budget - used)
    return Plan(
        [],
        f"{job.resolution.input_id} needs {format_bytes(need)}; {format_bytes(free)} free of the"
        f" {format_bytes(budget)} memory budget {unloading}; {held_text}",
        room=free,
        budget=budget,
    )
