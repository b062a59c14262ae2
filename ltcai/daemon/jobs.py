"""Prepare jobs: single-flight per (engine, model), followable from the start, persisted.

A job owns a :class:`PrepareMachine` and an append-only list of events. Followers read
the list from index 0 and then wait for more, so a client that joins late sees the
whole story and every client sees the same terminal event; nothing is queued per
client, so a slow follower cannot hold up the job or lose events.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import structlog

from ..compat import Resolution
from ..errors import ErrorCode, LtcaiError, NotFound
from .prepare_machine import PrepareMachine, PrepareState, StepFailed, Transition, restore
from .store import StateStore

__all__ = ["Job", "JobManager"]

log = structlog.get_logger(__name__)

_PROGRESS_MIN_INTERVAL_S = 0.1  # progress events are throttled; state events never are
_KEEP_FINISHED_JOBS = 200
_CRASHED = {
    "code": ErrorCode.INTERNAL_ERROR.value,
    "message": "the prepare job hit a bug and could not record its outcome",
    "hint": "this is a bug in ltcai; the daemon log has the traceback",
}


class Job:
    def __init__(self, machine: PrepareMachine, resolution: Resolution | None) -> None:
        self.machine = machine
        self.resolution = resolution
        self.events: list[dict[str, Any]] = []
        # Events saved but not yet published (``stage``/``publish_staged``): a kill -9 right
        # after a follower saw a state must not restore the job in the state before.
        self.staged: list[dict[str, Any]] = []
        self.persist_lock = anyio.Lock()
        self.done = anyio.Event()
        self._changed = anyio.Event()
        self.cancel_requested = False
        self.step_scope: anyio.CancelScope | None = None
        self.created_at = time.time()
        self._last_progress = 0.0

    @property
    def id(self) -> str:
        return self.machine.job_id

    @property
    def key(self) -> tuple[str, str]:
        return (self.machine.engine, self.machine.model)

    def publish(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def stage(self, *events: dict[str, Any]) -> None:
        """Hold ``events`` back until ``publish_staged``; every save from now on includes them."""
        self.staged.extend(events)

    def publish_staged(self) -> None:
        events, self.staged = self.staged, []
        for event in events:
            self.publish(event)

    def transition_event(self, transition: Transition) -> dict[str, Any]:
        return {
            "type": "state",
            "job_id": self.id,
            # The message tells how ``from`` ended (or, for the first event, what starts).
            "from": transition.source.value if transition.source else None,
            "state": transition.target.value,
            "message": transition.message,
            "time": transition.time,
        }

    def publish_transition(self, transition: Transition) -> None:
        self.publish(self.transition_event(transition))

    def publish_progress(
        self, message: str, done: float | None, total: float | None, unit: str | None
    ) -> None:
        now = time.monotonic()
        finished = done is not None and total is not None and done >= total
        if now - self._last_progress < _PROGRESS_MIN_INTERVAL_S and not finished:
            return
        self._last_progress = now
        progress = None if done is None else {"done": done, "total": total, "unit": unit}
        self.publish(
            {
                "type": "progress",
                "job_id": self.id,
                "state": self.machine.state.value,
                "message": message,
                "progress": progress,
                "time": time.time(),
            }
        )

    def report_event(self) -> dict[str, Any]:
        report = self.machine.report
        assert report is not None
        return {"type": "report", "job_id": self.id, "report": report.to_dict(), "time": time.time()}

    def finish(self) -> None:
        self.publish(self.report_event())
        self.done.set()

    def end_after_crash(self, exc: Exception) -> None:
        """End a job whose runner raised: FAILED with ``internal_error`` where it stood,
        and the final event published, so every follower gets an end."""
        if self.done.is_set():
            return
        self.staged.clear()  # saved, perhaps, but never told: the end told below replaces them
        machine = self.machine
        try:
            if not machine.state.is_terminal:
                if not machine.started:
                    machine.start()  # crashed before it started: still a job a client may follow
                action = machine.handle(
                    StepFailed(
                        machine.state,
                        ErrorCode.INTERNAL_ERROR,
                        f"preparing {machine.model} hit a bug in {machine.state.value}: {type(exc).__name__}: {exc}",
                        hint="this is a bug in ltcai; the daemon log has the traceback",
                    )
                )
                if action.transition is not None:
                    self.publish_transition(action.transition)
            elif not self._published_state(machine.state):
                # The machine had ended the job; the crash came before its runner said so.
                report = machine.report
                assert report is not None
                source = machine.history[-2] if len(machine.history) > 1 else None
                self.publish_transition(
                    Transition(self.id, source, machine.state, None, machine.message, report.finished_at)
                )
            self.finish()
        except Exception:  # the machine itself is broken: end the stream without a report
            log.exception("could not record the crash of a prepare job")
            self.publish({"type": "error", "job_id": self.id, "error": _CRASHED, "time": time.time()})
            self.done.set()

    def _published_state(self, state: PrepareState) -> bool:
        last = next((e for e in reversed(self.events) if e.get("type") == "state"), None)
        return last is not None and last["state"] == state.value

    async def wait_changed(self) -> None:
        """Until the next event is published; at once when the job is done. Safe to cancel
        (a timeout around it), unlike a ``follow`` iterator, which a cancel would close."""
        if not self.done.is_set():
            await self._changed.wait()

    async def follow(self) -> AsyncIterator[dict[str, Any]]:
        """Every event from the job's start, then live ones, ending with the report."""
        index = 0
        while True:
            while index < len(self.events):
                yield self.events[index]
                index += 1
            if self.done.is_set():
                return
            await self._changed.wait()

    def summary(self) -> dict[str, Any]:
        report = self.machine.report
        return {
            "job_id": self.id,
            "engine": self.machine.engine,
            "model": self.machine.model,
            "state": self.machine.state.value,
            "status": report.status if report else "running",
            "message": self.machine.message,
            "created_at": self.created_at,
        }


