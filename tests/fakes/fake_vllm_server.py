"""A FAKE of vLLM's OpenAI-compatible server, for contract tests (stdlib only, starts fast).

Follows the published API (https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html):
``GET /health`` (200, empty body, unauthenticated), ``GET /v1/models`` (the served model
names, ``owned_by: vllm``, ``root``: the model path, ``max_model_len``), and
``POST /v1/chat/completions`` with and without ``stream`` (Server-Sent Events ending
``data: [DONE]``). With ``--api-key`` every ``/v1`` route wants ``Authorization: Bearer
<key>`` and answers 401 ``{"error": "Unauthorized"}`` otherwise, as vLLM does.

It takes vLLM's command line (``--model``, ``--served-model-name``, ``--host``, ``--port``,
…; flags it does not know are accepted and ignored) and, like vLLM, binds its port only
once "the model is loaded". Test knobs come through the environment:

    FAKE_VLLM_RECORD=<file>       write {"argv": [...]} there before anything else
    FAKE_VLLM_EXIT_AT_START=<n>   print an error like vLLM's and exit with code n
    FAKE_VLLM_LOAD_S=<seconds>    "load" this long before binding the port
    FAKE_VLLM_ANSWER=<text>       the assistant's answer (default "2 + 2 = 4.")
    FAKE_VLLM_ECHO_KEY=1          a 401 body echoes the rejected key (as some providers do)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from _loopback import Handler, Server, serve_until_interrupted


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="fake vLLM OpenAI-compatible server")
    parser.add_argument("model_tag", nargs="?")  # ``vllm serve <model>``
    parser.add_argument("--model")
    parser.add_argument("--served-model-name", nargs="+")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key")
    parser.add_argument("--max-model-len", type=int, default=2048)
    options, _unknown = parser.parse_known_args(argv)
    options.model = options.model_tag or options.model or "facebook/opt-125m"
    options.served_model_name = options.served_model_name or [options.model]
    return options


class _Handler(Handler):
    server_version = "fake-vllm/1"
    options: argparse.Namespace
    answer: str

    def _authorized(self) -> bool:
        key = self.options.api_key
        given = self.headers.get("Authorization", "")
        if key is None or given == f"Bearer {key}":
            return True
        body: dict[str, Any] = {"error": "Unauthorized"}
        if os.environ.get("FAKE_VLLM_ECHO_KEY"):
            body = {"error": {"message": f"Incorrect API key provided: {given.removeprefix('Bearer ')}"}}
        self.send_json(401, body)
        return False

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/health":
            self.send_bytes(200, b"")
            return
        if self.path != "/v1/models":
            self.send_json(404, {"detail": "Not Found"})
            return
        if not self._authorized():
            return
        created = int(time.time())
        data = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": self.options.model,
                "parent": None,
                "max_model_len": self.options.max_model_len,
            }
            for name in self.options.served_model_name
        ]
        self.send_json(200, {"object": "list", "data": data})

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/v1/chat/completions":
            self.send_json(404, {"detail": "Not Found"})
            return
        if not self._authorized():
            return
        request = self.read_json()
        model = request.get("model")
        if model not in self.options.served_model_name:
            self.send_json(
                404,
                {
                    "object": "error",
                    "message": f"The model `{model}` does not exist.",
                    "type": "NotFoundError",
                    "param": None,
                    "code": 404,
                },
            )
            return
        created, ident = int(time.time()), f"chatcmpl-{time.monotonic_ns()}"
        if not request.get("stream"):
            self.send_json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": self.answer}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
                },
            )
            return
        self.start_events({"Cache-Control": "no-cache"})
        words = self.answer.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        deltas = [{"role": "assistant", "content": ""}] + [{"content": p} for p in pieces]
        for i, delta in enumerate(deltas):
            last = i == len(deltas) - 1
            event = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if last else None}],
            }
            self.send_event(event)
        self.send_done()


def main(argv: list[str]) -> int:
    record = os.environ.get("FAKE_VLLM_RECORD")
    if record:
        with open(record, "w") as fh:
            json.dump({"argv": argv}, fh)
    options = _parse(argv)
    print(f"INFO fake vLLM API server version 0.0.0 model={options.model}", flush=True)
    exit_code = os.environ.get("FAKE_VLLM_EXIT_AT_START")
    if exit_code:
        print("ERROR [core.py] EngineCore failed to start.", flush=True)
        print("RuntimeError: CUDA out of memory while loading the model (fake)", flush=True)
        return int(exit_code)
    time.sleep(float(os.environ.get("FAKE_VLLM_LOAD_S", "0")))
    _Handler.options = options
    _Handler.answer = os.environ.get("FAKE_VLLM_ANSWER", "2 + 2 = 4.")
    server = Server((options.host, options.port), _Handler)
    print(f"INFO Starting vLLM API server on http://{options.host}:{options.port}", flush=True)
    return serve_until_interrupted(server)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
