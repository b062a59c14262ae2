"""Ollama's native API shapes (github.com/ollama/ollama docs/api.md), turned into OpenAI's and back.

Pure. A ``/api/chat`` or ``/api/generate`` body becomes an OpenAI chat body, which then
goes through the one validator (``validation.parse_chat``): the same roles, parts and
field rules as ``/v1``. Nothing is dropped: what has no OpenAI counterpart either maps
(``options.num_predict`` → ``max_tokens``, ``format`` → ``response_format``, ``images`` →
image parts, ``think`` → whether ``thinking`` is returned) or is a 400 naming it.
``keep_alive`` is the daemon's (``in_flight.take_keep_alive``), taken out before.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..compat import detect_family
from ..errors import FieldError

__all__ = [
    "OllamaRequest",
    "chat_request",
    "done_fields",
    "generate_request",
    "message_out",
    "model_details",
    "now_rfc3339",
    "ollama_tool_calls",
]

# Ollama's options (docs/modelfile.mdx "Valid Parameters") that have an OpenAI name.
_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "num_predict": "max_tokens",
    "stop": "stop",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
_OPTION_HINTS = {
    "num_ctx": "the context size is the engine's, set when the model is prepared",
    "num_gpu": "GPU offload is the engine's, set when the model is prepared",
    "num_thread": "threads are the engine's, set when the model is prepared",
}
_IMAGE_TYPES = {"iVBOR": "png", "/9j/": "jpeg", "R0lGOD": "gif", "UklGR": "webp"}


@dataclass(frozen=True)
class OllamaRequest:
    """An Ollama chat/generate request as an OpenAI body, plus what only Ollama has."""

    body: dict[str, Any]  # OpenAI-shaped, for validation.parse_chat
    think: bool  # return the model's reasoning as ``thinking``


def _bad(param: str, message: str, code: str = "invalid_field", hint: str | None = None) -> FieldError:
    return FieldError(message, param=param, code=code, hint=hint)


def _refuse_unknown(body: Mapping[str, Any], known: set[str], where: str = "") -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise _bad(where + unknown[0], f"unknown field {where + unknown[0]!r}: ltcai neither uses it nor passes it on",
                   code="unknown_field")


def _options(options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise _bad("options", "'options' must be an object")
    out: dict[str, Any] = {}
    for name, value in options.items():
        if name == "num_predict" and isinstance(value, int) and value < 0:
            continue  # -1 (no limit) and -2 (fill the context): the engine's own limit stands
        if name not in _OPTIONS:
            raise _bad(f"options.{name}", f"option {name!r} is not supported by ltcai",
                       code="unsupported_field", hint=_OPTION_HINTS.get(name, "leave it out of 'options'"))
        out[_OPTIONS[name]] = value
    return out


def _format(value: Any) -> dict[str, Any] | None:
    if value in (None, ""):
        return None
    if value == "json":
        return {"type": "json_object"}
    if isinstance(value, dict):
        return {"type": "json_schema", "json_schema": {"name": "format", "schema": value}}
    raise _bad("format", f"'format' must be \"json\" or a JSON schema, not {json.dumps(value)[:60]}")


def _think(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if value in ("low", "medium", "high", "max"):
        return True
    raise _bad("think", "'think' must be true, false, or \"low\", \"medium\", \"high\", \"max\"")


def _image_part(index: str, image: Any) -> dict[str, Any]:
    if not isinstance(image, str) or not image:
        raise _bad(index, f"'{index}' must be a base64-encoded image")
    kind = next((k for prefix, k in _IMAGE_TYPES.items() if image.startswith(prefix)), "png")
    return {"type": "image_url", "image_url": {"url": f"data:image/{kind};base64,{image}"}}


def _message(i: int, message: Any, call_ids: dict[str, str]) -> dict[str, Any]:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise _bad(where, f"'{where}' must be an object")
    _refuse_unknown(message, {"role", "content", "images", "tool_calls", "tool_name", "thinking"}, where + ".")
    out: dict[str, Any] = {"role": message.get("role"), "content": message.get("content", "")}
    if message.get("images"):
        images = message["images"]
        if not isinstance(images, list):
            raise _bad(f"{where}.images", f"'{where}.images' must be a list of base64 images")
        text = out["content"] if isinstance(out["content"], str) else ""
        out["content"] = [{"type": "text", "text": text}, *(_image_part(f"{where}.images[{n}]", img) for n, img in enumerate(images))]
    if message.get("tool_calls"):
        calls = message["tool_calls"]
        if not isinstance(calls, list):
            raise _bad(f"{where}.tool_calls", f"'{where}.tool_calls' must be a list")
        out["tool_calls"] = []
        for n, call in enumerate(calls):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise _bad(f"{where}.tool_calls[{n}].function.name", f"'{where}.tool_calls[{n}].function.name' is required")
            arguments = function.get("arguments", {})
            call_id = f"call_{i}_{n}"
            call_ids[function["name"]] = call_id
            out["tool_calls"].append({"id": call_id, "type": "function", "function": {
                "name": function["name"],
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            }})  # fmt: skip
        if not out["content"]:
            out["content"] = None
    if message.get("thinking") and out["role"] == "assistant":
        out["reasoning_content"] = message["thinking"]
    if out["role"] == "tool":
        # Ollama names the tool; OpenAI ties a result to its call: the latest call of that tool.
        name = message.get("tool_name")
        out["tool_call_id"] = call_ids.get(name) if isinstance(name, str) else None
        if out["tool_call_id"] is None:
            out["tool_call_id"] = next(reversed(call_ids.values()), "call_0_0")
        if isinstance(name, str):
            out["name"] = name
    return out


def _common(body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    openai: dict[str, Any] = {"model": body.get("model"), **_options(body.get("options"))}
    response_format = _format(body.get("format"))
    if response_format:
        openai["response_format"] = response_format
    stream = body.get("stream", True)  # Ollama streams unless told not to
    openai["stream"] = stream if stream is not None else True
    return openai, _think(body.get("think"))


def chat_request(body: Mapping[str, Any]) -> OllamaRequest:
    _refuse_unknown(body, {"model", "messages", "tools", "format", "options", "stream", "think"})
    openai, think = _common(body)
    messages = body.get("messages")
    if messages is not None:
        if not isinstance(messages, list):
            raise _bad("messages", "'messages' must be a list")
        call_ids: dict[str, str] = {}
        openai["messages"] = [_message(i, m, call_ids) for i, m in enumerate(messages)]
    if body.get("tools") is not None:
        openai["tools"] = body["tools"]
    return OllamaRequest(openai, think)


def generate_request(body: Mapping[str, Any]) -> OllamaRequest:
    """``/api/generate`` as one user turn (with ``system`` before it). ``raw``: the caller
    reads ``body["prompt"]`` itself and sends it untemplated."""
    _refuse_unknown(body, {"model", "prompt", "system", "images", "format", "options", "stream", "think", "raw"})
    for name in ("prompt", "system"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise _bad(name, f"'{name}' must be a string")
    openai, think = _common(body)
    messages = []
    if body.get("system"):
        messages.append({"role": "system", "content": body["system"]})
    messages.append({"role": "user", "content": body.get("prompt") or "", "images": body.get("images")})
    call_ids: dict[str, str] = {}
    openai["messages"] = [_message(i, {k: v for k, v in m.items() if v is not None}, call_ids)
                          for i, m in enumerate(messages)]  # fmt: skip
    return OllamaRequest(openai, think)


def ollama_tool_calls(calls: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """OpenAI tool calls as Ollama's: arguments as an object (the text when it is not JSON)."""
    out = []
    for call in calls or ():
        function = call.get("function") or {}
        arguments = function.get("arguments") or "{}"
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            parsed = arguments
        out.append({"function": {"name": function.get("name"), "arguments": parsed}})
    return out


