"""One validator for every chat API: the control API's ``/chat``, OpenAI's ``/v1`` and Ollama's ``/api``.

Each API turns its body into a :class:`ChatCall` here, so roles, content parts, field
types and error codes are the same everywhere. Pure: no I/O, no daemon state.

The contract is OpenAI's chat request. Messages are normalised to what every engine
server takes: ``developer`` becomes ``system``; text-only content parts become one string
(image parts are kept as parts); an assistant turn may carry ``tool_calls`` with
``content: null``; a ``tool`` turn needs its ``tool_call_id``.

Fields fall in three groups, and none is ever dropped:

* ltcai's own: ``model``, ``messages``, ``stream``, ``stream_options``;
* sampling the profile also has a value for (``temperature``, ``top_p``, ``max_tokens``
  or ``max_completion_tokens``, ``stop``): the request's value wins, the profile fills in;
* the rest go to the engine as they are (:data:`ENGINE_FIELDS`); an engine that does not
  take one is refused by :func:`check_engine_takes` with a 400 naming the field and the
  engine. A field nobody knows is a 400 naming it.

Errors: ``missing_field`` / ``invalid_field`` / ``unknown_field`` / ``unsupported_field``
(all 400), with ``param`` naming the field (``messages[1].tool_call_id``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import FieldError

__all__ = [
    "EMBED_FIELDS",
    "ENGINE_FIELDS",
    "ChatCall",
    "EmbedCall",
    "check_engine_embeds",
    "check_engine_takes",
    "check_model_sees",
    "check_field",
    "parse_chat",
    "parse_completion",
    "parse_embeddings",
    "parse_messages",
]


@dataclass(frozen=True)
class ChatCall:
    """A checked chat request, in OpenAI's shape, whichever API it came through."""

    model: str
    messages: list[dict[str, Any]]
    overrides: dict[str, Any]  # sampling the profile also sets; the request's value wins
    fields: dict[str, Any] = field(default_factory=dict)  # passed to the engine as they are
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage

    @property
    def has_images(self) -> bool:
        return any(
            isinstance(m.get("content"), list) and any(p.get("type") == "image_url" for p in m["content"])
            for m in self.messages
        )

    @property
    def wants_tools(self) -> bool:
        return bool(self.fields.get("tools")) and self.fields.get("tool_choice") != "none"


# ----------------------------------------------------------------------------- values


def _describe(value: Any) -> str:
    try:
        return json.dumps(value)[:60]
    except (TypeError, ValueError):
        return type(value).__name__


def _bad(param: str, expected: str, value: Any) -> FieldError:
    return FieldError(f"{param!r} must be {expected}, not {_describe(value)}", param=param)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(low: float | None = None, high: float | None = None, *, integer: bool = False) -> Callable[[str, Any], Any]:
    kind = "an integer" if integer else "a number"
    if low is not None and high is not None:
        kind += f" from {low:g} to {high:g}"
    elif low is not None:
        kind += f" of at least {low:g}"

    def check(param: str, value: Any) -> Any:
        if not _is_number(value) or (integer and not isinstance(value, int)):
            raise _bad(param, kind, value)
        if (low is not None and value < low) or (high is not None and value > high):
            raise _bad(param, kind, value)
        return value

    return check


