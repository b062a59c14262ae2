"""A FAKE Ollama server for contract tests: stdlib only, a real HTTP server on 127.0.0.1.

Follows Ollama's published API (https://github.com/ollama/ollama/blob/main/docs/api.md,
and docs/openai.md for the OpenAI-compatible routes):

    GET  /api/version           {"version": "0.12.3"}
    POST /api/show              the model's details; 404 {"error": "model 'x' not found"}
    POST /api/pull              NDJSON: "pulling manifest", one line per layer update
                                {status, digest, total, completed}, "verifying sha256 digest",
                                "writing manifest", "success"; errors as {"error": "..."} lines,
                                a bad name as HTTP 400 {"error": "invalid model name"}
    POST /api/generate          an empty prompt loads the model (done_reason "load"), with
                                keep_alive and options.num_ctx; keep_alive 0 unloads it
                                (done_reason "unload")
    GET  /api/ps                the models in memory, with the context_length each runs with
    GET  /v1/models             the pulled models, OpenAI style
    POST /v1/chat/completions   OpenAI style, streamed (SSE ending ``data: [DONE]``) or not;
                                like Ollama, a chat loads the model if needed

Context, as Ollama does it: a model runs with the ``num_ctx`` its request asked for, else
the server's default (``OLLAMA_CONTEXT_LENGTH``, else 4096), never more than it was trained
for (``/api/show``'s ``model_info["llama.context_length"]``). The OpenAI route takes no
``num_ctx``: a chat there asks for the default, and a model running with another context
is reloaded with it (Ollama's scheduler reloads a runner whose options differ).

Names are Ollama's: an untagged ``llama3.2`` is ``llama3.2:latest``, and the store keys
models by that full name. The smoke prompt gets a Korean answer (``2 + 2 = 4입니다.``).

Run in a thread (``FakeOllama().start()``) — tests then change ``library`` (what the
"registry" has), ``store`` (what is pulled) and ``pull_failure`` — or as a program that
stands in for the ``ollama`` binary: ``fake_ollama_server.py serve`` listens on
``OLLAMA_HOST``; ``fake_ollama_server.py --version`` prints what ``ollama --version``
prints when no server runs. ``FAKE_OLLAMA_LIBRARY`` (JSON ``{name: [layer sizes]}``) sets
the registry of such a process.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from _loopback import Handler, RunningServer, serve_in_thread

VERSION = "0.12.3"
SMOKE_PROMPT = "한국어로 한 문장만 답해. 2+2는?"
SMOKE_ANSWER = "2 + 2 = 4입니다."
DEFAULT_ANSWER = "Hello from the fake Ollama."
# Ollama's own check (types/model/name.go): host/namespace/model:tag, each part limited.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*){0,2}(:[A-Za-z0-9_][A-Za-z0-9._-]{0,79})?$")
_CHUNK = 256 * 1024


def full_name(name: str) -> str:
    """Ollama's spelling of a name: a tag is always there (``:latest`` if none was given)."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else name + ":latest"


def _digest(name: str, index: int) -> str:
    return "sha256:" + hashlib.sha256(f"{name}/{index}".encode()).hexdigest()


