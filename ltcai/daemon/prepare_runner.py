"""The async runner of a prepare job: does the I/O the pure state machine asks for.

Each step runs in its own cancel scope whose deadline is the stall timeout, pushed
forward by every progress report: a step that keeps moving never times out, one that
stops moving fails with ``stalled``. Cancelling a job cancels the running step's
scope; whatever the job started (an engine server) is stopped before it ends, so a
cancelled or failed job leaves nothing half-done.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from .._lazy import import_off_loop
from ..compat import SMOKE_PROMPT, Profile, capabilities_to_dict
from ..engines.base import DownloadResult, EngineCheck, EngineContext, ServedModel
from ..errors import EngineUnavailable, ErrorCode, LtcaiError
from . import chat, probes, smoke_reuse
from .jobs import Job
from .models import CRASH_WINDOW_S, LoadedModel
from .readiness import Readiness
from .prepare_machine import (
    Action,
    Cancel,
    Event,
    Finish,
    PrepareState,
    RunStep,
    SmokeDone,
    StepDone,
    StepFailed,
)
from .services import Services
from .report import SmokeTest

__all__ = ["run_prepare"]

log = structlog.get_logger(__name__)

S = PrepareState
_SMOKE_MAX_TOKENS = 64


@dataclass
class _Work:
    """What the steps of one job hand each other."""

    services: Services
    job: Job
    ctx: EngineContext
    check: EngineCheck | None = None
    download: DownloadResult | None = None
    profile: Profile | None = None
    served: ServedModel | None = None
    started_process: bool = False
    probe: bool = False  # run every capability probe after the smoke test, not only context
    just_in_time: bool = False  # started by a client's request: may reuse a smoke verdict
    extra: dict[str, Any] = field(default_factory=dict)


async def run_prepare(services: Services, job: Job, *, probe: bool = False, just_in_time: bool = False) -> None:
    resolution = job.resolution
    assert resolution is not None
    stall_s = services.settings.stall_timeout_s

    def progress(message: str, *, done: float | None = None, total: float | None = None, unit: str | None = None) -> None:
        if job.step_scope is not None:
            job.step_scope.deadline = anyio.current_time() + stall_s
        job.publish_progress(message, done, total, unit)

    ctx = services.engine_context(resolution.engine, progress)
    # A prepare that probes was asked for by the user: it measures everything anew.
    work = _Work(services, job, ctx, probe=probe, just_in_time=just_in_time and not probe)
    action: Action = job.machine.start()
    try:
        while isinstance(action, RunStep):
            # On disk before any follower hears of it (Job.stage).
            job.stage(job.transition_event(action.transition))
            await services.jobs.persist(job)
            job.publish_staged()
            log.info("prepare state", state=action.state.value, message=action.transition.message)
            event = await _run_step(work, action.state, stall_s)
            action = job.machine.handle(event)
        # The machine has decided; only now does a chat-ready model join the registry, before
        # anyone hears the outcome, so a client told "ready" finds it there.
        if action.state.ready_to_chat:
            _register(work, action)
    finally:
        # Failed, cancelled, crashed, or the daemon is stopping under us: leave nothing
        # running that the registry did not take.
        with anyio.CancelScope(shield=True):
            await _cleanup(work)
    if action.transition is not None:
        job.stage(job.transition_event(action.transition))
    job.stage(job.report_event())
    with anyio.CancelScope(shield=True):
        await services.jobs.persist(job)
    job.publish_staged()
    log.info("prepare finished", state=action.state.value, message=job.machine.message)
    services.metrics.prepare_done(job.machine.report)
    job.done.set()


def _register(work: _Work, finish: Finish) -> None:
    """Hand the served model to the registry with the machine's verdict as its status."""
    resolution = work.job.resolution
    assert work.served is not None and work.profile is not None and resolution is not None
    work.services.models.add(
        LoadedModel(resolution=resolution, served=work.served, profile=work.profile, status=finish.readiness, job_id=work.job.id)
    )


async def _run_step(work: _Work, state: PrepareState, stall_s: float) -> Event:
    job = work.job
    if job.cancel_requested:
        return Cancel()
    with anyio.CancelScope(deadline=anyio.current_time() + stall_s) as scope:
        job.step_scope = scope
        try:
            return await _STEPS[state](work)
        except LtcaiError as exc:
            return StepFailed.from_error(state, exc)
        except Exception as exc:  # a bug in an adapter: reported, never a traceback to the user
            log.exception("step crashed", state=state.value)
            return StepFailed(
                state,
                ErrorCode.INTERNAL_ERROR,
                f"{job.machine.engine} failed unexpectedly in {state.value}: {type(exc).__name__}: {exc}",
                hint="this is a bug; the daemon log has the traceback",
            )
        finally:
            job.step_scope = None
    if job.cancel_requested:
        return Cancel()
    return StepFailed(
        state,
        ErrorCode.STALLED,
        f"{state.value} made no progress for {stall_s:g} s",
        hint="raise stall_timeout_s in the config if this step is legitimately slow",
    )


