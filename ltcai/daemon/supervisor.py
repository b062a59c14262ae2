"""Engine server processes: started in their own process group, watched, always stopped.

Each engine server is a child in its own session/process group (so a stop reaches the
whole tree it forked) with a parent-death signal on Linux (so a ``kill -9``ed daemon
leaves nothing behind). Its pid is recorded in the store before anything else happens,
so a restarted daemon reaps a leftover it did not get to stop. Exit is noticed by
awaiting the child, not by polling. Output is captured per engine: the last lines stay
in memory for error messages, all of it goes to ``logs/<engine>-<pid>.log``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import structlog

from .store import StateStore, ensure_private_dir

__all__ = ["EngineProcess", "Supervisor"]

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1
_TAIL_LINES = 60


def _pdeathsig_preexec() -> Any:
    """A preexec_fn that asks Linux to SIGKILL the child when the daemon dies, or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:  # runs in the forked child: no allocation-heavy work here
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return preexec


class EngineProcess:
    """One running engine server."""

    def __init__(
        self, supervisor: Supervisor, name: str, proc: asyncio.subprocess.Process, log_path: Path, argv: list[str]
    ) -> None:
        self.supervisor = supervisor
        self.name = name
        self.argv = argv
        self.proc = proc
        self.pid = proc.pid
        self.log_path = log_path
        self.started_at = time.time()
        self.tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self.exited = anyio.Event()
        self.returncode: int | None = None
        self.stopping = False

    @property
    def running(self) -> bool:
        return not self.exited.is_set()

    def last_lines(self, n: int = 20) -> list[str]:
        return list(self.tail)[-n:]

    async def _pump_output(self) -> None:
        assert self.proc.stdout is not None
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "ab") as sink:
            async for raw in self.proc.stdout:
                sink.write(raw)
                sink.flush()
                self.tail.append(raw.decode(errors="replace").rstrip())

    async def _watch(self) -> None:
        with contextlib.suppress(Exception):
            await self._pump_output()
        self._mark_exited(await self.proc.wait())
        await self.supervisor._forget(self)
        if not self.stopping:
            log.warning("engine process exited", engine=self.name, pid=self.pid, returncode=self.returncode)

    def _mark_exited(self, returncode: int) -> None:
        self.returncode = returncode
        self.exited.set()

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace_s``; returns once it is gone.

        Waits on the process itself, not on the watcher task: at daemon shutdown the
        watchers are cancelled before the engines are stopped.
        """
        if self.proc.returncode is not None:
            return
        self.stopping = True
        with anyio.CancelScope(shield=True):
            _signal_group(self.pid, signal.SIGTERM)
            with anyio.move_on_after(grace_s):
                await self.proc.wait()
            if self.proc.returncode is None:
                _signal_group(self.pid, signal.SIGKILL)
                await self.proc.wait()
            self._mark_exited(self.proc.returncode)
            # Children the engine forked share its process group: make sure none stays.
            _signal_group(self.pid, signal.SIGKILL)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class Supervisor:
    """Starts engine processes inside the daemon's task group and stops them all at exit."""

    RECORDS = "engines"

    def __init__(self, store: StateStore, logs_dir: Path) -> None:
        self.store = store
        self.logs_dir = logs_dir
        self.processes: dict[int, EngineProcess] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._records_lock = anyio.Lock()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the watcher tasks; on cancellation stop every engine before returning."""
        await self.reap_leftovers()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._tg = None
            with anyio.CancelScope(shield=True):
                await self.stop_all()

    async def spawn(
        self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None
    ) -> EngineProcess:
        if self._tg is None:
            raise RuntimeError("supervisor is not running")
        ensure_private_dir(self.logs_dir)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_pdeathsig_preexec(),
        )
        engine_process = EngineProcess(self, name, proc, self.logs_dir / f"{name}-{proc.pid}.log", list(argv))
        self.processes[proc.pid] = engine_process
        await self._save_records()
        self._tg.start_soon(engine_process._watch, name=f"watch {name} {proc.pid}")
        log.info("engine process started", engine=name, pid=proc.pid, argv=list(argv[:3]))
        return engine_process

    async def stop_all(self, grace_s: float = 5.0) -> None:
        async with anyio.create_task_group() as tg:
            for process in list(self.processes.values()):
                tg.start_soon(process.stop, grace_s)

    async def _forget(self, process: EngineProcess) -> None:
        self.processes.pop(process.pid, None)
        with anyio.CancelScope(shield=True):
            await self._save_records()

    async def _save_records(self) -> None:
        async with self._records_lock:
            records = [
                {"pid": p.pid, "engine": p.name, "started_at": p.started_at, "pgid": p.pid, "argv": p.argv[:3]}
                for p in self.processes.values()
            ]
            await self.store.save(self.RECORDS, records)

    async def reap_leftovers(self) -> list[int]:
        """Kill engine process groups recorded by a daemon that died without stopping them."""
        records = await self.store.read(self.RECORDS, default=[]) or []
        reaped = []
        for record in records if isinstance(records, list) else []:
            try:
                pgid = int(record.get("pgid", 0))
            except (AttributeError, TypeError, ValueError):
                log.warning("unreadable engine process record skipped", record=repr(record)[:200])
                continue
            if pgid <= 1 or not await anyio.to_thread.run_sync(_group_alive, pgid):
                continue
            if not _same_command(pgid, record.get("argv")):
                continue
            log.warning("reaping engine left by a previous daemon", engine=record.get("engine"), pgid=pgid)
            _signal_group(pgid, signal.SIGKILL)
            reaped.append(pgid)
        await self.store.save(self.RECORDS, [])
        return reaped


def _same_command(pid: int, argv: list[str] | None) -> bool:
    """Whether ``pid`` still runs the recorded command: pids are reused, engines are not."""
    if not argv:
        return True
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): trust the record; on Linux: the leader is gone, see below
    if not raw:
        # The leader died (the parent-death signal; a zombie has no cmdline) and left its
        # children in the group: exactly the leftovers to reap. A pid still naming a live
        # process group is never handed to a new process, so the group is the recorded one.
        return True
    running = raw.split(b"\0")
    return [a.decode(errors="replace") for a in running[: len(argv)]] == list(argv)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # not ours: never touch it
    # kill(0) also succeeds on a group of zombies: engines that died with the old daemon
    # and that init has not reaped yet. They hold nothing; "reaping" them only misleads
    # the log. On Linux, count only live members (blocking /proc scan: run in a thread).
    members = _live_group_members(pgid)
    return members is None or members > 0


def _live_group_members(pgid: int) -> int | None:
    """Non-zombie processes in ``pgid`` from /proc, or None without a /proc to read."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    count = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:  # after the command: state, ppid, pgrp
            count += 1
    return count
