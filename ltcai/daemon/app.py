"""``ltcai serve``: the daemon's root task group, readiness, signals and shutdown.

One ``anyio.run``, one root task group: supervisor, model registry, job manager,
control server, signal task, watchdog. Start-up order is what readiness promises:
state restored and socket bound *before* ``READY=1``. Shutdown order is what users
expect: stop accepting, let open streams finish within the grace period, stop every
engine (SIGTERM to its process group, then SIGKILL), remove the socket, exit 0.
A second SIGINT/SIGTERM skips the grace period.
"""

from __future__ import annotations

import importlib.util
import os
import signal
from dataclasses import replace
from functools import partial
from pathlib import Path

import anyio
import httpx
import structlog

from .. import __version__
from ..config.settings import Settings, load_settings
from ..errors import LtcaiError
from ..plugins import build_plugin_host
from ..config.token import ensure_token
from ..runtime.files import ensure_private_dir
from ..engines.openai_client import ChatHTTP
from . import sdnotify
from .api import build_app
from .control_socket import bind_control_socket, remove_socket, socket_identity
from .http_server import ControlServer
from .jobs import JobManager
from .logs import configure_logging
from .models import ModelRegistry
from .profile_book import ProfileBook
from .services import Services
from .store import StateStore
from .supervisor import Supervisor
from .tcp_api import bind_tcp, build_tcp_app

__all__ = ["run_daemon", "serve"]

log = structlog.get_logger(__name__)


def _extra_plugin_modules() -> list[str]:
    # For development and tests: plugin modules to load without an entry point.
    raw = os.environ.get("LTCAI_PLUGINS", "")
    return [m.strip() for m in raw.split(",") if m.strip()]


class _Stopper:
    """One way to stop, whoever asks (a signal, `ltcai stop`): drain, then stop everything."""

    def __init__(self, services: Services, servers: list[ControlServer], scope: anyio.CancelScope) -> None:
        self.services = services
        self.servers = servers
        self.scope = scope
        self.stopping = False

    def stop(self, reason: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        log.info("stopping", reason=reason, grace_s=self.services.settings.shutdown_grace_s)
        sdnotify.notify("STOPPING=1")
        for server in self.servers:
            server.request_stop()

    def stop_now(self) -> None:
        log.warning("second stop signal: stopping now")
        self.scope.cancel()


async def _handle_signals(
    services: Services, stopper: _Stopper, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGHUP:
                await _reload(services)
            elif stopper.stopping:
                stopper.stop_now()
                return
            else:
                stopper.stop(signal.Signals(signum).name)


async def _reload(services: Services) -> None:
    try:
        # Reading and parsing the config file is file work: off the loop.
        fresh = await anyio.to_thread.run_sync(partial(load_settings, paths=services.settings.paths))
    except LtcaiError as exc:
        log.error("config reload failed; keeping the old settings", error=exc.message)
        return
    services.settings = replace(fresh, paths=services.settings.paths)
    services.profiles.reload_user_table(fresh.profiles)
    services.lifecycle.wake()  # keep_alive may have changed: idle deadlines are recomputed
    # Opens the daemon log file afresh: file work as well.
    await anyio.to_thread.run_sync(partial(configure_logging, fresh.log_level, log_dir=fresh.paths.logs_dir))
    log.info("config reloaded")


async def _watchdog(interval_s: float) -> None:
    while True:
        sdnotify.notify("WATCHDOG=1")
        await anyio.sleep(interval_s)


async def run_daemon(settings: Settings, *, allow_remote: bool = False) -> None:
    paths = settings.paths
    ensure_private_dir(paths.data_dir)
    store = StateStore(paths.state_dir)
    await anyio.to_thread.run_sync(store.prepare)
    plugins = build_plugin_host(disabled=settings.disable_plugins, extra_modules=_extra_plugin_modules())
    supervisor = Supervisor(store, paths.logs_dir)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0)) as http, ChatHTTP() as chat_http:
        services = Services(
            settings=settings,
            store=store,
            plugins=plugins,
            supervisor=supervisor,
            http=http,
            chat_http=chat_http,
            profiles=ProfileBook(store, plugins, settings.profiles),
            models=ModelRegistry(),
            jobs=JobManager(store),
        )
        await services.profiles.restore()
        await services.jobs.restore()
        tcp_sock = None
        if settings.http:
            token = ensure_token(paths.token_file)
            tcp_sock = bind_tcp(settings.http, allow_remote=allow_remote)
        sock = bind_control_socket(paths.socket_path)
        identity = socket_identity(paths.socket_path)
        server = ControlServer(build_app(services), [sock], grace_s=settings.shutdown_grace_s)
        servers = [server]
        if tcp_sock is not None:
            servers.append(ControlServer(build_tcp_app(services, token), [tcp_sock], grace_s=settings.shutdown_grace_s))
        try:
            async with anyio.create_task_group() as root:
                await root.start(supervisor.run)
                await root.start(services.models.run)
                await root.start(services.lifecycle.run)
                await root.start(services.jobs.run)
                stopper = _Stopper(services, servers, root.cancel_scope)
                services.request_stop = stopper.stop
                # Signals are ours before the first request is answered: a client that saw
                # the socket answer and then sent SIGTERM found the default action (killed
                # by the signal, exit -15) when this task had not run yet.
                await root.start(_handle_signals, services, stopper)
                for each in servers:
                    await root.start(each.run)
                interval = sdnotify.watchdog_interval_s()
                if interval:
                    root.start_soon(_watchdog, interval)
                sdnotify.notify(f"READY=1\nSTATUS=listening on {paths.socket_path}\nMAINPID={os.getpid()}")
                root.start_soon(chat_http.warm_up)  # after READY: start-up does not wait for it
                root.start_soon(services.metrics.load)  # prometheus_client: ~100 ms, after READY too
                log.info(
                    "ready", socket=str(paths.socket_path), http=settings.http, version=__version__, pid=os.getpid()
                )
                # The server returns once a stop signal drained it; then everything else stops.
                await _wait_for_server_exit(server)
                root.cancel_scope.cancel()
        finally:
            remove_socket(paths.socket_path, identity)
            sock.close()
            if tcp_sock is not None:
                tcp_sock.close()
    log.info("stopped")


async def _wait_for_server_exit(server: ControlServer) -> None:
    await server.finished.wait()


def _loop_options() -> dict[str, bool]:
    """uvloop where it is installed (a dependency off Windows): its C transports cut the
    daemon's CPU per streamed token by ~15% (bench/results.md §8), CPU that on a small
    machine the engine's own threads need. ``LTCAI_EVENT_LOOP=asyncio`` turns it off."""
    if os.environ.get("LTCAI_EVENT_LOOP", "uvloop") == "asyncio" or importlib.util.find_spec("uvloop") is None:
        return {}
    return {"use_uvloop": True}


def serve(socket_path: Path | None = None, http: str | None = None, allow_remote: bool = False) -> int:
    """Run the daemon in the foreground until a stop signal; the exit status."""
    try:
        settings = load_settings()
    except LtcaiError as exc:
        configure_logging()
        log.error(exc.message, code=exc.code, hint=exc.hint)
        return 1
    if socket_path is not None:
        settings = replace(settings, paths=replace(settings.paths, socket_path=socket_path))
    if http is not None:
        settings = replace(settings, http=http)
    configure_logging(settings.log_level, log_dir=settings.paths.logs_dir)
    try:
        anyio.run(partial(run_daemon, settings, allow_remote=allow_remote), backend_options=_loop_options())
    except LtcaiError as exc:
        log.error(exc.message, code=exc.code, hint=exc.hint)
        return 1
    return 0
