"""A model's life after prepare: in use, idle, unloaded when idle too long or to make room.

- **In flight**: a request counts against its model from arrival to its last byte —
  while it waits for a just-in-time prepare, in the queue, and while a stream runs
  (:class:`Use`). A model with a request in flight is never unloaded or evicted.
- **Idle unload**: each model has a ``keep_alive`` (Ollama's: the latest request's, else
  the model's ``[models."id"]`` setting, else the global one). One task sleeps until the
  earliest idle deadline and is woken whenever a request ends or a model changes; an
  idle model's engine process is stopped and reaped, and the next request prepares it
  again just in time.
- **Room**: before a prepare starts an engine (``make_room``), the model's memory need
  is estimated (:mod:`.memory`) and checked against ``memory_budget`` and
  ``max_loaded_models``; least recently used idle, unpinned models are evicted until it
  fits (:mod:`.room` plans it). A GGUF whose configured context does not fit even then
  gets the largest context that does (never below ``memory.CONTEXT_FLOOR_TOKENS``), and
  the prepare says so; when nothing fits the prepare fails with ``not_enough_memory`` and
  the numbers, evicting nothing.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from ..config.units import KEEP_FOREVER
from ..engines.base import DownloadResult
from ..errors import ErrorCode, LtcaiError, ServerStartError
from . import memory
from .admission import Gate
from .memory import MemoryEstimate
from .models import LoadedModel
from .gpu import GpuMemory, gpu_memory
from .room import plan_room, shrink_to_fit
from ..core import resolve_with_settings

if TYPE_CHECKING:
    from .jobs import Job
    from .services import Services

__all__ = ["Lifecycle", "Use"]

log = structlog.get_logger(__name__)

Key = tuple[str, str]


class Use:
    """One request on one model, from its arrival to its last byte (see ``Lifecycle.begin``)."""

    def __init__(self, lifecycle: Lifecycle, key: Key, keep_alive: float | None, route: str) -> None:
        self._lifecycle = lifecycle
        self.key = key
        self.keep_alive = keep_alive
        self.route = route
        self.loaded: LoadedModel | None = None
        self._gate: Gate | None = None
        self._arrived = time.monotonic()
        self._started: float | None = None  # when it got its slot
        self._first_token = False
        self._error: BaseException | None = None  # a stream's failure, seen by watch
        self._ended = False
        lifecycle._in_flight[key] = lifecycle._in_flight.get(key, 0) + 1

    @property
    def entered(self) -> bool:
        return self._gate is not None

    async def enter(self, loaded: LoadedModel) -> None:
        """Take one of ``loaded``'s slots, queueing behind the running requests.

        Raises ``TooBusy`` (429) before any await when the queue is full. Cancelled (the
        client went away), the request leaves the queue.
        """
        self.loaded = loaded
        gate = self._lifecycle.gate(loaded)
        await gate.acquire(loaded.resolution.input_id)
        self._gate = gate
        self._started = time.monotonic()

    def usage(self, usage: dict[str, Any] | None) -> None:
        """The engine's token counts for this request (metrics)."""
        self._lifecycle.services.metrics.tokens(*self.key, usage)

    async def watch(self, deltas: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """Pass a chat stream's deltas through, noting its first token, usage and failure
        (the route turns a failure into the stream's last event; the use still knows)."""
        metrics = self._lifecycle.services.metrics
        try:
            async with contextlib.aclosing(deltas):  # closed with us: the engine request too
                async for delta in deltas:
                    if not self._first_token and any(k in delta for k in _TOKEN_DELTAS):
                        self._first_token = True
                        metrics.first_token(self.route, *self.key, time.monotonic() - self._arrived)
                    if "usage" in delta:
                        self.usage(delta["usage"])
                    yield delta
        except GeneratorExit:  # the response stopped reading (its client left): not a failure here
            raise
        except BaseException as exc:
            self._error = exc
            raise

    @contextlib.contextmanager
    def ending(self) -> Iterator[None]:
        """The request ends with this block, failed if it raises."""
        with self.ending_on_error():
            yield
        self.end()

    @contextlib.contextmanager
    def ending_on_error(self) -> Iterator[None]:
        """The request ends here only if the block raises (else a response takes it over)."""
        try:
            yield
        except BaseException as exc:
            self.end(exc)
            raise

    def end(self, error: BaseException | None = None) -> None:
        """The request is over: free its slot, note the model's last use, count it. Idempotent.

        Its outcome: ``error``, else a stream's failure (``watch``), else the exception
        being raised when ``end`` is called from a ``finally`` block, else ok.
        """
        if self._ended:
            return
        self._ended = True
        lifecycle = self._lifecycle
        outcome = _outcome(error or self._error or sys.exc_info()[1])
        lifecycle.services.metrics.request_done(self.route, *self.key, outcome, time.monotonic() - self._arrived)
        left = lifecycle._in_flight.get(self.key, 1) - 1
        if left:
            lifecycle._in_flight[self.key] = left
        else:
            lifecycle._in_flight.pop(self.key, None)
        if self._gate is not None:
            assert self._started is not None
            self._gate.release(time.monotonic() - self._started)
        if self.loaded is not None:
            lifecycle.touch(self.loaded, keep_alive=self.keep_alive)
        lifecycle.wake()


# Deltas that carry generated output: the first one ends the time to first token.
_TOKEN_DELTAS = ("content", "reasoning", "tool_calls")


def _outcome(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, LtcaiError):
        return error.code
    if isinstance(error, anyio.get_cancelled_exc_class()):
        return "cancelled"
    return "internal_error"


class Lifecycle:
    """Usage, idle deadlines, pins and room for the served models (one per daemon)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.total_memory = 0  # bytes; read at start (run)
        self.gpu: GpuMemory | None = None  # NVIDIA GPUs' memory; read at start and before each make_room
        self._in_flight: dict[Key, int] = {}
        self._pins: dict[Key, bool] = {}  # `ltcai pin` / `unpin`, over the config's pin
        self._estimates: dict[str, MemoryEstimate] = {}  # by the job id that made room
        self._reserved: dict[str, Job] = {}  # prepares past make_room whose model is not registered yet
        self._room_lock = anyio.Lock()
        self._changed = anyio.Event()
        self._config_keys: tuple[object, dict[str, tuple[Key, ...]]] = (None, {})

    # ------------------------------------------------------------------ the reaper

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Unload idle models at their deadline; sleeps until the next one or a change."""
        self.total_memory = await memory.total_memory()
        self.gpu = await gpu_memory()
        task_status.started()
        while True:
            self._changed = anyio.Event()
            now = time.monotonic()
            for loaded in self._expired(now):
                await self._unload_quietly(loaded, "idle")
            wait = min((d for d in map(self.idle_deadline, self.services.models.all()) if d is not None), default=math.inf)
            with anyio.move_on_after(max(0.0, wait - time.monotonic())):
                await self._changed.wait()

    def wake(self) -> None:
        """Something changed (a request ended, a model came or went): recompute deadlines."""
        self._changed.set()

    def _expired(self, now: float) -> list[LoadedModel]:
        expired = []
        for loaded in self.services.models.all():
            deadline = self.idle_deadline(loaded)
            if deadline is not None and deadline <= now:
                expired.append(loaded)
        return expired

    async def _unload_quietly(self, loaded: LoadedModel, cause: str) -> None:
        try:
            await self.unload(loaded, cause)
        except LtcaiError as exc:  # e.g. an Ollama that stopped answering: the model is gone from us anyway
            log.warning("unloading failed", model=loaded.resolution.resolved_model, cause=cause, error=exc.message)
        except Exception:  # an adapter's bug: logged with its traceback; the reaper must outlive it
            log.exception("unloading crashed", model=loaded.resolution.resolved_model, cause=cause)

    # ----------------------------------------------------------- per-model settings

    def _config_entries(self, loaded: LoadedModel) -> list[dict[str, Any]]:
        """The ``[models."…"]`` tables that name this model (by id, alias or engine:id)."""
        settings = self.services.settings
        cached_for, by_key = self._config_keys
        if cached_for is not settings:
            by_key = {}
            for name in settings.models:
                try:
                    resolution = resolve_with_settings(settings, self.services.plugins, name, None)
                except LtcaiError:
                    continue  # a key that names no model resolves nothing: it matches only literally
                by_key[name] = ((resolution.engine, resolution.resolved_model),)
            self._config_keys = (settings, by_key)
        engine, model = loaded.key
        own = {(engine, model), (engine, loaded.resolution.download_id)}
        literal = {model, loaded.resolution.download_id, loaded.resolution.input_id, f"{engine}:{model}"}
        return [
            entry
            for name, entry in settings.models.items()
            if name in literal or own & set(by_key.get(name, ()))
        ]

    def keep_alive_of(self, loaded: LoadedModel) -> float:
        if loaded.keep_alive is not None:
            return loaded.keep_alive
        for entry in self._config_entries(loaded):
            if "keep_alive" in entry:
                return float(entry["keep_alive"])
        return self.services.settings.keep_alive

    def pinned(self, loaded: LoadedModel) -> bool:
        if loaded.key in self._pins:
            return self._pins[loaded.key]
        return any(entry.get("pin") for entry in self._config_entries(loaded))

    def pin(self, loaded: LoadedModel, pinned: bool) -> None:
        self._pins[loaded.key] = pinned
        self.wake()

    def in_flight(self, loaded: LoadedModel) -> int:
        engine, model = loaded.key
        count = self._in_flight.get((engine, model), 0)
        if loaded.resolution.download_id != model:  # requests may still name it by its old id
            count += self._in_flight.get((engine, loaded.resolution.download_id), 0)
        return count

    def idle_deadline(self, loaded: LoadedModel) -> float | None:
        """When (monotonic) this model unloads if nothing uses it; None: not while as it is."""
        keep_alive = self.keep_alive_of(loaded)
        if not loaded.ready or keep_alive == KEEP_FOREVER or self.pinned(loaded) or self.in_flight(loaded):
            return None
        return loaded.last_used_monotonic + keep_alive

    # -------------------------------------------------------------- the request side

    def begin(self, engine: str, model: str, keep_alive: float | None = None, *, route: str) -> Use:
        """A request for (engine, resolved model) arrived on ``route``: in flight until ``Use.end``.

        The API for every route that talks to a model (the Ollama API too)::

            use = lifecycle.begin(engine, model, keep_alive, route="/api/chat")
            with use.ending():  # a stream: ending_on_error, then in_flight.ending_use
                loaded = ...  # ready it (a just-in-time prepare counts as in flight)
                await use.enter(loaded)  # a slot, or the queue; TooBusy (429) when full
                ...  # the answer (streams: ``use.watch(deltas)``; ``use.usage(...)``)
        """
        return Use(self, (engine, model), keep_alive, route)

    def touch(self, loaded: LoadedModel, *, keep_alive: float | None = None) -> None:
        """``loaded`` was just used; ``keep_alive`` (seconds, KEEP_FOREVER) replaces its own."""
        loaded.last_used = time.time()
        loaded.last_used_monotonic = time.monotonic()
        if keep_alive is not None:
            loaded.keep_alive = keep_alive
        self.wake()

    def gate(self, loaded: LoadedModel) -> Gate:
        if loaded.gate is None:
            # The setting read at each arrival: a reload applies to loaded models too.
            loaded.gate = Gate(loaded.served.slots, lambda: self.services.settings.max_queue)
        return loaded.gate

    # ------------------------------------------------------------------- unloading

    def _detach(self, loaded: LoadedModel) -> bool:
        """Take ``loaded`` out of the registry (no request finds it from now on)."""
        models = self.services.models
        if models.get(*loaded.key) is not loaded:
            return False
        models.remove(*loaded.key)
        self.wake()
        return True

    async def _stop_engine(self, loaded: LoadedModel, cause: str) -> None:
        engine = loaded.resolution.engine
        with anyio.CancelScope(shield=True):  # a half-stopped engine would hold its memory
            adapter = self.services.engine(engine)
            await adapter.unload(self.services.engine_context(engine), loaded.served)
        idle_s = round(time.time() - loaded.last_used, 1)
        log.info("model unloaded", engine=engine, model=loaded.resolution.resolved_model, cause=cause, idle_s=idle_s)
        self.services.metrics.unloaded(engine, cause)

    async def unload(self, loaded: LoadedModel, cause: str) -> bool:
        """Stop serving ``loaded`` (``cause``: idle, evicted, requested); False if it was gone."""
        if not self._detach(loaded):
            return False
        await self._stop_engine(loaded, cause)
        return True

    # ------------------------------------------------------------------------ room

    def estimate(self, loaded: LoadedModel) -> MemoryEstimate | None:
        return self._estimates.get(loaded.job_id)

    def estimate_of_job(self, job_id: str) -> MemoryEstimate | None:
        return self._estimates.get(job_id)

    def _resident(self, excluding: Key | None = None) -> list[LoadedModel]:
        """Registered models that hold memory of ours: ready, with an engine process."""
        return [
            m for m in self.services.models.all()
            if m.ready and m.served.process is not None and m.key != excluding
        ]  # fmt: skip

    def _purge(self) -> None:
        """Forget reservations of prepares that ended or registered, estimates of models gone."""
        registered = {m.job_id for m in self.services.models.all()}
        for job_id in [j for j, job in self._reserved.items() if job.done.is_set() or j in registered]:
            del self._reserved[job_id]
        for job_id in [j for j in self._estimates if j not in registered and j not in self._reserved]:
            del self._estimates[job_id]

    def _pending(self, job: Job) -> list[Job]:
        """Other prepares that made room and have not registered their model yet."""
        self._purge()
        return [other for job_id, other in self._reserved.items() if job_id != job.id]

    def budget_bytes(self) -> int | None:
        """The budget in bytes; None for a share of a memory size nothing could tell."""
        budget = self.services.settings.memory_budget
        if budget.fixed_bytes is None and not self.total_memory:
            return None
        return budget.bytes_of(self.total_memory)

    def gpu_budget_bytes(self) -> int | None:
        """The GPU budget in bytes; None where there is no NVIDIA GPU (one budget for all)."""
        if self.gpu is None:
            return None
        return self.services.settings.gpu_memory_budget.bytes_of(self.gpu.total)

    def _reserved_estimates(self) -> list[MemoryEstimate]:
        """Estimates of what is loaded and of the prepares starting an engine."""
        self._purge()
        loaded = [self.estimate(m) for m in self._resident()]
        return [e for e in loaded if e is not None] + [self._estimates[j] for j in self._reserved if j in self._estimates]

    def used_bytes(self) -> int:
        """Estimated RAM of what is loaded and of the prepares starting an engine."""
        return sum(e.ram for e in self._reserved_estimates())

    def gpu_used_bytes(self) -> int:
        return sum(e.gpu for e in self._reserved_estimates())

    async def make_room(
        self, job: Job, download: DownloadResult | None, options: dict[str, Any], sequences: int = 1
    ) -> MemoryEstimate | None:
        """Before ``job`` starts its engine: evict what must go, or fail ``not_enough_memory``.
        ``sequences``: how many contexts the engine allocates a KV cache for (its slots).

        When the configured context does not fit even after evicting every idle model,
        the largest smaller one that does is chosen (:func:`memory.fit_context`): the
        returned estimate's ``context_tokens`` is what the engine must be started with,
        and its ``context_note`` says why. Only when even the floor does not fit is the
        prepare refused.

        Evictions and the reservation happen under one lock, so two prepares cannot both
        count on the same free memory.
        """
        assert job.resolution is not None
        self.gpu = await gpu_memory()
        engine = job.resolution.engine
        estimate = await memory.estimate_need(engine, download, options, sequences, gpu=self.gpu is not None)
        async with self._room_lock:
            plan = plan_room(self, job, estimate)
            if plan.refusal is not None and plan.short is not None and estimate is not None:
                plan, estimate = shrink_to_fit(self, job, plan, estimate)
            if plan.refusal is not None:
                raise ServerStartError(
                    plan.refusal,
                    hint="unload a model (`ltcai unload MODEL`), wait for busy ones to finish, or raise"
                    " memory_budget / gpu_memory_budget / max_loaded_models in the config",
                    code=ErrorCode.NOT_ENOUGH_MEMORY,
                )
            detached = [(victim, cause) for victim, cause in plan.victims if self._detach(victim)]
            if estimate is not None:
                self._estimates[job.id] = estimate
            self._reserved[job.id] = job
            for victim, cause in detached:
                self.services.metrics.evicted(cause)
                await self._stop_engine(victim, "evicted")
        if detached:
            log.info("evicted to make room", model=job.resolution.resolved_model, evicted=[v.resolution.resolved_model for v, _ in detached])
        if estimate is not None and estimate.context_note:
            log.info("context shrunk to fit", model=job.resolution.resolved_model, context=estimate.context_tokens, why=estimate.context_note)
        return estimate

    # ---------------------------------------------------------------------- views

    def describe(self, loaded: LoadedModel, rss: int | None) -> dict[str, Any]:
        """What ``ltcai ps`` shows of one model beyond its registry entry."""
        estimate = self.estimate(loaded)
        deadline = self.idle_deadline(loaded)
        gate = loaded.gate
        keep_alive = self.keep_alive_of(loaded)
        return {
            "memory": {"estimated": estimate.to_dict() if estimate else None, "rss": rss},
            "slots": loaded.served.slots,
            "busy": gate.running if gate else 0,
            "queued": gate.queued if gate else 0,
            "in_flight": self.in_flight(loaded),
            "last_used": loaded.last_used,
            "keep_alive_s": None if keep_alive == KEEP_FOREVER else keep_alive,
            "unloads_at": None if deadline is None else time.time() + (deadline - time.monotonic()),
            "pinned": self.pinned(loaded),
        }

    async def model_views(self, models: list[LoadedModel]) -> list[dict[str, Any]]:
        """Each model's registry entry with its lifecycle: memory (estimated, RSS), slots, unload time."""
        if self.gpu is not None:
            self.gpu = await gpu_memory() or self.gpu  # "used" for the summary, at most a few seconds old
        pids = [m.served.process.pid for m in models if m.served.process is not None]
        rss = await memory.process_rss(pids) if pids else {}
        views = []
        for m in models:
            pid = m.served.process.pid if m.served.process is not None else None
            views.append({**m.to_dict(), **self.describe(m, rss.get(pid) if pid is not None else None)})
        return views

    def summary(self, models: Iterable[LoadedModel]) -> dict[str, Any]:
        return {
            "memory_budget": self.budget_bytes(),
            "memory_budget_setting": self.services.settings.memory_budget.describe(),
            "memory_used_estimated": self.used_bytes(),
            "total_memory": self.total_memory or None,
            # An NVIDIA GPU's: what offloaded layers count against (None without one).
            "gpu_memory_budget": self.gpu_budget_bytes(),
            "gpu_memory_budget_setting": self.services.settings.gpu_memory_budget.describe("GPU memory"),
            "gpu_memory_used_estimated": self.gpu_used_bytes() if self.gpu is not None else None,
            "gpu_total_memory": self.gpu.total if self.gpu is not None else None,
            "gpu_memory_used": self.gpu.used if self.gpu is not None else None,  # nvidia-smi, by anyone
            "max_loaded_models": self.services.settings.max_loaded_models or None,
            "loaded": sum(1 for _ in models),
        }
