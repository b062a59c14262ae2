"""The control API: JSON over HTTP on the Unix socket (DESIGN.md "Control API").

Errors are ``{"error": {"code", "message", "hint"}}`` with a proper status; a bug is
logged with its traceback in the daemon log and reaches the client only as
``internal_error``. Long work streams NDJSON events, one JSON object a line.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import __version__
from ..compat import REMOTE_PROVIDERS
from ..core import explain_rows, profile_view, resolve_with_settings
from ..errors import LtcaiError, NotFound
from . import chat
from .body import optional_bool, optional_str, read_json_object, required_str
from .engine_install import install_events
from .http_errors import error_body, exception_handlers, ndjson_stream
from .in_flight import ending_use, enter_while_connected, take_keep_alive
from .metrics import metrics_route
from .ollama_api import ollama_app
from .openai_api import openai_routes
from .preparing import start_or_join
from .services import Services
from .tcp_access import access_warnings
from .validation import check_engine_takes, check_model_sees, parse_chat

__all__ = ["build_app", "error_body", "exception_handlers"]


def _ndjson(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    return ndjson_stream(events, lambda exc: {"type": "error", "error": exc.to_dict()})


def build_app(services: Services) -> Starlette:
    settings = services.settings
    limit = settings.max_body_bytes

    async def status(request: Request) -> Response:
        running = [j for j in services.jobs.list() if not j.done.is_set()]
        return JSONResponse(
            {
                "version": __version__,
                "pid": os.getpid(),
                "uptime_s": round(time.time() - services.started_at, 3),
                "socket": str(settings.paths.socket_path),
                "data_dir": str(settings.paths.data_dir),
                "engines": sorted(services.plugins.engines()),
                "jobs_running": len(running),
                "models": [m.to_dict() for m in services.models.all()],
                "warnings": access_warnings(settings),
            }
        )

    async def engines(request: Request) -> Response:
        results: dict[str, Any] = {}

        async def check(name: str) -> None:
            adapter = services.engine(name)
            try:
                outcome = (await adapter.check(services.engine_context(name))).to_dict()
            except LtcaiError as exc:
                outcome = {"available": False, "reason": exc.message, "install_hint": exc.hint}
            kind = "remote" if name in REMOTE_PROVIDERS else "local"
            results[name] = {"name": name, "kind": kind, "description": adapter.description, **outcome}

        async with anyio.create_task_group() as tg:
            for name in services.plugins.engines():
                tg.start_soon(check, name)
        return JSONResponse({"engines": [results[n] for n in sorted(results)]})

    async def install_engine(request: Request) -> Response:
        name = request.path_params["name"]
        services.engine(name)  # an unknown engine is a 400 before any stream starts
        return _ndjson(install_events(services, name))

    async def prepare(request: Request) -> Response:
        body = await read_json_object(request, limit)
        model = required_str(body, "model")
        resolution = resolve_with_settings(services.settings, services.plugins, model, optional_str(body, "engine"))
        stream = optional_bool(body, "stream", default=True)
        job = await start_or_join(
            services, resolution, force=optional_bool(body, "force", default=False),
            probe=optional_bool(body, "probe", default=False),
            # A client preparing for its own request (`ltcai chat`), not the user asking to prepare.
            just_in_time=optional_bool(body, "just_in_time", default=False),
        )  # fmt: skip
        if not stream:
            return JSONResponse(job.summary(), status_code=202)
        return _ndjson(job.follow())

    async def list_jobs(request: Request) -> Response:
        return JSONResponse({"jobs": [j.summary() for j in services.jobs.list()]})

    async def show_job(request: Request) -> Response:
        job = services.jobs.get(request.path_params["job_id"])
        report = job.machine.report
        return JSONResponse({**job.summary(), "report": report.to_dict() if report else None, "events": job.events})

    async def job_events(request: Request) -> Response:
        return _ndjson(services.jobs.get(request.path_params["job_id"]).follow())

    async def cancel_job(request: Request) -> Response:
        job = services.jobs.cancel(request.path_params["job_id"])
        with anyio.move_on_after(30):
            await job.done.wait()
        return JSONResponse(job.summary())

    async def list_models(request: Request) -> Response:
        lifecycle = services.lifecycle
        models = services.models.all()
        return JSONResponse({"models": await lifecycle.model_views(models), **lifecycle.summary(models)})

    async def _loaded_named(request: Request) -> Any:
        body = await read_json_object(request, limit)
        resolution = resolve_with_settings(services.settings, services.plugins, required_str(body, "model"), optional_str(body, "engine"))
        loaded = services.models.get(resolution.engine, resolution.resolved_model)
        if loaded is None:
            raise NotFound(f"{resolution.input_id} is not loaded", hint="see `ltcai ps`", code="model_not_loaded")
        return loaded

    async def unload(request: Request) -> Response:
        loaded = await _loaded_named(request)
        await services.lifecycle.unload(loaded, "requested")
        return JSONResponse({"unloaded": loaded.to_dict()})

    async def pin(request: Request) -> Response:
        loaded = await _loaded_named(request)
        services.lifecycle.pin(loaded, request.url.path.endswith("/pin"))
        return JSONResponse({"model": (await services.lifecycle.model_views([loaded]))[0]})

    async def stop_daemon(request: Request) -> Response:
        services.request_stop("ltcai stop")
        return JSONResponse({"stopping": True, "pid": os.getpid()})

    async def list_profiles(request: Request) -> Response:
        return JSONResponse({"profiles": [profile_view(p) for _k, p in services.profiles.cache.items()]})

    def _profile_or_404(key: str) -> Any:
        for existing, profile in services.profiles.cache.items():
            if existing == key:
                return profile
        raise NotFound(f"no profile {key!r}", hint="list them with `ltcai profiles`", code="profile_not_found")

    async def show_profile(request: Request) -> Response:
        profile = _profile_or_404(request.path_params["key"])
        return JSONResponse({"profile": profile_view(profile), "explain": explain_rows(profile)})

    async def forget_profile(request: Request) -> Response:
        key = request.path_params["key"]
        _profile_or_404(key)
        await services.profiles.forget(key)
        return JSONResponse({"forgotten": key})

    async def chat_route(request: Request) -> Response:
        body, keep_alive = take_keep_alive(await read_json_object(request, limit))
        engine = optional_str(body, "engine")
        if "messages" not in body:  # the CLI's one-shot form: a prompt is one user turn
            body = {**body, "messages": [{"role": "user", "content": required_str(body, "prompt")}]}
            del body["prompt"]
        call = parse_chat(body, extra_fields=("engine",))
        resolution = resolve_with_settings(services.settings, services.plugins, call.model, engine)
        check_engine_takes(call, resolution.engine, services.engine(resolution.engine).request_rules.fields)
        loaded = services.models.get(resolution.engine, resolution.resolved_model)
        if loaded is not None:
            check_model_sees(call, call.model, vision=loaded.profile.vision)
        use = services.lifecycle.begin(resolution.engine, resolution.resolved_model, keep_alive, route="/chat")
        with use.ending_on_error():
            if loaded is not None and loaded.ready:  # else the chat says model_not_ready
                await enter_while_connected(use, loaded, request)
            if call.stream:  # the response ends the use when the stream is over
                return ending_use(_ndjson(use.watch(chat.chat_stream(services, loaded, call))), use)
        with use.ending():
            answer = await chat.chat_once(services, loaded, call)
            use.usage(answer.usage)
        return JSONResponse(
            {
                "model": resolution.resolved_model,
                "content": answer.content,
                "reasoning": answer.reasoning,
                "tool_calls": answer.tool_calls,
                "finish_reason": answer.finish_reason,
                "usage": answer.usage,
                "recovered": answer.recovered,
            }
        )

    async def logs(request: Request) -> Response:
        engine = request.query_params.get("engine")
        processes = [
            {"engine": p.name, "pid": p.pid, "log_path": str(p.log_path), "tail": p.last_lines(40)}
            for p in services.supervisor.processes.values()
            if engine is None or p.name == engine
        ]
        return JSONResponse({"engines": processes})

    routes = [
        Route("/status", status),
        Route("/engines", engines),
        Route("/engines/{name}/install", install_engine, methods=["POST"]),
        Route("/prepare", prepare, methods=["POST"]),
        Route("/jobs", list_jobs),
        Route("/jobs/{job_id}", show_job),
        Route("/jobs/{job_id}/events", job_events),
        Route("/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
        Route("/models", list_models),
        Route("/models/unload", unload, methods=["POST"]),
        Route("/models/pin", pin, methods=["POST"]),
        Route("/models/unpin", pin, methods=["POST"]),
        Route("/shutdown", stop_daemon, methods=["POST"]),
        metrics_route(services),
        Route("/profiles", list_profiles),
        Route("/profiles/{key:path}", show_profile),
        Route("/profiles/{key:path}", forget_profile, methods=["DELETE"]),
        Route("/chat", chat_route, methods=["POST"]),
        Route("/logs", logs),
    ]
    return Starlette(routes=[*routes, *openai_routes(services), ollama_app(services)], exception_handlers=exception_handlers())
