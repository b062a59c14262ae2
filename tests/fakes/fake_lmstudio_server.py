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
from pathlib import Path
from typing import Any

from _loopback import Handler, Server, serve_until_interrupted

SMOKE_PROMPT = "한국어로 한 문장만 답해. 2+2는?"
SMOKE_ANSWER = "2 + 2 = 4입니다."
DEFAULT_ANSWER = "Hello from the fake LM Studio."


def read_state(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


class _Handler(Handler):
    state_path: Path
    server_version = "fake-lmstudio/0.3"
    json_content_type = "application/json; charset=utf-8"
    json_ascii = False

    def do_GET(self) -> None:  # noqa: N802
        state = read_state(self.state_path)
        loaded = state.get("loaded", [])
        if self.path == "/v1/models":
            data = [{"id": i["identifier"], "object": "model", "owned_by": "organization_owner"} for i in loaded]
            self.send_json(200, {"object": "list", "data": data})
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
            self.send_json(200, {"object": "list", "data": data})
        else:
            self.send_json(404, {"error": f"Unexpected endpoint or method. (GET {self.path})"})

    def do_POST(self) -> None:  # noqa: N802
        body = self.read_json()
        if self.path != "/v1/chat/completions":
            self.send_json(404, {"error": f"Unexpected endpoint or method. (POST {self.path})"})
            return
        state = read_state(self.state_path)
        model = str(body.get("model") or "")
        if model not in {i["identifier"] for i in state.get("loaded", [])}:
            self.send_json(404, {"error": {"message": f'Model "{model}" not found. Please load it first.', "type": "invalid_request_error", "code": "model_not_found"}})
            return
        messages = body.get("messages") or []
        last = str(messages[-1].get("content") or "") if messages else ""
        answer = SMOKE_ANSWER if SMOKE_PROMPT in last else state.get("answer", DEFAULT_ANSWER)
        ident, created = f"chatcmpl-{time.monotonic_ns() % 10**6}", int(time.time())
        if not body.get("stream"):
            self.send_json(
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
        self.start_events({"Cache-Control": "no-cache"})
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
            self.send_event(event)
        self.send_done()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="fake LM Studio server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True)
    options = parser.parse_args(argv)
    handler = type("Handler", (_Handler,), {"state_path": options.state})
    return serve_until_interrupted(Server(("127.0.0.1", options.port), handler))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
