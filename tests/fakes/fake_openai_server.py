"""A FAKE OpenAI-compatible engine server for the daemon's tests (stdlib only, starts fast).

Started by the fake engine plugin (``ltcai_fake_engine``) through the daemon's real
supervisor, so the daemon's process handling (process groups, parent-death signal,
stop, reaping) is exercised for real while the "model" is a canned answer.

    python fake_openai_server.py --model ID [--answer TEXT] [--ignore-stop] …

It binds a free loopback port itself (no race for the port) and prints, one per line:

    fake-openai-server pid=<pid> model=<id>
    HELPER <pid>                 (with --helper: a child left in its process group)
    LISTENING <port>

Routes: ``GET /health``; ``GET /v1/models``; ``POST /v1/chat/completions`` with and
without ``stream`` (Server-Sent Events, ending ``data: [DONE]``). Request logging is off
so the daemon's captured tail keeps the lines above.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-openai-server/1"
    options: argparse.Namespace
    chats = 0
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return None

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/health":
            self._json(200, {"ok": True})
        elif self.path == "/v1/models":
            if self.options.models == "hang":
                _FOREVER.wait()
            if self.options.models == "fail":
                self._json(500, {"error": {"message": "fake server told to fail /v1/models"}})
                return
            self._json(200, {"object": "list", "data": [{"id": self.options.model, "object": "model"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        length = int(self.headers.get("content-length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        options = self.options
        contents = " ".join(str(m.get("content", "")) for m in request.get("messages", []))
        smoke = bool(options.smoke_prompt) and options.smoke_prompt in contents
        if options.hang_chat:
            _FOREVER.wait()
        if options.crash_on_chat and not smoke:
            os._exit(7)  # an engine that dies under a user's chat
        text = options.answer if options.ignore_stop else _cut_at_stop(options.answer, request.get("stop"))
        with self.lock:
            type(self).chats += 1
        if request.get("stream"):
            self._stream(text, smoke)
            return
        self._json(
            200,
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": options.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(contents.split()), "completion_tokens": len(text.split()),
                          "total_tokens": len(contents.split()) + len(text.split())},
            },
        )

    def _stream(self, text: str, smoke: bool) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()

        def event(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": self.options.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()

        event({"role": "assistant"})
        for i, piece in enumerate(_chunks(text)):
            if i and not smoke and self.options.stream_delay:
                time.sleep(self.options.stream_delay)
            event({"content": piece})
            if self.options.stall_stream and not smoke:
                _FOREVER.wait()
        event({}, "stop")
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A client hanging up mid-stream (the daemon cancelling a chat whose own client
        # left) is normal; say so in one line instead of a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            print(f"client {client_address} went away", flush=True)
            return
        super().handle_error(request, client_address)


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
    server = _QuietServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
