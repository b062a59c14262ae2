"""A FAKE OpenAI-compatible engine server for the daemon's tests (stdlib only, starts fast).

Started by the fake engine plugin (``ltcai_fake_engine``) through the daemon's real
supervisor, so the daemon's process handling (process groups, parent-death signal,
stop, reaping) is exercised for real while the "model" is a canned answer.

    python fake_openai_server.py --model ID [--answer TEXT] [--ignore-stop] …

It binds a free loopback port itself (no race for the port) and prints, one per line:

    fake-openai-server pid=<pid> model=<id>
    HELPER <pid>                 (with --helper: a child left in its process group)
    LISTENING <port>

Routes: ``GET /health``; ``GET /v1/models``; ``GET /props`` (llama-server's: ``n_ctx`` per slot); ``POST /v1/chat/completions`` with and
without ``stream`` (Server-Sent Events, ending ``data: [DONE]``), ``/v1/completions`` and
``/v1/embeddings`` likewise; ``GET /debug/requests``: the last POST bodies (``probes``: those ltcai marked as capability probes), so a test sees
what reached the engine. A chat with ``tools`` answers a call of the named (or first)
tool, with arguments that fit its schema, unless the last turn is the tool's result; a
``response_format`` gets JSON that fits it; ``logprobs`` and ``stream_options`` are
honoured. Request logging is off so the daemon's captured tail keeps the lines above.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import threading
import time
from typing import Any

from _loopback import Handler, Server, serve_until_interrupted

_FOREVER = threading.Event()  # never set: a handler that must hang waits on it


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--answer", default="2 + 2 = 4.")
    parser.add_argument("--smoke-prompt", default="", help="a chat holding this text is the smoke test")
    parser.add_argument("--ignore-stop", action="store_true", help="do not honour stop sequences")
    parser.add_argument("--exit-at-start", type=int, default=None, help="exit with this code before listening")
    parser.add_argument("--models", choices=["ok", "fail", "hang"], default="ok", help="how GET /v1/models answers")
    parser.add_argument("--hang-chat", action="store_true", help="never answer a chat (the smoke test included)")
    parser.add_argument("--crash-on-chat", action="store_true", help="exit on the first chat after the smoke test")
    parser.add_argument("--stream-delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--stall-stream", action="store_true", help="stream one chunk of a chat, then hang")
    parser.add_argument("--helper", action="store_true", help="start a child that stays in our process group")
    parser.add_argument("--no-embed", action="store_true", help="answer /v1/embeddings as a server without them")
    parser.add_argument("--n-ctx", type=int, default=2048, help="the context per slot GET /props reports")
    parser.add_argument("--ignore-tools", action="store_true", help="answer text to a chat with tools (no tool call)")
    parser.add_argument("--ignore-format", action="store_true", help="ignore response_format (answer plain text)")
    parser.add_argument("--openai-limits", action="store_true", help="refuse what OpenAI's API refuses (see _openai_limits)")
    return parser.parse_args(argv)


def _cut_at_stop(text: str, stops: Any) -> str:
    if isinstance(stops, str):
        stops = [stops]
    cut = len(text)
    for stop in stops or ():
        if isinstance(stop, str) and stop:
            at = text.find(stop)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]


def _chunks(text: str) -> list[str]:
    # Word-sized pieces, spaces kept, so the client reassembles the exact text.
    pieces: list[str] = []
    for word in text.split(" "):
        pieces.append(word if not pieces else " " + word)
    return [p for p in pieces if p]


class _Handler(Handler):
    server_version = "fake-openai-server/1"
    options: argparse.Namespace
    chats = 0
    requests: list[dict[str, Any]] = []  # the last POSTs, for GET /debug/requests
    probes: list[dict[str, Any]] = []  # the last POSTs of ltcai's capability probes on first use
    lock = threading.Lock()

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/health":
            self.send_json(200, {"ok": True})
        elif self.path == "/props":
            self.send_json(200, {"default_generation_settings": {"n_ctx": self.options.n_ctx}, "total_slots": 1})
        elif self.path == "/debug/requests":
            self.send_json(200, {"requests": self.requests, "probes": self.probes})
        elif self.path == "/v1/models":
            if self.options.models == "hang":
                _FOREVER.wait()
            if self.options.models == "fail":
                self.send_json(500, {"error": {"message": "fake server told to fail /v1/models"}})
                return
            self.send_json(200, {"object": "list", "data": [{"id": self.options.model, "object": "model"}]})
        else:
            self.send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802
        routes = {"/v1/chat/completions": self._chat, "/v1/completions": self._completion, "/v1/embeddings": self._embed}
        if self.path not in routes:
            self.send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        request = self.read_json()
        with self.lock:  # a capability probe's request (ltcai marks it) is listed apart
            listed = "probes" if self.headers.get("X-Ltcai-Probe") else "requests"
            setattr(type(self), listed, [*getattr(type(self), listed)[-19:], {"path": self.path, "body": request}])
        refusal = _openai_limits(self.path, request) if self.options.openai_limits else None
        if refusal:
            self.send_json(400, {"error": {"message": refusal, "type": "invalid_request_error", "param": None, "code": None}})
            return
        routes[self.path](request)

    def _chat(self, request: dict[str, Any]) -> None:
        options = self.options
        messages = request.get("messages", [])
        contents = " ".join(str(m.get("content", "")) for m in messages)
        smoke = bool(options.smoke_prompt) and options.smoke_prompt in contents
        if options.hang_chat:
            _FOREVER.wait()
        if options.crash_on_chat and not smoke:
            os._exit(7)  # an engine that dies under a user's chat
        with self.lock:
            type(self).chats += 1
        if options.ignore_tools:
            request = {k: v for k, v in request.items() if k not in ("tools", "tool_choice")}
        if options.ignore_format:
            request = {k: v for k, v in request.items() if k != "response_format"}
        call = _tool_call(request)
        text = "" if call else _answer_text(options, request)
        if not options.ignore_stop:
            text = _cut_at_stop(text, request.get("stop"))
        usage = {"prompt_tokens": len(contents.split()), "completion_tokens": len(text.split()) or 1,
                 "total_tokens": len(contents.split()) + (len(text.split()) or 1)}
        if request.get("stream"):
            self._stream(text, smoke, request, call, usage)
            return
        message: dict[str, Any] = {"role": "assistant", "content": None if call else text}
        if call:
            message["tool_calls"] = [call]
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": "tool_calls" if call else "stop"}
        if request.get("logprobs"):
            choice["logprobs"] = {"content": [_logprob(piece) for piece in _chunks(text)]}
        self.send_json(
            200,
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": options.model,
                "choices": [choice],
                "usage": usage,
            },
        )

    def _stream(
        self, text: str, smoke: bool, request: dict[str, Any], call: dict[str, Any] | None, usage: dict[str, int]
    ) -> None:
        self.start_events()

        def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> None:
            chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": self.options.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **extra}],
            }
            self.send_event(chunk)

        event({"role": "assistant"})
        for i, piece in enumerate(_chunks(text)):
            if i and not smoke and self.options.stream_delay:
                time.sleep(self.options.stream_delay)
            extra = {"logprobs": {"content": [_logprob(piece)]}} if request.get("logprobs") else {}
            event({"content": piece}, **extra)
            if self.options.stall_stream and not smoke:
                _FOREVER.wait()
        if call:  # as OpenAI streams one: id and name first, then the arguments in pieces
            head = {"index": 0, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}
            event({"tool_calls": [head]})
            arguments = call["function"]["arguments"]
            for at in range(0, len(arguments), 7):
                event({"tool_calls": [{"index": 0, "function": {"arguments": arguments[at : at + 7]}}]})
        event({}, "tool_calls" if call else "stop")
        if (request.get("stream_options") or {}).get("include_usage"):
            self.send_event({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": [], "usage": usage})
        self.send_done()

    def _completion(self, request: dict[str, Any]) -> None:
        text = self.options.answer if self.options.ignore_stop else _cut_at_stop(self.options.answer, request.get("stop"))
        if not request.get("stream"):
            self.send_json(200, {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()),
                             "model": self.options.model,
                             "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
                             "usage": {"prompt_tokens": 1, "completion_tokens": len(text.split()),
                                       "total_tokens": 1 + len(text.split())}})
            return
        self.start_events()
        for piece in [*_chunks(text), None]:
            choice = {"index": 0, "text": piece or "", "finish_reason": None if piece else "stop", "logprobs": None}
            event = {"id": "cmpl-fake", "object": "text_completion", "model": self.options.model, "choices": [choice]}
            self.send_event(event)
        self.send_done()

    def _embed(self, request: dict[str, Any]) -> None:
        if self.options.no_embed:  # what llama-server answers when started without --embeddings
            self.send_json(501, {"error": {"code": 501, "message": "This server does not support embeddings. Start it with `--embeddings`", "type": "not_supported_error"}})
            return
        inputs = request.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        size = int(request.get("dimensions") or 8)
        data = []
        for i, text in enumerate(inputs):
            vector = _vector(str(text), size)
            if request.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(len(str(t).split()) for t in inputs)
        self.send_json(200, {"object": "list", "data": data, "model": self.options.model,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


# OpenAI's documented limits (platform.openai.com/docs/api-reference/chat/create): at most
# 4 stop sequences; reasoning models (o1, o3, o4-mini, gpt-5…) refuse ``max_tokens`` and
# any temperature/top_p but the default; an argument it does not know is an error.
_OPENAI_CHAT_FIELDS = {
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "max_tokens", "max_completion_tokens",
    "stop", "seed", "n", "tools", "tool_choice", "parallel_tool_calls", "response_format", "logprobs", "top_logprobs",
    "presence_penalty", "frequency_penalty", "logit_bias", "user", "store", "metadata", "service_tier",
    "reasoning_effort", "prediction", "modalities", "audio", "web_search_options",
}


def _openai_limits(path: str, request: dict[str, Any]) -> str | None:
    if path != "/v1/chat/completions":
        return None
    unknown = sorted(set(request) - _OPENAI_CHAT_FIELDS)
    if unknown:
        return f"Unrecognized request argument supplied: {unknown[0]}"
    stops = request.get("stop")
    if isinstance(stops, list) and len(stops) > 4:
        return f"Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length {len(stops)} instead."
    model = str(request.get("model", ""))
    if model.startswith(("o1", "o3", "o4", "gpt-5")):
        if "max_tokens" in request:
            return "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."
        for name in ("temperature", "top_p"):
            if name in request and request[name] != 1:
                return f"Unsupported value: '{name}' does not support {request[name]} with this model. Only the default (1) value is supported."
    return None


def _example(schema: Any) -> Any:
    """A value that fits a JSON schema (the subset tools and response formats use)."""
    if not isinstance(schema, dict):
        return "4"
    kind = schema.get("type")
    if "const" in schema:
        return schema["const"]
    if "anyOf" in schema:
        return _example(schema["anyOf"][0])
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        return {name: _example(sub) for name, sub in (schema.get("properties") or {}).items()}
    if kind in ("number", "integer"):
        return 4
    if kind == "boolean":
        return True
    if kind == "array":
        return [_example(schema.get("items"))]
    return "Paris" if kind == "string" else "4"


def _tool_call(request: dict[str, Any]) -> dict[str, Any] | None:
    """A call of the named (or first) tool unless the last turn is a tool's result."""
    tools, choice = request.get("tools") or [], request.get("tool_choice", "auto")
    messages = request.get("messages") or [{}]
    if not tools or choice == "none" or messages[-1].get("role") == "tool":
        return None
    name = choice["function"]["name"] if isinstance(choice, dict) else tools[0]["function"]["name"]
    tool = next(t for t in tools if t["function"]["name"] == name)
    arguments = json.dumps(_example(tool["function"].get("parameters") or {"type": "object"}))
    return {"id": "call_fake0", "type": "function", "function": {"name": name, "arguments": arguments}}


