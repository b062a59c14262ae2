"""The HTTP plumbing every loopback fake server shares (stdlib only, so fakes start fast).

The fakes (vLLM, LM Studio, Ollama, the OpenAI-compatible engine, the Hugging Face hub)
differ in their routes and bodies; how a reply goes out is the same for all of them:

* ``Handler``: a ``BaseHTTPRequestHandler`` that logs nothing (an engine's captured output
  keeps its own lines), reads JSON bodies, and replies with bytes, JSON, Server-Sent
  Events (``data: …`` lines ending ``data: [DONE]``) or a chunked body (HTTP/1.1). A
  subclass sets ``json_content_type``/``json_ascii`` to the server it imitates.
* ``Server``: a ``ThreadingHTTPServer`` with daemon threads (a hung handler never keeps a
  fake alive) that reports a client hanging up mid-reply in one line, not a traceback.
* ``serve_in_thread`` for fakes a test runs in its own process; ``serve_until_interrupted``
  for fakes run as programs (an engine's stand-in), stopped by a signal.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Handler", "RunningServer", "Server", "serve_in_thread", "serve_until_interrupted"]


class Handler(BaseHTTPRequestHandler):
    json_content_type = "application/json"
    json_ascii = True  # json.dumps' ensure_ascii: False where the real server sends UTF-8
    no_delay = False  # TCP_NODELAY: see setup
    _chunked = False  # whether the body being streamed is chunked (set by each start_*)

    def setup(self) -> None:
        super().setup()
        if self.no_delay:
            # Headers and body go out in separate writes: without this, Nagle's algorithm
            # and delayed ACKs add ~40 ms to every small response.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return None

    # -- requests --

    def read_json(self) -> Any:
        """The request's JSON body; ``{}`` when it has none."""
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}") if length else {}

    # -- whole replies --

    def send_bytes(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        """A reply with a Content-Length; a HEAD request gets the headers alone."""
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, body: Any) -> None:
        self.send_bytes(status, self.encode_json(body), {"Content-Type": self.json_content_type})

    def send_text(self, status: int, text: str) -> None:
        self.send_bytes(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})

    def encode_json(self, body: Any) -> bytes:
        return json.dumps(body, ensure_ascii=self.json_ascii).encode()

    # -- streamed replies --

    def start_chunked(self, content_type: str) -> None:
        """Headers of a body sent in chunks (needs ``protocol_version = "HTTP/1.1"``)."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._chunked = True

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def start_events(self, headers: dict[str, str] | None = None) -> None:
        """Headers of a Server-Sent Events body that ends when the connection closes."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self._chunked = False

    def send_event(self, event: Any) -> None:
        """One ``data:`` event, after ``start_events`` or ``start_chunked`` (then a chunk of its own)."""
        self._send_stream_part(b"data: " + self.encode_json(event) + b"\n\n")

    def send_done(self) -> None:
        """The OpenAI stream's last event."""
        self._send_stream_part(b"data: [DONE]\n\n")

    def _send_stream_part(self, data: bytes) -> None:
        if self._chunked:
            self.send_chunk(data)
        else:
            self.wfile.write(data)
            self.wfile.flush()

    def drop_connection(self) -> None:
        """Close the connection mid-body: the client sees a reply cut short."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client hanging up mid-reply (a cancelled chat, a killed daemon) is normal for
        # these servers; say so in one line instead of a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            print(f"client {client_address} went away", flush=True)
            return
        super().handle_error(request, client_address)


@dataclass
class RunningServer:
    """A server answering on a background thread of this process."""

    server: Server
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.server.server_address[0]}:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve_in_thread(
    handler: type[Handler], host: str = "127.0.0.1", port: int = 0, *, poll_interval: float = 0.5, name: str = "fake-server"
) -> RunningServer:
    """Bind ``host:port`` (0: a free port) now and answer on a daemon thread."""
    server = Server((host, port), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": poll_interval}, name=name, daemon=True)
    thread.start()
    return RunningServer(server, thread)


def serve_until_interrupted(server: Server, *, poll_interval: float = 0.5) -> int:
    """A fake run as a program: serve until SIGINT (or a signal that ends the process)."""
    try:
        server.serve_forever(poll_interval=poll_interval)
    except KeyboardInterrupt:
        pass
    return 0
