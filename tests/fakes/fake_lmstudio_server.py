"""A FAKE LM Studio local server, for contract tests (stdlib only, a real HTTP server on 127.0.0.1).

Follows LM Studio's published REST API (https://lmstudio.ai/docs/app/api/endpoints/rest,
https://lmstudio.ai/docs/app/api/endpoints/openai):

    GET  /v1/models             the loaded instances, by identifier (JIT loading off)
    GET  /api/v0/models         every downloaded model, ``state`` "loaded" / "not-loaded"
    POST /v1/chat/completions   OpenAI style, streamed (SSE ending ``data: [DONE]``) or not;
                                the ``model`` is a loaded instance's identifier

What is downloaded and loaded lives in the JSON state file that the fake ``lms`` CLI
(``fake_lms.py``) writes; the server rereads it on every request, so the two always agree,
as LM Studio's CLI and server do. ``lms server start`` runs this program detached (LM
Studio's server is not a child of whoever asked for it) and records its pid in the state.

    fake_lmstudio_server.py --port <port> --state <file>
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SMOKE_PROMPT = "한국어로 한 문장만 답해. 2+2는?"
SMOKE_ANSWER = "2 + 2 = 4입니다."
DEFAULT_ANSWER = "Hello from the fake LM Studio."


def read_state(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


class _Handler(BaseHTTPRequestHandler):
    state_path: Path
    server_version = "fake-lmstudio/0.3"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return None

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        state = read_state(self.state_path)
        loaded = state.get("loaded", [])
        if self.path == "/v1/models":
            data = [{"id": i["identifier"], "object": "model", "owned_by": "organization_owner"} for i in loaded]
            self._json(200, {"object": "list", "data": data})
        elif self.path == "/api/v0/models":
            loaded_keys = {i["modelKey"] for i in loaded}
            data = [
                {
                    "id": m["modelKey"],
                    "object": "model",
                    "type": m.get("type", "llm"),
                    "publisher": m["path"].split("/")[0],
                    "arch": m.get("architecture", "qwen2"),
                    "compatibility_type": m.get("format", "gguf"),
                    "quantization": "Q4_K_M",
                    "state": "loaded" if m["modelKey"] in loaded_keys else "not-loaded",
                    "max_context_length": m.get("maxContextLength", 32768),
                }
                for m in state.get("downloaded", [])
            ]
            self._json(200, {"object": "list", "data": data})
        else:
            self._json(404, {"error": f"Unexpected endpoint or method. (GET {self.path})"})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": f"Unexpected endpoint or method. (POST {self.path})"})
            return
        state = read_state(self.state_path)
        model = str(body.get("model") or "")
        if model not in {i["identifier"] for i in state.get("loaded", [])}:
            self._json(404, {"error": {"message": f'Model "{model}" not found. Please load it first.', "type": "invalid_request_error", "code": "model_not_found"}})
            return
        messages = body.get("messages") or []
        last = str(messages[-1].get("content") or "") if messages else ""
        answer = SMOKE_ANSWER if SMOKE_PROMPT in last else state.get("answer", DEFAULT_ANSWER)
        ident, created = f"chatcmpl-{time.monotonic_ns() % 10**6}", int(time.time())
        if not body.get("stream"):
            self._json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "logprobs": None, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
                    "usage": {"prompt_tokens": 14, "completion_tokens": 9, "total_tokens": 23},
                    "system_fingerprint": model,
                },
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        pieces = re.findall(r"\S+\s*", answer)
        for i, piece in enumerate(pieces):
            last_piece = i == len(pieces) - 1
            event = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": model,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": piece}, "logprobs": None, "finish_reason": "stop" if last_piece else None}],
            }
            self.wfile.write(f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="fake LM Studio server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True)
    options = parser.parse_args(argv)
    handler = type("Handler", (_Handler,), {"state_path": options.state})
    server = ThreadingHTTPServer(("127.0.0.1", options.port), handler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
