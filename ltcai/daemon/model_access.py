"""Which served model answers a client's ``"model"``, preparing it just in time: for ``/v1`` and ``/api``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request

from ..compat import Resolution
from ..core import resolve_with_settings
from . import preparing
from ..errors import LtcaiError
from .in_flight import enter_while_connected
from .jobs import Job
from .lifecycle import Use
from .models import LoadedModel
from .services import Services

__all__ = ["Preparing", "engine_of", "model_key", "preparing_in_use", "ready_in_use", "ready_model", "resolve_for_client"]


def engine_of(services: Services, model: str) -> tuple[str, LoadedModel | None]:
    """The engine that serves ``model`` and its served model if there is one.

    A model already prepared is found by the id it was prepared with, whichever engine
    that was (``ltcai prepare x --engine ollama`` then ``"model": "x"``); otherwise the
    id resolves as usual (a provider prefix, or the default engine).
    """
    for loaded in services.models.all():
        if model in (loaded.resolution.input_id, loaded.resolution.resolved_model):
            return loaded.resolution.engine, loaded
    resolution = resolve_with_settings(services.settings, services.plugins, model, None)
    return resolution.engine, services.models.get(resolution.engine, resolution.resolved_model)


def resolve_for_client(services: Services, model: str) -> Resolution:
    """``model`` as a client API names it: a prepared model by its id, else resolved."""
    _engine, loaded = engine_of(services, model)
    return loaded.resolution if loaded is not None else resolve_with_settings(services.settings, services.plugins, model, None)


async def ready_model(services: Services, model: str) -> LoadedModel:
    """The served model for ``model``, prepared first (just in time) if it is not ready."""
    _engine, loaded = engine_of(services, model)
    if loaded is not None and loaded.ready:
        return loaded
    return await preparing.ready_model(services, resolve_for_client(services, model), requested=model)


def model_key(services: Services, model: str) -> tuple[str, str]:
    """(engine, resolved id) of ``model``: what its requests count against (lifecycle)."""
    engine, loaded = engine_of(services, model)
    if loaded is not None:
        return loaded.key
    return engine, resolve_for_client(services, model).resolved_model


async def ready_in_use(
    services: Services,
    request: Request,
    model: str,
    keep_alive: float | None,
    check: Callable[[LoadedModel], None] | None = None,
) -> tuple[LoadedModel, Use]:
    """The model ready (prepared just in time) with this request in flight on it.

    In flight from the start: a model waited for (prepare, queue) is not idle. ``check``
    refuses what the ready model cannot do. The caller ends the use once the answer is out
    (``in_flight.ending_use`` for a stream).
    """
    use = services.lifecycle.begin(*model_key(services, model), keep_alive, route=request.url.path)
    try:
        loaded = await ready_model(services, model)
        if check is not None:
            check(loaded)
        await enter_while_connected(use, loaded, request)
    except BaseException:
        use.end()
        raise
    return loaded, use


@dataclass
class Preparing:
    """A streamed request that started (or joined) a just-in-time prepare and answers at
    once: it says something while ``job`` runs (``in_flight.prepare_progress``), then takes
    its slot with ``ready``. In flight from the start, like ``ready_in_use``."""

    services: Services
    use: Use
    job: Job
    resolution: Resolution
    model: str

    async def ready(self, check: Callable[[LoadedModel], None] | None = None) -> LoadedModel:
        """The model the finished job left, with this request in one of its slots (queued
        first if need be: the stream's end, as its client leaves, cancels the wait).
        ``Conflict`` if the prepare failed; the use ends with any error."""
        await self.job.done.wait()
        try:
            loaded = preparing.prepared_model(self.services, self.resolution, self.job, requested=self.model)
            if check is not None:
                check(loaded)
            await self.use.enter(loaded)
        except LtcaiError as exc:
            self.use.end(exc)
            raise
        return loaded


async def preparing_in_use(services: Services, request: Request, model: str, keep_alive: float | None) -> Preparing:
    """Start or join the prepare of ``model`` for a stream that answers while it runs."""
    use = services.lifecycle.begin(*model_key(services, model), keep_alive, route=request.url.path)
    with use.ending_on_error():
        resolution = resolve_for_client(services, model)
        job = await preparing.start_or_join(services, resolution, just_in_time=True)
    return Preparing(services, use, job, resolution, model)