JobRunner = Callable[[Job], Awaitable[None]]


class JobManager:
    """Creates, runs, finds and cancels jobs; one running job per (engine, model)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.jobs: dict[str, Job] = {}
        self._running: dict[tuple[str, str], Job] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    async def restore(self) -> None:
        """Load job records; a job that was running when the daemon stopped is INTERRUPTED."""
        names = await anyio.to_thread.run_sync(self.store.names_sync, "jobs")
        for name in names:
            document = await self.store.read(name)
            if not document:
                continue
            try:
                machine = restore(document["machine"], interrupted=True)
                resolution = Resolution.from_dict(document["resolution"]) if document.get("resolution") else None
                created_at = float(document.get("created_at", time.time()))
                events = document.get("events", [])
                if not isinstance(events, list):
                    raise TypeError(f"events must be a list, not {type(events).__name__}")
            except (ValueError, KeyError, TypeError, AttributeError, LtcaiError) as exc:
                # Valid JSON of the wrong shape (the store sets aside only unparsable files).
                log.warning("unreadable job record skipped", record=name, error=str(exc))
                continue
            job = Job(machine, resolution)
            job.created_at = created_at
            job.events = events
            if machine.state is PrepareState.INTERRUPTED and document["machine"].get("state") != "interrupted":
                await self._persist(job)
            job.done.set()
            self.jobs[job.id] = job
        await self._prune()

    def find_running(self, engine: str, model: str) -> Job | None:
        return self._running.get((engine, model))

    def start(self, resolution: Resolution, runner: JobRunner) -> tuple[Job, bool]:
        """The running job for this (engine, model), or a new one; True if it is new."""
        key = (resolution.engine, resolution.resolved_model)
        running = self._running.get(key)
        if running is not None:
            return running, False
        if self._tg is None:
            raise RuntimeError("job manager is not running")
        machine = PrepareMachine(uuid.uuid4().hex[:12], resolution.engine, resolution.resolved_model)
        job = Job(machine, resolution)
        self.jobs[job.id] = job
        self._running[key] = job
        self._tg.start_soon(self._run, job, runner, name=f"job {job.id}")
        return job, True

    async def _run(self, job: Job, runner: JobRunner) -> None:
        with structlog.contextvars.bound_contextvars(
            job_id=job.id, engine=job.machine.engine, model=job.machine.model
        ):
            try:
                await runner(job)
            except Exception as exc:
                # A bug in the runner (the machine, a cleanup): it must not cancel the root
                # task group (that is the daemon) nor leave this job's followers waiting.
                log.exception("prepare job crashed")
                job.end_after_crash(exc)
            finally:
                self._running.pop(job.key, None)
                with anyio.CancelScope(shield=True):
                    await self._persist(job)
                    await self._prune()

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}", hint="list jobs with `ltcai jobs`", code=ErrorCode.JOB_NOT_FOUND)
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if not job.done.is_set():
            job.cancel_requested = True
            if job.step_scope is not None:
                job.step_scope.cancel()
        return job

    async def persist(self, job: Job) -> None:
        await self._persist(job)

    async def _persist(self, job: Job) -> None:
        # One write at a time per job, each built when its turn comes: a slow write of an
        # older record can never land after a newer one. Staged events (about to be
        # published) are saved too, so whatever a follower has seen is on disk.
        async with job.persist_lock:
            document = {
                "machine": job.machine.snapshot(),
                "resolution": job.resolution.to_dict() if job.resolution else None,
                "created_at": job.created_at,
                # Progress events are transient; the state events and the report are the story.
                "events": [e for e in (*job.events, *job.staged) if e.get("type") != "progress"],
            }
            await self.store.save(f"jobs/{job.id}", document)

    async def _prune(self) -> None:
        finished = sorted((j for j in self.jobs.values() if j.done.is_set()), key=lambda j: j.created_at)
        for job in finished[:-_KEEP_FINISHED_JOBS] if len(finished) > _KEEP_FINISHED_JOBS else []:
            del self.jobs[job.id]
            await self.store.delete(f"jobs/{job.id}")  # file work: in a worker thread

    def list(self) -> list[Job]:
        return sorted(self.jobs.values(), key=lambda j: j.created_at)