async def _resolving(work: _Work) -> Event:
    resolution = work.job.resolution
    assert resolution is not None
    message = f"{resolution.input_id} → {resolution.resolved_model} on {resolution.engine}"
    return StepDone(S.RESOLVING, message, extra={"resolution": resolution.to_dict()})


async def _engine_check(work: _Work) -> Event:
    adapter = work.services.engine(work.job.machine.engine)
    check = await adapter.check(work.ctx)
    work.check = check
    if check.available:
        version = f" {check.version}" if check.version else ""
        return StepDone(S.ENGINE_CHECK, f"{adapter.name}{version} is available")
    if not check.installable:
        raise EngineUnavailable(
            f"{adapter.name} is not available: {check.reason}", hint=check.install_hint
        )
    return StepDone(S.ENGINE_CHECK, f"{adapter.name} is not installed ({check.reason}); installing it")


async def _engine_install(work: _Work) -> Event:
    adapter = work.services.engine(work.job.machine.engine)
    assert work.check is not None
    result = await adapter.install(work.ctx, work.check)
    if result is None:
        return StepDone(S.ENGINE_INSTALL, "nothing to install", skipped=True)
    return StepDone(S.ENGINE_INSTALL, result.message, extra={"install_result": result.to_dict()})


async def _downloading(work: _Work) -> Event:
    adapter = work.services.engine(work.job.machine.engine)
    resolution = work.job.resolution
    assert resolution is not None
    result = await adapter.download(work.ctx, resolution)
    work.download = result
    metadata = None
    if result is not None and result.path:  # a GGUF's header or an HF folder's config files
        model_metadata = await import_off_loop("ltcai.engines.model_metadata")
        metadata = await anyio.to_thread.run_sync(model_metadata.read_model_metadata, result.path)
    work.profile = work.services.profiles.build(resolution.resolved_model, resolution.engine, metadata)
    work.ctx.profile = work.profile
    if result is None:
        return StepDone(S.DOWNLOADING, "nothing to download", skipped=True)
    extra = {"download_result": result.to_dict(), "downloaded": True}
    if not result.downloaded:
        return StepDone(S.DOWNLOADING, f"already present: {result.message or result.path}", skipped=True, extra=extra)
    # An engine with its own store (Ollama, the fake) may have no path to show.
    return StepDone(S.DOWNLOADING, f"downloaded {result.path or result.message or 'the weights'}", extra=extra)


async def _server_starting(work: _Work) -> Event:
    services = work.services
    adapter = services.engine(work.job.machine.engine)
    resolution = work.job.resolution
    assert resolution is not None
    # A model still served from an earlier prepare is replaced: its server may be stale.
    previous = services.models.remove(resolution.engine, resolution.resolved_model)
    if previous is not None and previous.served.process is not None:
        await previous.served.process.stop()
    await _restart_backoff(work)
    sequences = await adapter.kv_sequences(work.ctx)
    estimate = await services.lifecycle.make_room(work.job, work.download, work.ctx.options, sequences)  # or not_enough_memory
    shrunk = estimate is not None and estimate.context_note
    if shrunk:  # the configured context did not fit the memory budget: the largest that does
        work.ctx.options["n_ctx"] = estimate.context_tokens
    served = await adapter.serve(work.ctx, resolution, work.download)
    work.served = served
    work.started_process = served.process is not None
    where = f"pid {served.process.pid}, " if served.process else ""
    context = f"; context {estimate.context_tokens} tokens per slot: {estimate.context_note}" if shrunk else ""
    return StepDone(S.SERVER_STARTING, f"server answering ({where}{served.base_url}){context}")


async def _restart_backoff(work: _Work) -> None:
    """Wait before starting an engine that keeps crashing (see ``ModelRegistry.restart_delay``).

    The wait reports progress every second: it is a pause we chose, not a stall.
    """
    resolution = work.job.resolution
    assert resolution is not None
    models = work.services.models
    delay = models.restart_delay(resolution.engine, resolution.resolved_model)
    if not delay:
        return
    crashes = models.recent_crashes(resolution.engine, resolution.resolved_model)
    log.warning("engine crashed repeatedly; backing off", crashes=crashes, delay_s=delay)
    deadline = anyio.current_time() + delay
    while (left := deadline - anyio.current_time()) > 0:
        work.ctx.progress(
            f"the engine crashed {crashes} times in the last {CRASH_WINDOW_S / 60:g} minutes;"
            f" starting it again in {left:.0f} s",
            done=delay - left, total=delay, unit="s",
        )
        await anyio.sleep(min(1.0, left))


async def _model_serving(work: _Work) -> Event:
    assert work.served is not None
    served_ids = await chat.list_served_models(work.services.http, work.served)
    message = f"serving {work.served.model}" + (f" (engine lists: {', '.join(served_ids[:3])})" if served_ids else "")
    return StepDone(S.MODEL_SERVING, message)