def _answer_text(options: argparse.Namespace, request: dict[str, Any]) -> str:
    messages = request.get("messages") or [{}]
    response_format = request.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return json.dumps(_example(response_format["json_schema"].get("schema")))
    if response_format.get("type") == "json_object":
        return json.dumps({"answer": 4})
    if messages[-1].get("role") == "tool":
        return f"The tool said: {messages[-1].get('content')}"
    return options.answer


def _logprob(token: str) -> dict[str, Any]:
    return {"token": token, "logprob": -0.25, "bytes": list(token.encode()), "top_logprobs": []}


def _vector(text: str, size: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round((digest[i % len(digest)] - 128) / 128, 6) for i in range(size)]


def main(argv: list[str] | None = None) -> int:
    options = _parse(argv)
    print(f"fake-openai-server pid={os.getpid()} model={options.model}", flush=True)
    if options.exit_at_start is not None:
        print("fake-openai-server told to fail at start: exiting", flush=True)
        return options.exit_at_start
    if options.helper:
        helper = subprocess.Popen(["sleep", "3600"])  # same process group as ours
        print(f"HELPER {helper.pid}", flush=True)
    handler = type("Handler", (_Handler,), {"options": options})
    server = Server(("127.0.0.1", 0), handler)
    print(f"LISTENING {server.server_address[1]}", flush=True)
    return serve_until_interrupted(server, poll_interval=0.05)


if __name__ == "__main__":
    sys.exit(main())
