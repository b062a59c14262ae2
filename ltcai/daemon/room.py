"""Room for one more model: which idle models to evict, or why it cannot fit (pure planning).

``Lifecycle.make_room`` asks :func:`plan_room` with the model's estimated need; the plan
names the victims (least recently used idle, unpinned models first) or a refusal with the
numbers. Memory is counted where it lives: RAM against ``memory_budget``, what llama.cpp
offloads to an NVIDIA GPU against ``gpu_memory_budget`` (see :mod:`.gpu`). A refusal for
memory also says how much room there would be after evicting every idle model
(``Plan.room``, ``Plan.gpu_room``): the lifecycle then tries a smaller context that fits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..config.units import format_bytes
from . import memory
from .memory import MemoryEstimate
from .models import LoadedModel

if TYPE_CHECKING:
    from .jobs import Job
    from .lifecycle import Lifecycle

__all__ = ["Plan", "plan_room", "shrink_to_fit"]


@dataclass(frozen=True)
class Plan:
    victims: list[tuple[LoadedModel, str]]  # and what was short: memory or max_loaded_models
    refusal: str | None = None
    # A memory refusal only (``short`` is set): the bytes free after evicting every idle
    # model, in RAM and on the GPU (None: no budget there).
    short: str | None = None  # "memory budget" or "GPU memory budget": the one that did not fit
    room: int | None = None
    gpu_room: int | None = None
    budget: int | None = None  # of the one that was short


def plan_room(lifecycle: Lifecycle, job: Job, need: MemoryEstimate | None) -> Plan:
    """Which idle models to evict, least recently used first, so ``need`` fits beside the rest."""
    assert job.resolution is not None
    key = (job.resolution.engine, job.resolution.resolved_model)
    resident = lifecycle._resident(excluding=key)
    pending = lifecycle._pending(job)
    count = len(resident) + len(pending)
    others = [lifecycle.estimate(m) for m in resident] + [lifecycle.estimate_of_job(j.id) for j in pending]
    used = sum(e.ram for e in others if e is not None)
    used_gpu = sum(e.gpu for e in others if e is not None)
    budget, gpu_budget = lifecycle.budget_bytes(), lifecycle.gpu_budget_bytes()
    need_ram, need_gpu = (need.ram, need.gpu) if need is not None else (0, 0)
    limit = lifecycle.services.settings.max_loaded_models

    def count_fits(count: int) -> bool:
        return not limit or count + 1 <= limit

    def ram_fits(used: int) -> bool:
        return budget is None or not need_ram or used + need_ram <= budget

    def gpu_fits(used_gpu: int) -> bool:
        return gpu_budget is None or not need_gpu or used_gpu + need_gpu <= gpu_budget

    def fits(count: int, used: int, used_gpu: int) -> bool:
        return count_fits(count) and ram_fits(used) and gpu_fits(used_gpu)

    held = [m for m in resident if lifecycle.in_flight(m) or lifecycle.pinned(m)]
    candidates = sorted((m for m in resident if m not in held), key=lambda m: m.last_used_monotonic)
    victims: list[tuple[LoadedModel, str]] = []
    for candidate in candidates:
        if fits(count, used, used_gpu):
            break
        victims.append((candidate, "memory" if count_fits(count) else "max_loaded_models"))
        count -= 1
        estimate = lifecycle.estimate(candidate)
        used -= estimate.ram if estimate is not None else 0
        used_gpu -= estimate.gpu if estimate is not None else 0
    if fits(count, used, used_gpu):
        return Plan(victims)
    busy = sum(1 for m in held if lifecycle.in_flight(m))
    pinned = len(held) - busy
    held_text = f"{busy} busy" + (f", {pinned} pinned" if pinned else "") + (f", {len(pending)} starting" if pending else "")
    unloading = f"after unloading {len(candidates)} idle model{'s' if len(candidates) != 1 else ''}"
    if limit and count + 1 > limit:
        return Plan([], f"max_loaded_models is {limit} and no loaded model can be unloaded ({held_text})")
    room = None if budget is None else max(0, budget - used)
    gpu_room = None if gpu_budget is None else max(0, gpu_budget - used_gpu)
    if not ram_fits(used):
        assert budget is not None and room is not None
        short, of, need_here, free, limit_bytes = "memory budget", "", need_ram, room, budget
    else:
        assert gpu_budget is not None and gpu_room is not None
        short, of, need_here, free, limit_bytes = "GPU memory budget", " of GPU memory", need_gpu, gpu_room, gpu_budget
    return Plan(
        [],
        f"{job.resolution.input_id} needs {format_bytes(need_here)}{of}; {format_bytes(free)} free of the"
        f" {format_bytes(limit_bytes)} {short} {unloading}; {held_text}",
        short=short,
        room=room,
        gpu_room=gpu_room,
        budget=limit_bytes,
    )


def shrink_to_fit(lifecycle: Lifecycle, job: Job, plan: Plan, estimate: MemoryEstimate) -> tuple[Plan, MemoryEstimate]:
    """After a memory refusal: the plan and estimate for the largest context that fits the
    room every idle model would leave (:func:`memory.fit_context`), its ``context_note``
    saying why; the refusal, with the floor's need added, when none does."""
    assert plan.budget is not None
    tokens = memory.fit_context(estimate, plan.room, plan.gpu_room)
    if tokens is None:
        if not estimate.kv_bytes_per_token:
            return plan, estimate
        floor = memory.context_floor(estimate)
        at_floor = estimate.with_context(floor, "")
        on_gpu = plan.short == "GPU memory budget"
        need = format_bytes(at_floor.gpu) + " of GPU memory" if on_gpu else format_bytes(at_floor.ram)
        return replace(plan, refusal=f"{plan.refusal}; even at {floor} tokens per slot it needs {need}"), estimate
    note = f"{estimate.context_tokens} did not fit the {format_bytes(plan.budget)} {plan.short}"
    smaller = estimate.with_context(tokens, note)
    return plan_room(lifecycle, job, smaller), smaller
