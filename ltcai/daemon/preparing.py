"""Start or join a prepare: the one way any API (control, OpenAI, Ollama…) gets a model prepared.

Jobs are single-flight per (engine, model) (``JobManager.start``); what every route adds
on top lives here once: a model already chat-ready is not prepared again unless forced,
and a new job is on disk before any client hears its id.
"""

from __future__ import annotations

from ..compat import Resolution
from ..errors import Conflict
from .jobs import Job
from .models import LoadedModel
from .prepare_runner import run_prepare
from .services import Services

__all__ = ["prepared_model", "ready_model", "start_or_join"]


async def start_or_join(
    services: Services, resolution: Resolution, *, force: bool = False, probe: bool = False, just_in_time: bool = False
) -> Job:
    """The prepare job for ``resolution``: the finished one that made the model chat-ready
    (unless ``force``, or ``probe``: the capability probes run in a prepare's smoke test),
    the one running now, or a new one (with every probe if ``probe``).

    ``just_in_time``: a client's request needs the model (not a user asking to prepare
    it), so a new job may reuse a recent smoke verdict (``smoke_reuse``). Joining a job
    already running takes it as it is, either way."""
    loaded = services.models.get(resolution.engine, resolution.resolved_model)
    if loaded is not None and loaded.ready and not (force or probe):
        finished = services.jobs.jobs.get(loaded.job_id)
        if finished is not None:
            return finished
    job, created = services.jobs.start(resolution, lambda j: run_prepare(services, j, probe=probe, just_in_time=just_in_time))
    if created:
        # On disk before the client hears of it: a job id we answered with must still be
        # there (INTERRUPTED) after a kill -9 a millisecond later.
        await services.jobs.persist(job)
    return job


async def ready_model(services: Services, resolution: Resolution, *, requested: str | None = None) -> LoadedModel:
    """The chat-ready served model for ``resolution``, prepared first (just in time) if it
    is not; ``Conflict`` (``model_not_ready``) naming the reason if the prepare fails.
    ``requested`` is the id as the client wrote it, for the message."""
    loaded = services.models.get(resolution.engine, resolution.resolved_model)
    if loaded is not None and loaded.ready:
        return loaded
    job = await start_or_join(services, resolution, just_in_time=True)
    await job.done.wait()
    return prepared_model(services, resolution, job, requested=requested)


def prepared_model(services: Services, resolution: Resolution, job: Job, *, requested: str | None = None) -> LoadedModel:
    """What ``job`` (done) left: the chat-ready model, or ``Conflict`` naming why not."""
    report = job.machine.report
    loaded = services.models.get(resolution.engine, resolution.resolved_model)
    if report is None or not report.ready_to_chat or loaded is None:
        reason = report.message if report else "the prepare job did not finish"
        raise Conflict(
            f"{requested or resolution.input_id} could not be made ready: {reason}",
            hint=f"see `ltcai jobs {job.id}` for the full report",
            code="model_not_ready",
        )
    return loaded
