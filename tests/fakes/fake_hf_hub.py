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
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _loopback import Handler, RunningServer, serve_in_thread

__all__ = ["COMMIT", "INFO_PATH", "RESOLVE_PATH", "Body", "HubHandler", "SlowHub", "git_blob_id", "hf_model_path", "sibling"]

COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
_BLOCK = 64 * 1024

# The hub's routes that huggingface_hub and ltcai's downloads use.
INFO_PATH = re.compile(r"/api/models/([^/]+/[^/?]+)(?:/revision/[^/?]+)?(?:\?.*)?")  # → repo
RESOLVE_PATH = re.compile(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)")  # → repo, revision, file


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sibling(name: str, data: bytes, sha256: str | None = None, blob_id: str | None = None) -> dict[str, Any]:
    """A file of a repo as ``/api/models/<repo>`` lists it: an LFS file, with its hashes."""
    sha256 = sha256 or hashlib.sha256(data).hexdigest()
    blob_id = blob_id or git_blob_id(data)
    return {"rfilename": name, "size": len(data), "blobId": blob_id,
            "lfs": {"sha256": sha256, "size": len(data), "pointerSize": 134}}


class HubHandler(Handler):
    """What a hub origin shares: HTTP/1.1 keep-alive, HEAD answered like GET, no Nagle delay."""

    protocol_version = "HTTP/1.1"
    no_delay = True

    def do_HEAD(self) -> None:  # noqa: N802
        self.route()

    def do_GET(self) -> None:  # noqa: N802
        self.route()

    def route(self) -> None:
        raise NotImplementedError


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
    _running: RunningServer | None = None

    def add(self, repo: str, files: dict[str, bytes]) -> None:
        self.repos[repo] = files

    @property
    def endpoint(self) -> str:
        assert self._running is not None
        return self._running.url

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
        self._running = serve_in_thread(_handler(self), poll_interval=0.02, name="fake-hf-hub")
        return self

    def stop(self) -> None:
        self.release()
        if self._running is not None:
            self._running.stop()


def _handler(hub: SlowHub) -> type[HubHandler]:
    class SlowHubHandler(HubHandler):
        def route(self) -> None:
            if m := INFO_PATH.fullmatch(self.path):
                return self._info(m[1])
            if m := RESOLVE_PATH.fullmatch(self.path):
                return self._file(m[1], m[3])
            self.send_bytes(404, b"{}")

        def _info(self, repo: str) -> None:
            files = hub.repos.get(repo)
            if files is None:
                return self.send_bytes(404, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"})
            siblings = [sibling(name, data) for name, data in files.items()]
            body = {"id": repo, "modelId": repo, "sha": COMMIT, "private": False, "siblings": siblings}
            self.send_json(200, body)

        def _file(self, repo: str, name: str) -> None:
            data = hub.repos.get(repo, {}).get(name)
            if data is None:
                return self.send_bytes(404, b"", {"X-Error-Code": "EntryNotFound"})
            asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            start = int(asked[1]) if asked else 0
            if start >= len(data) and start:
                return self.send_bytes(416, b"", {"Content-Range": f"bytes */{len(data)}"})
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

    return SlowHubHandler


def hf_model_path(data_dir: Path, repo: str, name: str) -> Path:
    """Where a daemon with ``data_dir`` keeps a GGUF it downloaded from the hub."""
    return data_dir / "models" / "hf" / repo / "main" / name