@dataclass
class FakeOllama:
    """The fake's state (what tests arrange and inspect) and its server thread."""

    library: dict[str, list[int]] = field(default_factory=dict)  # name → layer sizes in bytes
    store: set[str] = field(default_factory=set)  # pulled models (full names)
    running: dict[str, Any] = field(default_factory=dict)  # full name → keep_alive given
    contexts: dict[str, int] = field(default_factory=dict)  # full name → the context it runs with
    default_context: int = 4096  # OLLAMA_CONTEXT_LENGTH
    trained_context: int = 131072  # what /api/show says every model was trained for
    # "not-found" | "network" (an error line mid-pull) | "drop" (connection closed mid-pull)
    pull_failure: str | None = None
    answer: str = DEFAULT_ANSWER
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0
    _running: RunningServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def host_port(self) -> str:
        """What OLLAMA_HOST says: ``host:port``, no scheme."""
        return f"{self.host}:{self.port}"

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]

    def start(self) -> FakeOllama:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._running = serve_in_thread(handler, self.host, self.port, name="fake-ollama")
        self.port = self._running.port
        return self

    def stop(self) -> None:
        if self._running is not None:
            self._running.stop()
            self._running = None

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(Handler):
    fake: FakeOllama
    server_version = "fake-ollama/" + VERSION
    protocol_version = "HTTP/1.1"  # chunked streams, as Ollama's Go server sends them
    json_content_type = "application/json; charset=utf-8"
    json_ascii = False

    def _body(self) -> dict[str, Any]:
        data = self.read_json()
        return data if isinstance(data, dict) else {}

    def _ndjson(self, event: dict[str, Any]) -> None:
        self.send_chunk(json.dumps(event).encode() + b"\n")

    # -- routes --

    def do_GET(self) -> None:  # noqa: N802
        fake = self.fake
        fake.requests.append(("GET", self.path, {}))
        if self.path == "/api/version":
            self.send_json(200, {"version": VERSION})
        elif self.path == "/api/ps":
            self.send_json(200, {"models": [self._model_entry(name, running=True) for name in sorted(fake.running)]})
        elif self.path == "/api/tags":
            self.send_json(200, {"models": [self._model_entry(name) for name in sorted(fake.store)]})
        elif self.path == "/v1/models":
            data = [{"id": name, "object": "model", "created": 1700000000, "owned_by": "library"} for name in sorted(fake.store)]
            self.send_json(200, {"object": "list", "data": data})
        elif self.path == "/":
            self.send_text(200, "Ollama is running")
        else:
            self.send_text(404, "404 page not found")

    def do_POST(self) -> None:  # noqa: N802
        body = self._body()
        self.fake.requests.append(("POST", self.path, body))
        route = {
            "/api/show": self._show,
            "/api/pull": self._pull,
            "/api/generate": self._generate,
            "/v1/chat/completions": self._chat,
        }.get(self.path)
        if route is None:
            self.send_text(404, "404 page not found")
        else:
            route(body)

    def _model_entry(self, name: str, *, running: bool = False) -> dict[str, Any]:
        size = sum(self.fake.library.get(name, [0]))
        entry: dict[str, Any] = {
            "name": name,
            "model": name,
            "size": size,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": {"format": "gguf", "family": "llama", "parameter_size": "1.2B", "quantization_level": "Q8_0"},
        }
        if running:
            entry.update({"expires_at": "2030-01-01T00:00:00Z", "size_vram": size,
                          "context_length": self.fake.contexts.get(name, self.fake.default_context)})  # fmt: skip
        else:
            entry["modified_at"] = "2026-01-01T00:00:00Z"
        return entry

    def _show(self, body: dict[str, Any]) -> None:
        name = full_name(str(body.get("model") or body.get("name") or ""))
        if name not in self.fake.store:
            self.send_json(404, {"error": f"model '{name}' not found"})
            return
        self.send_json(
            200,
            {
                "modelfile": f"FROM {name}\n",
                "parameters": 'stop "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": self._model_entry(name)["details"],
                "model_info": {"general.architecture": "llama", "llama.context_length": self.fake.trained_context},
                "capabilities": ["completion"],
            },
        )

    def _pull(self, body: dict[str, Any]) -> None:
        fake = self.fake
        given = str(body.get("model") or body.get("name") or "")
        if not _NAME_RE.match(given):
            self.send_json(400, {"error": "invalid model name"})
            return
        name = full_name(given)
        self.start_chunked("application/x-ndjson")
        self._ndjson({"status": "pulling manifest"})
        layers = fake.library.get(name)
        if layers is None or fake.pull_failure == "not-found":
            self._ndjson({"error": "pull model manifest: file does not exist"})
            self.end_chunked()
            return
        digests = [_digest(name, i) for i in range(len(layers))]
        # Ollama announces every layer first, then reports them as they download.
        for digest, size in zip(digests, layers, strict=True):
            self._ndjson({"status": f"pulling {digest[7:19]}", "digest": digest, "total": size, "completed": 0})
        for index, (digest, size) in enumerate(zip(digests, layers, strict=True)):
            completed = 0
            while completed < size:
                completed = min(size, completed + _CHUNK)
                halfway = index == len(layers) - 1 and completed >= size // 2
                if halfway and fake.pull_failure == "network":
                    self._ndjson(
                        {"error": f"max retries exceeded: read tcp 127.0.0.1:5000->104.21.75.227:443: read: connection reset by peer ({digest[7:19]})"}
                    )
                    self.end_chunked()
                    return
                if halfway and fake.pull_failure == "drop":
                    self.drop_connection()
                    return
                self._ndjson({"status": f"pulling {digest[7:19]}", "digest": digest, "total": size, "completed": completed})
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            self._ndjson({"status": status})
        fake.store.add(name)
        self.end_chunked()

    def _generate(self, body: dict[str, Any]) -> None:
        fake = self.fake
        name = full_name(str(body.get("model") or ""))
        if name not in fake.store:
            self.send_json(404, {"error": f"model '{name}' not found"})
            return
        keep_alive = body.get("keep_alive", "5m")
        if keep_alive in (0, "0", "0s"):
            fake.running.pop(name, None)
            fake.contexts.pop(name, None)
            reason = "unload"
        elif not body.get("prompt"):
            fake.running[name] = keep_alive
            self._load(name, (body.get("options") or {}).get("num_ctx"))
            reason = "load"
        else:
            fake.running[name] = keep_alive
            self._load(name, (body.get("options") or {}).get("num_ctx"))
            self.send_json(200, {"model": name, "created_at": _now(), "response": fake.answer, "done": True, "done_reason": "stop"})
            return
        self.send_json(200, {"model": name, "created_at": _now(), "response": "", "done": True, "done_reason": reason})

    def _load(self, name: str, num_ctx: Any) -> None:
        fake = self.fake
        asked = num_ctx if isinstance(num_ctx, int) and num_ctx > 0 else fake.default_context
        fake.contexts[name] = min(asked, fake.trained_context)

    def _chat(self, body: dict[str, Any]) -> None:
        fake = self.fake
        given = str(body.get("model") or "")
        name = full_name(given)
        if name not in fake.store:
            self.send_json(
                404,
                {"error": {"message": f'model "{given}" not found, try pulling it first', "type": "api_error", "param": None, "code": None}},
            )
            return
        fake.running.setdefault(name, "5m")  # a chat loads the model, as in Ollama
        self._load(name, None)  # /v1 takes no num_ctx: the server's default (a reload if it differs)
        messages = body.get("messages") or []
        last = str(messages[-1].get("content") or "") if messages else ""
        answer = SMOKE_ANSWER if SMOKE_PROMPT in last else fake.answer
        ident, created = f"chatcmpl-{time.monotonic_ns() % 1000}", int(time.time())
        if not body.get("stream"):
            self.send_json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": given,
                    "system_fingerprint": "fp_ollama",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
                },
            )
            return
        self.start_chunked("text/event-stream")
        pieces = re.findall(r"\S+\s*", answer)
        for i, piece in enumerate(pieces + [""]):
            last_chunk = i == len(pieces)
            event = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": given,
                "system_fingerprint": "fp_ollama",
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": piece},
                        "finish_reason": "stop" if last_chunk else None,
                    }
                ],
            }
            self.send_event(event)
        self.send_done()
        self.end_chunked()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def main(argv: list[str]) -> int:
    """Stand in for the ``ollama`` binary: ``serve`` and ``--version``."""
    if argv[:1] in (["--version"], ["-v"]):
        print("Warning: could not connect to a running Ollama instance")
        print(f"Warning: client version is {VERSION}")
        return 0
    if argv[:1] != ["serve"]:
        print(f"fake ollama: unsupported command {argv}", file=sys.stderr)
        return 2
    host, _, port = (os.environ.get("OLLAMA_HOST") or "127.0.0.1:11434").rpartition(":")
    library = json.loads(os.environ.get("FAKE_OLLAMA_LIBRARY") or "{}")
    fake = FakeOllama(library={full_name(k): v for k, v in library.items()}, host=host or "127.0.0.1", port=int(port),
                      default_context=int(os.environ.get("OLLAMA_CONTEXT_LENGTH") or 4096))  # fmt: skip
    fake.start()
    print(f"time=2026-01-01T00:00:00Z level=INFO msg=\"Listening on {fake.host_port} (version {VERSION})\"", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