def message_out(content: str, reasoning: str | None, tool_calls: list[dict[str, Any]] | None, think: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if think and reasoning:
        message["thinking"] = reasoning
    if tool_calls:
        message["tool_calls"] = ollama_tool_calls(tool_calls)
    return message


def done_fields(finish_reason: str | None, usage: Mapping[str, Any] | None, started_ns: int, load_ns: int) -> dict[str, Any]:
    """The final object's statistics. Durations are measured by ltcai around the engine
    (nanoseconds); token counts are the engine's usage."""
    total = time.monotonic_ns() - started_ns
    usage = usage or {}
    return {
        "done": True,
        "done_reason": "length" if finish_reason == "length" else "stop",
        "total_duration": total,
        "load_duration": load_ns,
        "prompt_eval_count": int(usage.get("prompt_tokens") or 0),
        "prompt_eval_duration": 0,
        "eval_count": int(usage.get("completion_tokens") or 0),
        "eval_duration": max(total - load_ns, 0),
    }


def now_rfc3339(seconds: float | None = None) -> str:
    moment = datetime.fromtimestamp(seconds, UTC) if seconds else datetime.now(UTC)
    return moment.isoformat().replace("+00:00", "Z")


def model_details(model_id: str, path: str | None) -> dict[str, Any]:
    """Ollama's ``details`` from what ltcai knows without reading the weights."""
    family = detect_family(model_id)
    quant = ""
    for part in reversed((path or model_id).replace(":", ".").replace("-", ".").split(".")):
        if part.upper().startswith(("Q", "IQ", "F16", "BF16", "F32")) and any(c.isdigit() for c in part):
            quant = part.upper()
            break
    return {
        "parent_model": "",
        "format": "gguf" if (path or model_id).lower().endswith(".gguf") or "gguf" in model_id.lower() else "",
        "family": family,
        "families": [family],
        "parameter_size": "",
        "quantization_level": quant,
    }
