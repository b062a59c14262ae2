"""A LOOPBACK FAKE of the Hugging Face hub for daemon-level fault tests (``tests/faults``).

Smaller than the two-origin fake in ``tests/engines/test_hf_download.py``: one server on
127.0.0.1 answering what a daemon's download uses — ``/api/models/<repo>`` (siblings with
size and LFS sha256) and ``/<repo>/resolve/<rev>/<file>`` (the bytes, with ``Range``).
Point a daemon at it with ``HF_ENDPOINT`` (and ``HF_HUB_OFFLINE=0``).

It counts the body bytes it really wrote per request (``served``), so a test can say how
many bytes a resumed download fetched twice, and it can *hold* a body after ``hold_at``
bytes (the connection stays open, sending nothing, until ``release()``) — the moment to
``kill -9`` a daemon mid-download — or run ``before_body`` once (to fill a disk).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["COMMIT", "Body", "SlowHub", "hf_model_path"]

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
_BLOCK = 64 * 1024


@dataclass
class Body:
    """One GET of a file's bytes: where it started and how many bytes were written."""

    start: int
    sent: int = 0


@dataclass
class SlowHub:
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    hold_at: int | None = None  # absolute offset at which the next body stops sending
    before_body: Callable[[], None] | None = None
    bodies: list[Body] = field(default_factory=list)
    _released: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None

    def add(self, repo: str, files: dict[str, bytes]) -> None:
        self.repos[repo] = files

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self, root: Path) -> dict[str, str]:
        """A daemon's environment pointing its downloads here, away from the user's HF cache."""
        return {
            "HF_ENDPOINT": self.endpoint,
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HOME": str(root / "hf"),
            "HF_HUB_CACHE": str(root / "hf" / "hub"),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def served(self) -> int:
        return sum(b.sent for b in self.bodies)

    def release(self) -> None:
        self._released.set()

    def start(self) -> SlowHub:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _handler(hub: SlowHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._route()

        def do_GET(self) -> None:
            self._route()

        def _route(self) -> None:
            if m := re.fullmatch(r"/api/models/([^/]+/[^/?]+)(?:/revision/[^/?]+)?(?:\?.*)?", self.path):
                return self._info(m[1])
            if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.path):
                return self._file(m[1], m[3])
            self._send(404, b"{}")

        def _info(self, repo: str) -> None:
            files = hub.repos.get(repo)
            if files is None:
                return self._send(404, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"})
            siblings: list[dict[str, Any]] = []
            for name, data in files.items():
                sha = hashlib.sha256(data).hexdigest()
                oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                siblings.append({"rfilename": name, "size": len(data), "blobId": oid,
                                 "lfs": {"sha256": sha, "size": len(data), "pointerSize": 134}})
            body = {"id": repo, "modelId": repo, "sha": COMMIT, "private": False, "siblings": siblings}
            self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

        def _file(self, repo: str, name: str) -> None:
            data = hub.repos.get(repo, {}).get(name)
            if data is None:
                return self._send(404, b"", {"X-Error-Code": "EntryNotFound"})
            asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            start = int(asked[1]) if asked else 0
            if start >= len(data) and start:
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if self.command == "HEAD":
                return
            hook, hub.before_body = hub.before_body, None
            if hook is not None:
                hook()
            body = Body(start)
            hub.bodies.append(body)
            hold, hub.hold_at = hub.hold_at, None
            offset = start
            try:
                while offset < len(data):
                    if hold is not None and offset >= hold:
                        # Hold the connection open, sending nothing, until released.
                        hub._released.wait(60)
                        return
                    end = min(len(data), offset + _BLOCK, hold if hold is not None else len(data))
                    self.wfile.write(data[offset:end])
                    body.sent += end - offset
                    offset = end
            except OSError:
                return  # the client went away (a killed daemon)

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


def hf_model_path(data_dir: Path, repo: str, name: str) -> Path:
    """Where a daemon with ``data_dir`` keeps a GGUF it downloaded from the hub."""
    return data_dir / "models" / "hf" / repo / "main" / name
