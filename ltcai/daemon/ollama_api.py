"""Ollama's native API (github.com/ollama/ollama docs/api.md), so Ollama clients work unchanged.

``/api/chat``, ``/api/generate`` (NDJSON streamed unless ``"stream": false``; in
``ollama_chat``, with how a stream waits on a just-in-time prepare), ``/api/embed``, ``/api/embeddings``, ``/api/tags``, ``/api/ps``, ``/api/show``,
``/api/pull`` (a prepare's progress as Ollama's status lines), ``/api/delete``,
``/api/version``. Requests go through the same validator and fast path as ``/v1``
(profile parameters, post-processing of content, never of tool calls, the recovery
retry) and the same model lifecycle (``keep_alive``, slots and queue); a model not
ready is prepared just in time. Errors are Ollama's ``{"error": "…"}``, with ltcai's
``code`` and ``hint`` beside it.

What differs from Ollama, by design: ``/api/delete`` unloads the model and forgets its
profile but never deletes weights (they may be the user's own files or HF cache);
durations are measured around the engine, and token counts are the engine's usage.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from .. import __version__
from ..engines import openai_client
from ..errors import FieldError, LtcaiError, NotFound
from .capability_gate import measured_map, ollama_capabilities
from .body import read_json_object
from .embeddings import counted_usage
from .http_errors import exception_handlers, ollama_error_body
from .in_flight import take_keep_alive
from .model_access import engine_of, ready_in_use, resolve_for_client
from .model_catalog import CatalogEntry, usable_models
from .ollama_chat import OllamaChat, ndjson_lines
from .preparing import start_or_join
from .ollama_shapes import model_details, now_rfc3339
from .services import Services
from .validation import EmbedCall, check_engine_embeds, parse_embeddings

__all__ = ["ollama_app"]


def _tag(entry: CatalogEntry) -> dict[str, Any]:
    return {
        "name": entry.id,
        "model": entry.id,
        "modified_at": now_rfc3339(entry.modified or None),
        "size": entry.size or 0,
        "digest": "",
        "details": model_details(entry.id, entry.path),
        "ltcai": {"engine": entry.engine, "loaded": entry.loaded, "status": entry.status, "source": entry.source},
    }


def ollama_app(services: Services) -> Mount:
    """The ``/api`` routes as one mounted app: its errors are Ollama's shape."""
    limit = services.settings.max_body_bytes

    chats = OllamaChat(services)
    unload = chats.unload

    async def embed_route(request: Request) -> Response:
        started = time.monotonic_ns()
        body, keep_alive = take_keep_alive(await read_json_object(request, limit))
        _refuse(body, {"model", "input", "truncate", "options", "dimensions"})
        if body.get("truncate") is False:
            raise FieldError("'truncate': false is not supported: the engine decides how long an input may be",
                             param="truncate", code="unsupported_field")  # fmt: skip
        _no_options(body)
        call = parse_embeddings({k: body[k] for k in ("model", "input", "dimensions") if k in body})
        vectors, usage, load_ns = await embed(request, call, keep_alive, started)
        return JSONResponse({"model": call.model, "embeddings": vectors, "total_duration": time.monotonic_ns() - started,
                             "load_duration": load_ns, "prompt_eval_count": usage.get("prompt_tokens", 0)})  # fmt: skip

    async def embeddings_route(request: Request) -> Response:
        body, keep_alive = take_keep_alive(await read_json_object(request, limit))
        _refuse(body, {"model", "prompt", "options"})
        _no_options(body)
        if not isinstance(body.get("prompt"), str):
            raise FieldError("'prompt' must be a string", param="prompt")
        call = parse_embeddings({"model": body.get("model"), "input": body["prompt"]})
        vectors, _usage, _load = await embed(request, call, keep_alive, time.monotonic_ns())
        return JSONResponse({"embedding": vectors[0]})

    async def embed(
        http: Request, call: EmbedCall, keep_alive: float | None, started: int
    ) -> tuple[list[list[float]], dict[str, Any], int]:
        engine, _loaded = engine_of(services, call.model)
        check_engine_embeds(call, engine, services.engine(engine).request_rules)
        loaded, use = await ready_in_use(services, http, call.model, keep_alive)
        load_ns = time.monotonic_ns() - started
        try:
            result = await openai_client.embeddings(services.chat_http, loaded.served, call.inputs, call.fields)
            use.usage(result["usage"])
        finally:
            use.end()
        return result["vectors"], result["usage"] or counted_usage(call.inputs), load_ns

    async def tags(request: Request) -> Response:
        return JSONResponse({"models": [_tag(e) for e in await usable_models(services)]})

    async def ps(request: Request) -> Response:
        running = []
        for view in await services.lifecycle.model_views([m for m in services.models.all() if m.ready]):
            estimate = (view["memory"] or {}).get("estimated") or {}
            unloads_at = view.get("unloads_at")
            running.append({
                "name": view["input_id"], "model": view["input_id"], "size": estimate.get("total") or 0,
                "digest": "", "details": model_details(view["input_id"], None),
                # Ollama's clients read a far-off date as "never"; ltcai has no date when pinned or busy.
                "expires_at": now_rfc3339(unloads_at) if unloads_at else None,
                "size_vram": 0,
                "ltcai": {"engine": view["engine"], "status": view["status"], "pid": view["pid"],
                          "keep_alive_s": view["keep_alive_s"], "in_flight": view["in_flight"]},
            })  # fmt: skip
        return JSONResponse({"models": running})

    async def show(request: Request) -> Response:
        body = await read_json_object(request, limit)
        _refuse(body, {"model", "name", "verbose"})
        model = body.get("model") or body.get("name")
        if not isinstance(model, str):
            raise FieldError("'model' is required", param="model", code="missing_field")
        entry = next((e for e in await usable_models(services) if e.id == model), None)
        _engine, loaded = engine_of(services, model)
        if entry is None and loaded is None:
            raise NotFound(f"model '{model}' not found", hint="see /api/tags for the models ltcai can serve",
                           code="model_not_found")  # fmt: skip
        profile = loaded.profile if loaded is not None else None
        # The verdicts of an unloaded model come from its cached profile (a past prepare).
        measured = profile or (services.profiles.get(entry.extra.get("resolved_model", model), entry.engine) if entry else None)
        parameters = ""
        if profile is not None:
            lines = [f"temperature {profile.temperature}", f"top_p {profile.top_p}", f"num_predict {profile.max_tokens}"]
            lines += [f"stop {json.dumps(s)}" for s in profile.stop]
            parameters = "\n".join(lines)
        details = model_details(model, entry.path if entry else loaded.served.artifact_path if loaded else None)
        return JSONResponse({
            "modelfile": "",
            "parameters": parameters,
            "template": (profile.chat_template or "") if profile else "",
            "details": details,
            "model_info": {"general.architecture": details["family"]},
            "capabilities": ollama_capabilities(entry.capabilities if entry else (), measured),
            "ltcai": {"capabilities": measured_map(measured)},  # each verdict, with its reason
            "modified_at": now_rfc3339(entry.modified if entry else None),
        })  # fmt: skip

    async def pull(request: Request) -> Response:
        body = await read_json_object(request, limit)
        _refuse(body, {"model", "name", "insecure", "stream"})
        model = body.get("model") or body.get("name")
        if not isinstance(model, str):
            raise FieldError("'model' is required", param="model", code="missing_field")
        job = await start_or_join(services, resolve_for_client(services, model))

        async def statuses() -> AsyncIterator[dict[str, Any]]:
            yield {"status": "pulling manifest"}
            async for event in job.follow():
                if event.get("type") == "report":
                    report = event["report"]
                    if report.get("ready_to_chat"):
                        yield {"status": "success"}
                    else:
                        raise LtcaiError(report.get("message") or "the prepare failed",
                                         hint=f"see `ltcai jobs {job.id}`", code="prepare_failed")  # fmt: skip
                elif event.get("progress") and event["progress"].get("total"):
                    progress = event["progress"]
                    yield {"status": f"pulling {model}", "digest": f"{job.machine.engine}:{job.machine.model}",
                           "total": int(progress["total"]), "completed": int(progress["done"])}  # fmt: skip
                elif event.get("message"):
                    yield {"status": event["message"]}

        if body.get("stream", True) is not False:
            return ndjson_lines(statuses())
        last = [line async for line in statuses()][-1]
        return JSONResponse(last)

    async def delete(request: Request) -> Response:
        body = await read_json_object(request, limit)
        _refuse(body, {"model", "name"})
        model = body.get("model") or body.get("name")
        if not isinstance(model, str):
            raise FieldError("'model' is required", param="model", code="missing_field")
        loaded = await unload(model)
        if loaded is None:
            raise NotFound(f"model '{model}' not found", hint="see /api/ps for the loaded models", code="model_not_found")
        if services.profiles.cache.by_key(loaded.profile.key) is not None:
            await services.profiles.forget(loaded.profile.key)
        return JSONResponse({"deleted": model, "weights_kept": loaded.served.artifact_path})

    async def version(request: Request) -> Response:
        return JSONResponse({"version": __version__})

    app = Starlette(
        routes=[
            Route("/chat", chats.chat_route, methods=["POST"]),
            Route("/generate", chats.generate_route, methods=["POST"]),
            Route("/embed", embed_route, methods=["POST"]),
            Route("/embeddings", embeddings_route, methods=["POST"]),
            Route("/tags", tags, methods=["GET", "HEAD"]),
            Route("/ps", ps),
            Route("/show", show, methods=["POST"]),
            Route("/pull", pull, methods=["POST"]),
            Route("/delete", delete, methods=["DELETE"]),
            Route("/version", version),
        ],
        exception_handlers=exception_handlers(ollama_error_body, "see Ollama's docs/api.md"),
    )
    return Mount("/api", app=app)


def _refuse(body: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise FieldError(f"unknown field {unknown[0]!r}: ltcai neither uses it nor passes it on",
                         param=unknown[0], code="unknown_field")  # fmt: skip


def _no_options(body: dict[str, Any]) -> None:
    if body.get("options"):
        name = next(iter(body["options"])) if isinstance(body["options"], dict) else "options"
        raise FieldError(f"option {name!r} does not apply to embeddings", param=f"options.{name}", code="unsupported_field")
