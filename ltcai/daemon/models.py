"""What is loaded where: the served models the chat path talks to.

A model whose engine process exits is marked not ready at once (the supervisor's exit
event is awaited, not polled), so the next chat gets a clear error and the next prepare
starts a fresh server. Such exits are remembered per (engine, model): a model whose
engine keeps crashing is restarted after a growing delay (``restart_delay``), so a
client retrying in a loop cannot turn a crash loop into a fork bomb of servers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog

from ..compat import Profile, Resolution
from ..engines.base import ServedModel
from .admission import Gate
from .readiness import Readiness

__all__ = ["CRASH_WINDOW_S", "LoadedModel", "ModelRegistry"]

log = structlog.get_logger(__name__)

# The first crash is restarted at once; from the second within the window on, the
# delay doubles from the base up to the cap.
CRASH_WINDOW_S = 300.0
RESTART_BASE_DELAY_S = 1.0
RESTART_MAX_DELAY_S = 30.0


@dataclass
class LoadedModel:
    resolution: Resolution
    served: ServedModel
    profile: Profile
    status: Readiness  # the prepare machine's decision (READY/DEGRADED), later STOPPED
    job_id: str
    loaded_at: float = field(default_factory=time.time)
    # The lifecycle's (daemon/lifecycle.py): last use (wall clock for people, monotonic
    # for deadlines), the latest request's keep_alive, and the slots/queue gate.
    last_used: float = field(default_factory=time.time)
    last_used_monotonic: float = field(default_factory=time.monotonic)
    keep_alive: float | None = None
    gate: Gate | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.resolution.engine, self.resolution.resolved_model)

    @property
    def ready(self) -> bool:
        return self.status.chat_ready

    def to_dict(self) -> dict[str, Any]:
        process = self.served.process
        return {
            "engine": self.resolution.engine,
            "model": self.resolution.resolved_model,
            "input_id": self.resolution.input_id,
            "current": self.resolution.expected_current,
            "status": self.status.label,
            "base_url": self.served.base_url,
            "pid": process.pid if process else None,
            "job_id": self.job_id,
            "loaded_at": self.loaded_at,
            "quality_status": self.profile.quality_status,
        }


class ModelRegistry:
    def __init__(self) -> None:
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._crashes: dict[tuple[str, str], list[float]] = {}  # monotonic times of unexpected exits
        self._tg: anyio.abc.TaskGroup | None = None
        # Called whenever a model is added or removed (the lifecycle recomputes deadlines).
        self.on_change: Callable[[], None] = lambda: None
        self.on_added: Callable[[LoadedModel], None] = lambda loaded: None  # metrics: a load

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    def start_soon(self, func: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Run ``func(*args)`` in the background while the registry runs (a probe on first
        use); False when it does not run. ``func`` must not raise: it would stop the daemon."""
        if self._tg is None:
            return False
        self._tg.start_soon(func, *args)
        return True

    def get(self, engine: str, model: str) -> LoadedModel | None:
        """The model served as ``model`` on ``engine``: by its current id, or by the id it was
        prepared under when the engine renamed it at load (``llama3.2`` → ``llama3.2:latest``,
        an LM Studio instance ``<id>:2``), so the user's own id keeps finding it."""
        found = self._models.get((engine, model))
        if found is None:
            found = next(
                (m for m in self._models.values() if m.resolution.engine == engine and m.resolution.download_id == model),
                None,
            )
        return found

    def all(self) -> list[LoadedModel]:
        return list(self._models.values())

    def add(self, loaded: LoadedModel) -> None:
        previous = self._models.get(loaded.key)
        self._models[loaded.key] = loaded
        if previous is not None and previous.served.process is not loaded.served.process and self._tg:
            self._tg.start_soon(_stop, previous)
        if loaded.served.process is not None and self._tg is not None:
            self._tg.start_soon(self._watch, loaded)
        self.on_added(loaded)
        self.on_change()

    async def _watch(self, loaded: LoadedModel) -> None:
        assert loaded.served.process is not None
        await loaded.served.process.exited.wait()
        if self._models.get(loaded.key) is loaded and loaded.status is not Readiness.STOPPED:
            loaded.status = Readiness.STOPPED
            if not loaded.served.process.stopping:  # nobody asked it to stop: a crash
                self._crashes.setdefault(loaded.key, []).append(time.monotonic())
            log.warning(
                "engine stopped; model no longer ready",
                engine=loaded.resolution.engine,
                model=loaded.resolution.resolved_model,
                returncode=loaded.served.process.returncode,
            )

    def recent_crashes(self, engine: str, model: str) -> int:
        """How often this model's engine died unasked within the last ``CRASH_WINDOW_S``."""
        horizon = time.monotonic() - CRASH_WINDOW_S
        recent = [t for t in self._crashes.get((engine, model), []) if t > horizon]
        if recent:
            self._crashes[(engine, model)] = recent
        else:
            self._crashes.pop((engine, model), None)
        return len(recent)

    def restart_delay(self, engine: str, model: str) -> float:
        """Seconds to wait before starting this model's engine again (0: at once)."""
        crashes = self.recent_crashes(engine, model)
        if crashes < 2:
            return 0.0
        return min(RESTART_MAX_DELAY_S, RESTART_BASE_DELAY_S * 2 ** (crashes - 2))

    def remove(self, engine: str, model: str) -> LoadedModel | None:
        found = self.get(engine, model)
        removed = self._models.pop(found.key, None) if found is not None else None
        self.on_change()
        return removed


async def _stop(loaded: LoadedModel) -> None:
    if loaded.served.process is not None:
        await loaded.served.process.stop()