def _boolean(param: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(param, "true or false", value)
    return value


def _string(param: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _bad(param, "a string", value)
    return value


def _object(param: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(param, "an object", value)
    return value


def _stop(param: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(param, "a string or a list of strings", value)
    return value


def _logit_bias(param: str, value: Any) -> dict[str, float]:
    _object(param, value)
    for token, bias in value.items():
        _number(-100, 100)(f"{param}.{token}", bias)
    return value


def _tools(param: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _bad(param, "a list of tools", value)
    for i, tool in enumerate(value):
        where = f"{param}[{i}]"
        _object(where, tool)
        if tool.get("type") != "function":
            raise _bad(f"{where}.type", '"function"', tool.get("type"))
        function = _object(f"{where}.function", tool.get("function"))
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise _bad(f"{where}.function.name", "a non-empty string", function.get("name"))
        if "parameters" in function:
            _object(f"{where}.function.parameters", function["parameters"])
    return value


def _tool_choice(param: str, value: Any) -> Any:
    if value in ("none", "auto", "required"):
        return value
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict):
        if isinstance(value["function"].get("name"), str):
            return value
    raise _bad(param, '"none", "auto", "required" or {"type": "function", "function": {"name": …}}', value)


def _response_format(param: str, value: Any) -> dict[str, Any]:
    _object(param, value)
    kind = value.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise _bad(f"{param}.type", '"text", "json_object" or "json_schema"', kind)
    if kind == "json_schema":
        spec = _object(f"{param}.json_schema", value.get("json_schema"))
        if not isinstance(spec.get("name"), str):
            raise _bad(f"{param}.json_schema.name", "a string", spec.get("name"))
        if "schema" in spec:
            _object(f"{param}.json_schema.schema", spec["schema"])
    return value


def _anything(param: str, value: Any) -> Any:
    return value


# Sampling the profile also has a value for: the request's wins (SPEC.md §7).
_SAMPLING: dict[str, Callable[[str, Any], Any]] = {
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "max_tokens": _number(1, integer=True),
    "max_completion_tokens": _number(1, integer=True),
    "stop": _stop,
}

# OpenAI's chat request fields that go to the engine as they are, each with its check.
# The last group are OpenAI's own service fields: only an engine that declares them
# (a remote OpenAI-compatible API) takes them.
_ENGINE_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "tools": _tools,
    "tool_choice": _tool_choice,
    "parallel_tool_calls": _boolean,
    "response_format": _response_format,
    "n": _number(1, 128, integer=True),
    "logprobs": _boolean,
    "top_logprobs": _number(0, 20, integer=True),
    "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2),
    "logit_bias": _logit_bias,
    "seed": _number(integer=True),
    "user": _string,
    "store": _boolean,
    "metadata": _object,
    "service_tier": _string,
    "reasoning_effort": _string,
    "prediction": _object,
    "modalities": _anything,
    "audio": _object,
    "web_search_options": _object,
}
ENGINE_FIELDS: frozenset[str] = frozenset(_ENGINE_CHECKS)
# An embeddings request's fields that go to the engine.
EMBED_FIELDS: frozenset[str] = frozenset({"dimensions", "user"})


def check_field(name: str, value: Any) -> Any:
    """Check one sampling or engine field by OpenAI's rules (Ollama's options reuse them)."""
    checker = _SAMPLING.get(name) or _ENGINE_CHECKS.get(name)
    if checker is None:
        raise FieldError(f"unknown field {name!r}", param=name, code="unknown_field")
    return checker(name, value)


# ----------------------------------------------------------------------------- messages

_ROLES = ("system", "developer", "user", "assistant", "tool")
_MESSAGE_KEYS = {
    "system": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls", "refusal", "reasoning_content"},
    "tool": {"role", "content", "tool_call_id", "name"},
}


def _content(where: str, role: str, content: Any) -> str | list[dict[str, Any]]:
    """A message's content: a string, or parts (text; image_url in a user turn)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(f"{where}.content", "a string or a list of content parts", content)
    texts: list[str] = []
    has_image = False
    for i, part in enumerate(content):
        at = f"{where}.content[{i}]"
        _object(at, part)
        kind = part.get("type")
        if kind == "text" or (kind == "refusal" and role == "assistant"):
            texts.append(_string(f"{at}.{kind}", part.get(kind)))
        elif kind == "image_url" and role == "user":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str) or not url.startswith(("data:image/", "http://", "https://")):
                raise _bad(f"{at}.image_url.url", "an http(s) URL or a data:image/… URL", url)
            has_image = True
        else:
            allowed = '"text" or "image_url"' if role == "user" else '"text"'
            raise FieldError(
                f"'{at}.type' {_describe(kind)} is not supported in a {role} message (use {allowed})",
                param=f"{at}.type",
            )
    # Text-only parts become one string: every engine template takes that.
    return content if has_image else "".join(texts)


def _tool_calls(where: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _bad(f"{where}.tool_calls", "a non-empty list of tool calls", value)
    for i, call in enumerate(value):
        at = f"{where}.tool_calls[{i}]"
        _object(at, call)
        _string(f"{at}.id", call.get("id"))
        if call.get("type", "function") != "function":
            raise _bad(f"{at}.type", '"function"', call.get("type"))
        function = _object(f"{at}.function", call.get("function"))
        _string(f"{at}.function.name", function.get("name"))
        _string(f"{at}.function.arguments", function.get("arguments"))
    return value


def _message(i: int, message: Any) -> dict[str, Any]:
    where = f"messages[{i}]"
    _object(where, message)
    role = message.get("role")
    if role not in _ROLES:
        raise FieldError(
            f"'{where}.role' must be one of {', '.join(_ROLES)}, not {_describe(role)}", param=f"{where}.role"
        )
    role = "system" if role == "developer" else role
    extra = sorted(set(message) - _MESSAGE_KEYS[role])
    if extra:
        raise FieldError(f"'{where}.{extra[0]}' is not a field of a {role} message", param=f"{where}.{extra[0]}",
                         code="unknown_field")
    shaped: dict[str, Any] = {**message, "role": role}
    content = message.get("content")
    if role == "assistant" and "tool_calls" in message:
        shaped["tool_calls"] = _tool_calls(where, message["tool_calls"])
        if content is None:
            shaped["content"] = None
            return shaped
    elif role == "assistant" and content is None and message.get("refusal") is not None:
        shaped["content"] = ""
        return shaped
    if "content" not in message:
        raise FieldError(f"'{where}.content' is required", param=f"{where}.content", code="missing_field")
    shaped["content"] = _content(where, role, content)
    if role == "tool":
        _string(f"{where}.tool_call_id", message.get("tool_call_id"))
    if "name" in message:
        _string(f"{where}.name", message["name"])
    return shaped


def parse_messages(messages: Any) -> list[dict[str, Any]]:
    """A non-empty list of OpenAI chat messages, checked and normalised."""
    if messages is None:
        raise FieldError("'messages' is required", param="messages", code="missing_field")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "a non-empty list of messages", messages)
    return [_message(i, m) for i, m in enumerate(messages)]


# ----------------------------------------------------------------------------- requests

_OWN = {"model", "stream", "stream_options"}
# What the legacy /v1/completions passes on besides sampling (its logprobs, echo, suffix
# and best_of differ from chat's and are not carried).
_COMPLETION_FIELDS = ("seed", "user", "presence_penalty", "frequency_penalty", "logit_bias", "n")


def parse_chat(body: Mapping[str, Any], *, extra_fields: Iterable[str] = ()) -> ChatCall:
    """Check an OpenAI-shaped chat body. ``extra_fields`` are the caller's own fields
    (the control API's ``engine``), which it reads itself."""
    call = _parse(body, {"messages", *extra_fields}, ENGINE_FIELDS)
    call = replace(call, messages=parse_messages(body.get("messages")))
    _check_tool_choice_names(call.fields)
    if "top_logprobs" in call.fields and not call.fields.get("logprobs"):
        raise FieldError("'top_logprobs' needs \"logprobs\": true", param="top_logprobs")
    return call


def parse_completion(body: Mapping[str, Any]) -> tuple[ChatCall, str]:
    """Check a legacy ``/v1/completions`` body: the call (no messages) and its prompt."""
    call = _parse(body, {"prompt"}, frozenset(_COMPLETION_FIELDS))
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise _bad("prompt", "a string", prompt)
    return call, prompt


def _parse(body: Mapping[str, Any], own: set[str], engine_fields: frozenset[str]) -> ChatCall:
    allowed = _OWN | own | set(_SAMPLING) | engine_fields
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise FieldError(
            f"unknown field {unknown[0]!r}: ltcai neither uses it nor passes it on",
            param=unknown[0],
            code="unknown_field",
            hint="see the OpenAI API reference for the fields a request may carry",
        )
    if "model" not in body:
        raise FieldError("'model' is required", param="model", code="missing_field")
    model = _string("model", body["model"])
    stream = body.get("stream")
    stream = False if stream is None else _boolean("stream", stream)
    include_usage = False
    if body.get("stream_options") is not None:
        options = _object("stream_options", body["stream_options"])
        if not stream:
            raise FieldError("'stream_options' is only allowed with \"stream\": true", param="stream_options")
        for key, value in options.items():
            if key != "include_usage":
                raise FieldError(f"unknown field 'stream_options.{key}'", param=f"stream_options.{key}",
                                 code="unknown_field")
            include_usage = _boolean("stream_options.include_usage", value)
    overrides: dict[str, Any] = {}
    for name, checker in _SAMPLING.items():
        if body.get(name) is not None:
            overrides[name] = checker(name, body[name])
    if "max_completion_tokens" in overrides:  # OpenAI's newer name wins over the old one
        overrides["max_tokens"] = overrides.pop("max_completion_tokens")
    fields = {name: _ENGINE_CHECKS[name](name, body[name]) for name in sorted(engine_fields) if body.get(name) is not None}
    if fields.get("n") == 1:  # OpenAI's default (LangChain sends it on every call): the same request
        del fields["n"]
    elif "n" in fields:
        raise FieldError(
            "'n' above 1 is not supported: post-processing and the recovery retry work on one answer",
            param="n",
            code="unsupported_field",
            hint="send the request n times",
        )
    return ChatCall(model, [], overrides, fields, stream, include_usage)


def _check_tool_choice_names(fields: Mapping[str, Any]) -> None:
    choice = fields.get("tool_choice")
    if choice is None or choice == "none":
        return
    names = {t["function"]["name"] for t in fields.get("tools") or ()}
    if not names:
        raise FieldError("'tool_choice' is only allowed with a non-empty 'tools'", param="tool_choice")
    if isinstance(choice, dict) and choice["function"]["name"] not in names:
        name = choice["function"]["name"]
        raise FieldError(f"'tool_choice.function.name' is {name!r}, which is not in 'tools'", param="tool_choice.function.name")


@dataclass(frozen=True)
class EmbedCall:
    """A checked ``/v1/embeddings`` request."""

    model: str
    inputs: list[Any]  # strings, or token-id lists
    base64: bool  # encoding_format "base64": ltcai encodes, every engine is asked for floats
    fields: dict[str, Any]  # dimensions, user: passed to the engine


def parse_embeddings(body: Mapping[str, Any]) -> EmbedCall:
    unknown = sorted(set(body) - {"model", "input", "encoding_format", "dimensions", "user"})
    if unknown:
        raise FieldError(f"unknown field {unknown[0]!r}: ltcai neither uses it nor passes it on",
                         param=unknown[0], code="unknown_field")
    if "model" not in body:
        raise FieldError("'model' is required", param="model", code="missing_field")
    if "input" not in body:
        raise FieldError("'input' is required", param="input", code="missing_field")
    raw = body["input"]
    tokens = isinstance(raw, list) and raw and all(isinstance(t, int) and not isinstance(t, bool) for t in raw)
    inputs = [raw] if isinstance(raw, str) or tokens else raw
    if not isinstance(inputs, list) or not inputs or not all(_is_input(i) for i in inputs):
        raise _bad("input", "a string, a list of strings, or token-id lists (none empty)", raw)
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _bad("encoding_format", '"float" or "base64"', encoding)
    fields: dict[str, Any] = {}
    if body.get("dimensions") is not None:
        fields["dimensions"] = _number(1, integer=True)("dimensions", body["dimensions"])
    if body.get("user") is not None:
        fields["user"] = _string("user", body["user"])
    return EmbedCall(_string("model", body["model"]), inputs, encoding == "base64", fields)


def _is_input(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


# ----------------------------------------------------------------------------- engines


def check_engine_takes(call: ChatCall, engine: str, takes: frozenset[str] | None) -> None:
    """Refuse a field the engine's server does not take (``takes`` None: it takes them all).

    Images count as the field ``image_url``.
    """
    if takes is None:
        return
    asked = sorted(call.fields) + (["image_url"] if call.has_images else [])
    for name in asked:
        if name not in takes:
            raise FieldError(
                f"the {engine} engine does not support {name!r}",
                param=name,
                code="unsupported_field",
                hint=f"leave {name!r} out, or use an engine that takes it",
            )


def check_model_sees(call: ChatCall, model: str, *, vision: bool) -> None:
    """Refuse images for a model that cannot see them (its profile says so)."""
    if call.has_images and not vision:
        raise FieldError(
            f"{model} cannot see images: its profile has no vision",
            param="messages",
            code="model_cannot_see",
            hint="send text only, or choose a vision model (set vision = true in its profile override if it has one)",
        )


def check_engine_embeds(call: EmbedCall, engine: str, rules: Any) -> None:
    """Refuse embeddings on an engine without them, and ``dimensions`` where not taken."""
    if not rules.embeddings:
        raise FieldError(
            f"{call.model} cannot embed: the {engine} engine has no embeddings API",
            param="model",
            code="model_cannot_embed",
            hint="use a model on an engine that embeds (llamacpp, ollama, vllm, lmstudio, openai)",
        )
    for name in sorted(call.fields):
        if rules.fields is not None and name not in rules.fields and name != "user":
            raise FieldError(f"the {engine} engine does not support {name!r}", param=name, code="unsupported_field",
                             hint=f"leave {name!r} out, or use an engine that takes it")
