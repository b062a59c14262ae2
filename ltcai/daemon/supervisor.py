"""The daemon's engine processes: recorded, watched, reaped after a crash, all stopped at exit.

Starting a child (its own process group, the parent-death signal, the output pump) is
:mod:`ltcai.runtime.process`; this module is what only the daemon does with it. Each
child's pid is recorded in the store as soon as it runs, so a restarted daemon reaps a
leftover it did not get to stop. The supervisor's task group owns the watcher tasks;
its :meth:`Supervisor.spawn` is the :class:`~ltcai.runtime.process.Spawner` engine
adapters receive through ``EngineContext.spawn``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from pathlib import Path

import anyio
import structlog

from ..runtime.process import OnLine, ProcessHandle, signal_group, spawn_process
from .store import StateStore

__all__ = ["Supervisor"]

log = structlog.get_logger(__name__)


class Supervisor:
    """Starts engine processes inside the daemon's task group and stops them all at exit."""

    RECORDS = "engines"

    def __init__(self, store: StateStore, logs_dir: Path) -> None:
        self.store = store
        self.logs_dir = logs_dir
        self.processes: dict[int, ProcessHandle] = {}
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
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        on_line: OnLine | None = None,
    ) -> ProcessHandle:
        """Start an engine process (see :class:`~ltcai.runtime.process.Spawner`), watched and recorded."""
        if self._tg is None:
            raise RuntimeError("supervisor is not running")
        process = await spawn_process(name, argv, log_dir=self.logs_dir, env=env, cwd=cwd, on_line=on_line)
        self.processes[process.pid] = process
        self._tg.start_soon(self._watch, process, name=f"watch {name} {process.pid}")
        with anyio.CancelScope(shield=True):  # a running child is always on record
            await self._save_records()
        log.info("engine process started", engine=name, pid=process.pid, argv=list(argv[:3]))
        return process

    async def _watch(self, process: ProcessHandle) -> None:
        await process.watch()
        await self._forget(process)
        if not process.stopping:
            # A build step ends with 0 by design; a server that exits unasked is news.
            report = log.info if process.returncode == 0 else log.warning
            report("engine process exited", engine=process.name, pid=process.pid, returncode=process.returncode)

    async def stop_all(self, grace_s: float = 5.0) -> None:
        async with anyio.create_task_group() as tg:
            for process in list(self.processes.values()):
                tg.start_soon(process.stop, grace_s)

    async def _forget(self, process: ProcessHandle) -> None:
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
            signal_group(pgid, signal.SIGKILL)
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
