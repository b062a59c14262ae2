"""Everything the daemon's parts share, built once at start and passed down (no globals)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import anyio
import httpx

from ..config.settings import Settings
from ..engines.base import EngineAdapter, EngineContext, ProgressFn
from ..engines.openai_client import ChatHTTP
from ..errors import UnknownEngine
from ..plugins import PluginHost
from .jobs import JobManager
from .lifecycle import Lifecycle
from .metrics import Metrics
from .models import ModelRegistry
from .profile_book import ProfileBook
from .store import StateStore
from .supervisor import Supervisor

__all__ = ["Services"]


def _no_progress(message: str, **_: Any) -> None:
    return None


@dataclass
class Services:
    settings: Settings
    store: StateStore
    plugins: PluginHost
    supervisor: Supervisor
    http: httpx.AsyncClient  # the control plane: readiness, engine APIs, downloads
    chat_http: ChatHTTP  # the data path: chat requests to engine servers
    profiles: ProfileBook
    models: ModelRegistry
    jobs: JobManager
    started_at: float = field(default_factory=time.time)
    metrics: Metrics = field(default_factory=Metrics)
    lifecycle: Lifecycle = field(init=False)
    # Stops the daemon as SIGTERM does (set by app.run_daemon; `ltcai stop` calls it).
    request_stop: Callable[[str], None] = field(default=lambda reason: None)

    def __post_init__(self) -> None:
        self.lifecycle = Lifecycle(self)
        self.models.on_change = self.lifecycle.wake
        self.models.on_added = lambda loaded: self.metrics.loaded(loaded.resolution.engine)

    def engine(self, name: str) -> EngineAdapter:
        engines = self.plugins.engines()
        adapter = engines.get(name)
        if adapter is None:
            raise UnknownEngine(
                f"no engine named {name!r} is registered",
                hint="registered engines: " + (", ".join(sorted(engines)) or "none") + " (see `ltcai engines`)",
            )
        return adapter

    def engine_context(self, engine: str, progress: ProgressFn = _no_progress) -> EngineContext:
        paths = self.settings.paths
        return EngineContext(
            options=dict(self.settings.engines.get(engine, {})),
            models_dir=paths.models_dir,
            engines_dir=paths.engines_dir,
            logs_dir=paths.logs_dir,
            spawn=self.supervisor.spawn,
            http=self.http,
            progress=progress,
            run_sync=anyio.to_thread.run_sync,
        )