async def _model_loading(work: _Work) -> Event:
    adapter = work.services.engine(work.job.machine.engine)
    assert work.served is not None and work.job.resolution is not None
    result = await adapter.load(work.ctx, work.served)
    if result is not None and result.current_id:
        work.job.resolution = work.job.resolution.with_loaded_id(result.current_id)
    current = work.job.resolution.expected_current
    if result is None:
        return StepDone(S.MODEL_LOADING, "loaded when the server started", skipped=True, extra={"loaded": True, "current": current})
    extra: dict[str, Any] = {"loaded": result.loaded, "current": current}
    if result.current_id:  # the report's resolution follows the engine's id (SPEC §5 "after load")
        extra["resolution"] = work.job.resolution.to_dict()
    return StepDone(S.MODEL_LOADING, result.message, extra=extra)


async def _smoke_test(work: _Work) -> Event:
    services = work.services
    assert work.served is not None and work.profile is not None and work.job.resolution is not None
    weights = await _stamp(work)
    record = services.profiles.smoke_record(work.profile)
    refusal = smoke_reuse.reuse_refusal(record, weights, _setup(work)) if work.just_in_time else "prepared on request"
    if refusal is None:
        assert record is not None
        return await _reuse(work, record)
    log.info("smoke test runs", why=refusal)
    started = time.perf_counter()
    outcome = await chat.smoke_test(services, work.served, work.profile, max_tokens=_SMOKE_MAX_TOKENS)
    seconds = time.perf_counter() - started
    # The probes run here, inside SMOKE_TEST, so READY is announced with every verdict on
    # the profile (see ``probes``); a model that cannot chat is not probed for more.
    keys = ("context", *probes.GENERATING) if work.probe and outcome.verdict.usable else ("context",)
    work.profile = await _probed(work, outcome.profile, keys)
    smoke = SmokeTest(SMOKE_PROMPT, outcome.answer, outcome.verdict.status, outcome.verdict.reason, seconds)
    if weights is not None:  # what a later just-in-time prepare compares against (with what it learned)
        record = smoke_reuse.SmokeRecord(smoke, time.time(), weights, _setup(work))
        await services.profiles.put_smoke_record(work.profile, record)
    return SmokeDone(
        smoke.status, smoke.reason, smoke.answer, smoke.prompt, seconds,
        capabilities=capabilities_to_dict(work.profile.capabilities),
    )  # fmt: skip


async def _reuse(work: _Work, record: smoke_reuse.SmokeRecord) -> Event:
    """The earlier verdict stands; only the context is measured (one GET: this load's own)."""
    assert work.profile is not None
    work.profile = await _probed(work, work.profile, ("context",))
    smoke = record.smoke
    return SmokeDone(
        smoke.status, smoke.reason, smoke.answer, smoke.prompt, smoke.seconds,
        capabilities=capabilities_to_dict(work.profile.capabilities), reused=record.describe(time.time()),
    )  # fmt: skip


async def _probed(work: _Work, profile: Profile, keys: tuple[str, ...]) -> Profile:
    """``profile`` with the probes ``keys`` measured on the served model, saved.

    What the smoke test and the probes taught the profile is kept whatever the verdict;
    the model is registered with it (``_register``) only if the machine decides it is chat-ready.
    """
    assert work.served is not None and work.job.resolution is not None
    trial = LoadedModel(resolution=work.job.resolution, served=work.served, profile=profile,
                        status=Readiness.READY, job_id=work.job.id)  # fmt: skip
    probed = await probes.probe_capabilities(work.services, trial, keys, work.ctx.progress)
    return await work.services.profiles.put(probed)


def _setup(work: _Work) -> str:
    assert work.profile is not None
    return smoke_reuse.fingerprint(work.profile, work.check.version if work.check else None, work.ctx.options)


async def _stamp(work: _Work) -> smoke_reuse.WeightsStamp | None:
    """The stamp of the weights the engine loaded; None for an engine with no local file."""
    path = work.download.path if work.download is not None else None
    return await anyio.to_thread.run_sync(smoke_reuse.stamp_weights, path) if path else None


async def _cleanup(work: _Work) -> None:
    """Stop a server this job started and did not hand over as a ready model."""
    if work.served is None or not work.started_process:
        return
    resolution = work.job.resolution
    loaded = work.services.models.get(resolution.engine, resolution.resolved_model) if resolution else None
    if loaded is not None and loaded.served is work.served:
        return
    assert work.served.process is not None
    await work.served.process.stop()


_STEPS = {
    S.RESOLVING: _resolving,
    S.ENGINE_CHECK: _engine_check,
    S.ENGINE_INSTALL: _engine_install,
    S.DOWNLOADING: _downloading,
    S.SERVER_STARTING: _server_starting,
    S.MODEL_SERVING: _model_serving,
    S.MODEL_LOADING: _model_loading,
    S.SMOKE_TEST: _smoke_test,
}
