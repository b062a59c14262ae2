"""GGUF downloads from the Hugging Face hub, against a LOOPBACK FAKE of the hub.

``FakeHub`` is a test double at the HTTP seam: two loopback servers that follow the hub's
published HTTP API as huggingface_hub uses it — ``/api/models/<repo>`` (model info with
``siblings`` carrying size, ``blobId`` and ``lfs`` {sha256, size}), ``/<repo>/resolve/<rev>/<file>``
answering HEAD and GET with a redirect to a "CDN" on another origin and the metadata
headers (``X-Repo-Commit``, ``ETag``, ``X-Linked-Size``, ``X-Linked-Etag``), errors marked
with ``X-Error-Code`` — and the CDN serving the bytes with ``Range`` support. It can drop
a connection after N bytes, ignore Range, serve bytes other than the advertised sha256,
or run a hook before a body (to fill the disk). huggingface_hub itself (the real library,
pointed at the fake with ``HF_ENDPOINT``) lists the files and, in one test, fills the
HF cache; the transfer under test is ltcai's own (``ltcai.engines.resumable``). The files
served are real GGUFs written with ``gguf.GGUFWriter``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import gguf
import httpx
import numpy as np
import pytest
import pytest_asyncio
from _loopback import RunningServer, serve_in_thread
from fake_hf_hub import INFO_PATH, RESOLVE_PATH, HubHandler, git_blob_id, sibling

from ltcai.engines import hf_download, resumable
from ltcai.engines.base import EngineContext
from ltcai.engines.hf_download import download_gguf, pick_gguf
from ltcai.errors import DownloadError

REPO = "acme/tiny-GGUF"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_fake_token_for_tests"
MiB = 1 << 20


# --------------------------------------------------------------------------- GGUF files


def make_gguf(path: Path, tensor_bytes: int, seed: int) -> bytes:
    """A real GGUF: header, metadata and one tensor of random (incompressible) floats."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(f"Tiny Test {seed}")
    data = np.random.default_rng(seed).standard_normal(tensor_bytes // 4).astype(np.float32)
    writer.add_tensor("w", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.fixture(scope="session")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """~3.5 MiB: big enough that a transfer spans several 1 MiB chunks."""
    return make_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", int(3.5 * MiB), seed=1)


@pytest.fixture(scope="session")
def small_ggufs(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    root = tmp_path_factory.mktemp("small")
    return [make_gguf(root / f"{i}.gguf", 4096, seed=10 + i) for i in range(4)]


# --------------------------------------------------------------------------- the fake hub


@dataclass
class Seen:
    server: str  # "hub" or "cdn"
    method: str
    path: str
    range: str | None
    authorized: bool


@dataclass
class FakeHub:
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    tamper: dict[str, bytes] = field(default_factory=dict)  # sha256 → other bytes served for it
    drop_after: int | None = None  # the next CDN body stops after this many bytes
    ignore_range: bool = False
    before_body: Callable[[], None] | None = None  # runs once, before the next CDN body
    seen: list[Seen] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)  # sha256 → bytes
    oids: dict[str, str] = field(default_factory=dict)  # sha256 → git blob id

    def add(self, repo: str, files: dict[str, bytes]) -> None:
        self.repos[repo] = files
        for data in files.values():  # hashed once: the handlers look them up per request
            sha = hashlib.sha256(data).hexdigest()
            self.blobs[sha] = data
            self.oids[sha] = git_blob_id(data)

    @property
    def endpoint(self) -> str:
        return self._hub.url

    @property
    def cdn(self) -> str:
        return self._cdn.url

    def blob(self, sha: str) -> bytes | None:
        data = self.blobs.get(sha)
        return None if data is None else self.tamper.get(sha, data)

    def sibling(self, name: str, data: bytes) -> dict[str, Any]:
        sha = next(s for s, d in self.blobs.items() if d is data)
        return sibling(name, data, sha256=sha, blob_id=self.oids[sha])

    def body_gets(self) -> list[Seen]:
        return [s for s in self.seen if s.server == "cdn" and s.method == "GET"]

    def start(self) -> None:
        self._hub: RunningServer = serve_in_thread(_handler(self, "hub"), poll_interval=0.02, name="fake-hub")
        self._cdn: RunningServer = serve_in_thread(_handler(self, "cdn"), poll_interval=0.02, name="fake-cdn")

    def stop(self) -> None:
        self._hub.stop()
        self._cdn.stop()


def _handler(hub: FakeHub, role: str) -> type[HubHandler]:
    class Handler(HubHandler):
        def route(self) -> None:
            hub.seen.append(Seen(role, self.command, self.path, self.headers.get("Range"),
                                 "authorization" in {k.lower() for k in self.headers}))
            if role == "cdn":
                return self._blob()
            if m := INFO_PATH.fullmatch(self.path):
                return self._info(m[1])
            if m := RESOLVE_PATH.fullmatch(self.path):
                return self._resolve(m[1], m[3])
            self.send_bytes(404, b"not found")

        def _info(self, repo: str) -> None:
            files = hub.repos.get(repo)
            if files is None:
                return self.send_bytes(404, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"})
            body = {
                "id": repo, "modelId": repo, "sha": COMMIT, "private": False, "tags": ["gguf"],
                "siblings": [hub.sibling(n, d) for n, d in files.items()],
            }
            self.send_json(200, body)

        def _resolve(self, repo: str, name: str) -> None:
            files = hub.repos.get(repo)
            if files is None:
                return self.send_bytes(404, b"", {"X-Error-Code": "RepoNotFound"})
            data = files.get(name)
            if data is None:
                return self.send_bytes(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
            sha = hub.sibling(name, data)["lfs"]["sha256"]
            self.send_bytes(302, b"", {
                "Location": f"{hub.cdn}/blobs/{sha}",
                "X-Repo-Commit": COMMIT,
                "ETag": f'"{sha}"',
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(data)),
            })

        def _blob(self) -> None:
            data = hub.blob(self.path.rsplit("/", 1)[-1])
            if data is None:
                return self.send_bytes(404, b"")
            start = 0
            asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if asked and not hub.ignore_range:
                start = int(asked[1])
                if start >= len(data):
                    return self.send_bytes(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            headers = {"Content-Length": str(len(data) - start), "Accept-Ranges": "bytes",
                       "ETag": f'"{self.path.rsplit("/", 1)[-1]}"'}
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self.send_response(206 if start else 200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            hook, hub.before_body = hub.before_body, None
            if hook is not None:
                hook()
            body = memoryview(data)[start:]
            drop, hub.drop_after = hub.drop_after, None
            if drop is not None:
                self.wfile.write(body[:drop])
                self.drop_connection()
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    fake = FakeHub()
    fake.start()
    # huggingface_hub read these at import; ltcai reads them again per download.
    monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # never the user's cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    yield fake
    fake.stop()


@dataclass
class Events:
    items: list[tuple[str, float | None, float | None, str | None]] = field(default_factory=list)

    def __call__(self, message: str, *, done: float | None = None, total: float | None = None,
                 unit: str | None = None) -> None:
        self.items.append((message, done, total, unit))

    def downloading(self) -> list[tuple[float, float | None]]:
        return [(d, t) for m, d, t, _ in self.items if m.startswith("download") and d is not None]


@pytest_asyncio.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[EngineContext]:
    async with httpx.AsyncClient() as http:
        yield EngineContext(
            options={},
            models_dir=tmp_path / "models",
            engines_dir=tmp_path / "engines",
            logs_dir=tmp_path / "logs",
            spawn=None,  # type: ignore[arg-type]  # only serve uses it
            http=http,
            progress=Events(),
            run_sync=anyio.to_thread.run_sync,
        )


def final_path(ctx: EngineContext, name: str, repo: str = REPO) -> Path:
    return ctx.models_dir / "hf" / repo / "main" / name


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- picking the file


NAMES = [
    "README.md", "tiny-Q4_K_M.gguf", "tiny.Q8_0.gguf", "tiny-q4_0.gguf", "tiny-IQ4_XS.gguf",
    "big-Q6_K-00001-of-00002.gguf", "big-Q6_K-00002-of-00002.gguf", "mmproj-tiny-F16.gguf",
]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (None, "tiny-Q4_K_M.gguf"),
        ("q4_k_m", "tiny-Q4_K_M.gguf"),
        ("Q8_0", "tiny.Q8_0.gguf"),
        ("Q4_0", "tiny-q4_0.gguf"),
        ("IQ4_XS", "tiny-IQ4_XS.gguf"),
        ("tiny.Q8_0.gguf", "tiny.Q8_0.gguf"),
        ("mmproj-tiny-F16.gguf", "mmproj-tiny-F16.gguf"),
    ],
)
def test_pick_gguf_by_quant_or_name(selector: str | None, expected: str) -> None:
    assert pick_gguf(REPO, NAMES, selector) == expected


def test_pick_gguf_without_selector_prefers_q4_0_after_q4_k_m() -> None:
    assert pick_gguf(REPO, ["m-Q8_0.gguf", "m-Q4_0.gguf", "m-F16.gguf"], None) == "m-Q4_0.gguf"
    assert pick_gguf(REPO, ["only.gguf", "README.md"], None) == "only.gguf"


@pytest.mark.parametrize(
    ("names", "selector", "code"),
    [
        (["m-Q8_0.gguf", "m-F16.gguf"], None, "ambiguous_file"),
        (["a-Q8_0.gguf", "b-Q8_0.gguf"], "Q8_0", "ambiguous_file"),
        (NAMES, "Q6_K", "unsupported"),  # split files only
        (NAMES, "Q5_K_M", "file_not_found"),
        (NAMES, "F16", "file_not_found"),  # a projector is not a model
        (["README.md", "model.safetensors"], None, "file_not_found"),
        (["m-Q4_0_4_4.gguf"], "Q4_0", "file_not_found"),  # Q4_0 is not a prefix match
    ],
)
def test_pick_gguf_refusals(names: list[str], selector: str | None, code: str) -> None:
    with pytest.raises(DownloadError) as err:
        pick_gguf(REPO, names, selector)
    assert err.value.code == code


def test_ambiguous_hint_lists_selectable_references() -> None:
    with pytest.raises(DownloadError) as err:
        pick_gguf(REPO, ["m-Q8_0.gguf", "m-F16.gguf", "other.gguf"], None)
    assert err.value.hint == f"choose one of: {REPO}:F16, {REPO}:Q8_0, {REPO}:other.gguf"


# --------------------------------------------------------------------------- downloads


@pytest.mark.asyncio
async def test_full_download_verified_with_byte_progress(hub: FakeHub, ctx: EngineContext, gguf_bytes: bytes) -> None:
    hub.add(REPO, {"tiny-Q4_K_M.gguf": gguf_bytes, "README.md": b"# tiny\n"})
    result = await download_gguf(ctx, f"hf.co/{REPO}:Q4_K_M")

    dest = final_path(ctx, "tiny-Q4_K_M.gguf")
    assert (result.path, result.downloaded, result.source) == (str(dest), True, "hf")
    assert (result.bytes, result.sha256) == (len(gguf_bytes), sha(gguf_bytes))
    assert dest.read_bytes() == gguf_bytes
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tiny-Q4_K_M.gguf", "tiny-Q4_K_M.gguf.verified"]
    progress = ctx.progress.downloading()  # type: ignore[attr-defined]
    done = [d for d, _ in progress]
    assert done == sorted(done) and done[-1] == len(gguf_bytes)
    assert {t for _, t in progress} == {len(gguf_bytes)}
    assert all(unit == "B" for _, d, _, unit in ctx.progress.items if d is not None)  # type: ignore[attr-defined]
    # The token goes to the hub, never to the CDN the file is redirected to.
    [body] = hub.body_gets()
    assert not body.authorized and body.range is None
    assert all(s.authorized for s in hub.seen if s.server == "hub")


@pytest.mark.asyncio
async def test_second_prepare_reuses_the_verified_copy(hub: FakeHub, ctx: EngineContext, gguf_bytes: bytes) -> None:
    hub.add(REPO, {"tiny-Q4_K_M.gguf": gguf_bytes})
    await download_gguf(ctx, REPO)
    hub.seen.clear()
    before = len(ctx.progress.items)  # type: ignore[attr-defined]
    again = await download_gguf(ctx, REPO)
    assert (again.downloaded, again.source, again.sha256) == (False, "hf", sha(gguf_bytes))
    assert hub.body_gets() == []
    # The .verified stamp vouches for the unchanged file: no second hashing.
    assert [m for m, *_ in ctx.progress.items[before:]] == [f"listing the files of {REPO} on {hub.endpoint}"]  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_corrupted_copy_is_downloaded_again(hub: FakeHub, ctx: EngineContext, gguf_bytes: bytes) -> None:
    hub.add(REPO, {"tiny-Q4_K_M.gguf": gguf_bytes})
    await download_gguf(ctx, REPO)
    dest = final_path(ctx, "tiny-Q4_K_M.gguf")
    with dest.open("r+b") as fh:  # same size, one byte flipped: only the hash can tell
        fh.seek(len(gguf_bytes) // 2)
        fh.write(bytes([gguf_bytes[len(gguf_bytes) // 2] ^ 0xFF]))
    result = await download_gguf(ctx, REPO)
    assert result.downloaded and dest.read_bytes() == gguf_bytes


@pytest.mark.asyncio
async def test_interrupted_download_resumes_from_the_partial_file(
    hub: FakeHub, ctx: EngineContext, gguf_bytes: bytes
) -> None:
    hub.add(REPO, {"tiny-Q4_K_M.gguf": gguf_bytes})
    dest = final_path(ctx, "tiny-Q4_K_M.gguf")
    cut = int(2.5 * MiB)
    hub.drop_after = cut
    with pytest.raises(DownloadError) as err:
        await download_gguf(ctx, REPO)
    assert err.value.code == "network_error"
    assert "resumes" in (err.value.hint or "")
    partial = resumable.partial_path(dest)
    kept = partial.stat().st_size
    assert 0 < kept <= cut and not dest.exists()
    assert partial.read_bytes() == gguf_bytes[:kept]

    hub.seen.clear()
    result = await download_gguf(ctx, REPO)
    [body] = hub.body_gets()
    start = int(re.fullmatch(r"bytes=(\d+)-", body.range or "")[1])  # type: ignore[index]
    assert start == kept
    assert cut - start < resumable.CHUNK_SIZE  # at most one chunk fetched twice
    assert result.downloaded and result.sha256 == sha(gguf_bytes)
    assert dest.read_bytes() == gguf_bytes
    assert not partial.exists()
    assert "resumed" in result.message


@pytest.mark.asyncio
async def test_checksum_mismatch_leaves_nothing(hub: FakeHub, ctx: EngineContext, gguf_bytes: bytes) -> None:
    hub.add(REPO, {"tiny-Q4_K_M.gguf": gguf_bytes})
    evil = bytearray(gguf_bytes)
    evil[-1] ^= 0xFF
    hub.tamper[sha(gguf_bytes)] = bytes(evil)
    with pytest.raises(DownloadError) as err:
        await download_gguf(ctx, REPO)
    assert err.value.code == "checksum_mismatch"
    dest = final_path(ctx, "tiny-Q4_K_M.gguf")
    assert not dest.exists() and not resumable.partial_path(dest).exists()
    assert [p.name for p in dest.parent.iterdir()] == []


@pytest.mark.asyncio
async def test_server_ignoring_range_restarts_from_zero(hub: FakeHub, ctx: EngineContext, gguf_bytes: bytes) -> None:
    hub.add(REPO, {"tiny-Q4_K_M.gguf": gguf_bytes})
    hub.drop_after = int(1.5 * MiB)
    with pytest.raises(DownloadError):
        await download_gguf(ctx, REPO)
    hub.ignore_range = True
    hub.seen.clear()
    result = await download_gguf(ctx, REPO)
    [body] = hub.body_gets()
    assert body.range is not None  # asked to resume, got the whole file
    assert result.sha256 == sha(gguf_bytes)
    assert final_path(ctx, "tiny-Q4_K_M.gguf").read_bytes() == gguf_bytes
    assert "resumed" not in result.message


@pytest.mark.asyncio
async def test_partial_of_another_version_is_started_over(
    hub: FakeHub, ctx: EngineContext, gguf_bytes: bytes, small_ggufs: list[bytes]
) -> None:
    hub.add(REPO, {"tiny-Q4_K_M.gguf": gguf_bytes})
    hub.drop_after = int(1.5 * MiB)
    with pytest.raises(DownloadError):
        await download_gguf(ctx, REPO)
    new = small_ggufs[0]
    hub.add(REPO, {"tiny-Q4_K_M.gguf": new})  # the repo moved on meanwhile
    hub.seen.clear()
    result = await download_gguf(ctx, REPO)
    [body] = hub.body_gets()
    assert body.range is None
    assert final_path(ctx, "tiny-Q4_K_M.gguf").read_bytes() == new and result.sha256 == sha(new)


@pytest.mark.asyncio
async def test_quant_selection_among_several_ggufs(hub: FakeHub, ctx: EngineContext, small_ggufs: list[bytes]) -> None:
    files = {"tiny-Q8_0.gguf": small_ggufs[0], "tiny-F16.gguf": small_ggufs[1], "tiny-Q2_K.gguf": small_ggufs[2]}
    hub.add(REPO, files)
    result = await download_gguf(ctx, f"{REPO}:q8_0")
    assert Path(result.path or "").name == "tiny-Q8_0.gguf" and result.sha256 == sha(small_ggufs[0])
    with pytest.raises(DownloadError) as err:
        await download_gguf(ctx, REPO)
    assert err.value.code == "ambiguous_file"
    assert f"{REPO}:Q2_K" in (err.value.hint or "") and f"{REPO}:F16" in (err.value.hint or "")
    with pytest.raises(DownloadError) as err:
        await download_gguf(ctx, f"{REPO}:Q5_K_M")
    assert err.value.code == "file_not_found"


@pytest.mark.asyncio
async def test_repo_not_found(hub: FakeHub, ctx: EngineContext) -> None:
    with pytest.raises(DownloadError) as err:
        await download_gguf(ctx, "acme/no-such-repo")
    assert err.value.code == "repo_not_found"
    assert "acme/no-such-repo" in err.value.message


@pytest.mark.asyncio
async def test_file_in_the_hf_cache_is_reused(hub: FakeHub, ctx: EngineContext, gguf_bytes: bytes) -> None:
    from huggingface_hub import hf_hub_download

    hub.add(REPO, {"tiny-Q4_K_M.gguf": gguf_bytes})
    cached = await anyio.to_thread.run_sync(lambda: hf_hub_download(
        REPO, "tiny-Q4_K_M.gguf", endpoint=hub.endpoint, cache_dir=os.environ["HF_HUB_CACHE"]
    ))
    hub.seen.clear()
    result = await download_gguf(ctx, f"{REPO}:Q4_K_M")
    assert (result.source, result.downloaded, result.path) == ("hf_cache", False, cached)
    assert result.sha256 == sha(gguf_bytes)
    assert hub.body_gets() == []
    assert not final_path(ctx, "tiny-Q4_K_M.gguf").exists()


@pytest.mark.asyncio
async def test_hf_cache_copy_of_another_size_is_not_used(
    hub: FakeHub, ctx: EngineContext, gguf_bytes: bytes
) -> None:
    from huggingface_hub import hf_hub_download

    hub.add(REPO, {"tiny-Q4_K_M.gguf": gguf_bytes})
    cached = await anyio.to_thread.run_sync(lambda: hf_hub_download(
        REPO, "tiny-Q4_K_M.gguf", endpoint=hub.endpoint, cache_dir=os.environ["HF_HUB_CACHE"]
    ))
    Path(cached).resolve().write_bytes(gguf_bytes[:-10])  # truncated by something else
    result = await download_gguf(ctx, REPO)
    assert (result.source, result.downloaded) == ("hf", True)


@pytest.mark.asyncio
async def test_offline_uses_a_copy_on_disk_or_says_offline(
    hub: FakeHub, ctx: EngineContext, gguf_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add(REPO, {"tiny-Q4_K_M.gguf": gguf_bytes})
    await download_gguf(ctx, REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.seen.clear()
    result = await download_gguf(ctx, f"{REPO}:Q4_K_M")
    assert (result.downloaded, result.source, result.sha256) == (False, "hf", sha(gguf_bytes))
    assert hub.seen == []
    with pytest.raises(DownloadError) as err:
        await download_gguf(ctx, "acme/elsewhere")
    assert err.value.code == "offline"


@pytest.mark.asyncio
async def test_unreachable_hub_is_a_network_error(
    ctx: EngineContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with pytest.raises(DownloadError) as err:
        await download_gguf(ctx, REPO)
    assert err.value.code == "network_error"


@pytest.mark.asyncio
async def test_concurrent_download_of_the_same_file_is_refused(
    hub: FakeHub, ctx: EngineContext, gguf_bytes: bytes
) -> None:
    hub.add(REPO, {"tiny-Q4_K_M.gguf": gguf_bytes})
    partial = resumable.partial_path(final_path(ctx, "tiny-Q4_K_M.gguf"))
    partial.parent.mkdir(parents=True)
    with partial.open("wb") as held:  # another job (or daemon) is writing it
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(DownloadError) as err:
            await download_gguf(ctx, REPO)
    assert err.value.code == "download_in_progress"
    assert hub.body_gets() == []


def test_not_a_hugging_face_reference() -> None:
    async def main() -> None:
        ctx = EngineContext({}, Path("/nonexistent"), Path("/x"), Path("/x"), None, None, Events(),  # type: ignore[arg-type]
                            anyio.to_thread.run_sync)
        with pytest.raises(DownloadError) as err:
            await download_gguf(ctx, "llama3.2:1b")
        assert err.value.code == "invalid_reference"

    anyio.run(main)


# --------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount tmpfs filesystems of a given size (needs root and mount rights; else skip)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no mount command: cannot make a small filesystem for the disk-full test")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): disk-full test skipped")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.asyncio
async def test_disk_too_small_fails_before_downloading(
    hub: FakeHub, ctx: EngineContext, gguf_bytes: bytes, small_disk: Callable[[str], Path]
) -> None:
    ctx.models_dir = small_disk("200k")
    hub.add(REPO, {"tiny-Q4_K_M.gguf": gguf_bytes})
    with pytest.raises(DownloadError) as err:
        await download_gguf(ctx, REPO)
    assert err.value.code == "disk_full"
    assert "3.5 MiB more needed" in err.value.message and "free at least" in (err.value.hint or "")
    assert hub.body_gets() == []
    dest = final_path(ctx, "tiny-Q4_K_M.gguf")
    assert not dest.exists() and not resumable.partial_path(dest).exists()


@pytest.mark.asyncio
async def test_disk_filling_up_mid_download_keeps_the_partial_for_resume(
    hub: FakeHub, ctx: EngineContext, gguf_bytes: bytes, small_disk: Callable[[str], Path]
) -> None:
    disk = small_disk("6m")
    ctx.models_dir = disk
    hub.add(REPO, {"tiny-Q4_K_M.gguf": gguf_bytes})
    filler = disk / "filler"

    def fill_disk() -> None:  # another program takes the space after our check
        free = shutil.disk_usage(disk).free
        filler.write_bytes(b"\0" * (free - int(1.5 * MiB)))

    hub.before_body = fill_disk
    with pytest.raises(DownloadError) as err:
        await download_gguf(ctx, REPO)
    assert err.value.code == "disk_full"
    assert "MiB" in (err.value.hint or "")
    dest = final_path(ctx, "tiny-Q4_K_M.gguf")
    partial = resumable.partial_path(dest)
    assert not dest.exists()
    kept = partial.stat().st_size
    assert kept >= resumable.CHUNK_SIZE and partial.read_bytes() == gguf_bytes[:kept]

    filler.unlink()
    hub.seen.clear()
    result = await download_gguf(ctx, REPO)
    [body] = hub.body_gets()
    assert body.range == f"bytes={kept}-"
    assert result.sha256 == sha(gguf_bytes) and dest.read_bytes() == gguf_bytes


def test_public_surface() -> None:
    assert hf_download.__all__ == ["download_gguf", "pick_gguf"]
    assert resumable.__all__ == [
        "CHUNK_SIZE", "TransferResult", "fetch", "format_bytes", "make_private_dirs", "partial_path",
    ]
