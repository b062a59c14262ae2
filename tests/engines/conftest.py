"""Fixtures for engine adapter tests: a real Supervisor and HTTP client, progress recorded.

``async with engine_harness() as h:`` runs a :class:`Supervisor` in a task group for the
block (every process it started is stopped when the block ends) and hands out
:class:`EngineContext` objects whose progress reports land in ``h.progress``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from ltcai.daemon.store import StateStore
from ltcai.runtime.files import ensure_private_dir
from ltcai.daemon.supervisor import Supervisor
from ltcai.engines.openai_client import ChatHTTP
from ltcai.engines.base import EngineContext


@dataclass(frozen=True)
class Report:
    message: str
    done: float | None
    total: float | None
    unit: str | None


@dataclass
class Progress:
    reports: list[Report] = field(default_factory=list)

    def __call__(self, message: str, *, done: float | None = None, total: float | None = None, unit: str | None = None) -> None:
        self.reports.append(Report(message, done, total, unit))

    @property
    def messages(self) -> list[str]:
        return [r.message for r in self.reports]

    def measured(self, unit: str) -> list[Report]:
        return [r for r in self.reports if r.unit == unit]


@dataclass
class Harness:
    tmp: Path
    http: httpx.AsyncClient
    supervisor: Supervisor
    progress: Progress
    chat: ChatHTTP  # the chat data path's connection pool, as the daemon has it

    def ctx(self, **options: Any) -> EngineContext:
        return EngineContext(
            options=options,
            models_dir=self.tmp / "models",
            engines_dir=self.tmp / "engines",
            logs_dir=self.tmp / "logs",
            spawn=self.supervisor.spawn,
            http=self.http,
            progress=self.progress,
            run_sync=anyio.to_thread.run_sync,
        )


@pytest.fixture
def engine_harness(tmp_path: Path) -> Callable[[], contextlib.AbstractAsyncContextManager[Harness]]:
    @contextlib.asynccontextmanager
    async def run() -> AsyncIterator[Harness]:
        supervisor = Supervisor(StateStore(ensure_private_dir(tmp_path / "state")), tmp_path / "logs")
        async with contextlib.AsyncExitStack() as stack:
            http = await stack.enter_async_context(httpx.AsyncClient())
            chat = await stack.enter_async_context(ChatHTTP())
            tg = await stack.enter_async_context(anyio.create_task_group())
            await tg.start(supervisor.run)
            yield Harness(tmp_path, http, supervisor, Progress(), chat)
            tg.cancel_scope.cancel()  # the supervisor stops what it started

    return run


def install_script(folder: Path, name: str, target: Path) -> Path:
    """An executable ``folder/name`` that runs the Python script ``target`` with this interpreter."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\nexec {sys.executable} {target} \"$@\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    from ltcai.engines.local_server import free_port

    return free_port()


@pytest.fixture
def bare_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH is one empty folder (plus the shell, for script shebangs): no engine binaries."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", os.pathsep.join([str(folder), "/bin"]))
    return folder
