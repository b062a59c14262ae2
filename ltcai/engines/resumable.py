"""A resumable HTTP download into a file that is whole or absent: ``fetch``.

The bytes go to ``<dest>.partial``; a later call (after a dropped connection, a full
disk, a killed daemon) asks the server for the rest with ``Range: bytes=N-``, re-hashing
the N bytes already there first. Only when the size and sha256 are what the caller
expected is the partial file fsynced and renamed to ``dest``, so ``dest`` is never a
half-written or corrupt file. A server that ignores ``Range`` (200 instead of 206) is
read from the start again; redirects are followed (the HF hub sends LFS files to a CDN).

Beside the partial file, ``<dest>.partial.json`` records what it is a prefix of (the
expected sha256 and size, else the URL): a partial of another version of the file is
started over rather than completed into a checksum failure. An exclusive ``flock`` on
the partial file keeps two jobs (or two daemons) from writing it at once.

Every byte is written and hashed in a worker thread, 1 MiB at a time, so the event loop
only moves buffers; the hash is computed while downloading, not by a second read.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import httpx

from ..errors import DownloadError
from .base import EngineContext

__all__ = ["CHUNK_SIZE", "TransferResult", "fetch", "format_bytes", "make_private_dirs", "partial_path"]

CHUNK_SIZE = 1 << 20
_PROGRESS_INTERVAL_S = 0.1  # at most ~10 progress events a second
_WRITE_AHEAD = 4  # chunks received but not yet written: bounds memory to ~5 MiB
_HASH_READ = 4 << 20
# Per read, not per download: a 20 GB file may take hours, a stalled socket should not.
_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


class _SizeExceeded(Exception):
    """The server sent more bytes than the expected size."""


@dataclass(frozen=True)
class TransferResult:
    path: Path
    size: int
    sha256: str
    resumed_from: int  # bytes of an earlier partial file that were kept (0: from scratch)
    restarted: bool  # the server ignored Range and the file was read from the start


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".partial")


def _meta_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".partial.json")


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class _Sink:
    """The partial file and the running hash, driven from a worker thread."""

    def __init__(self, path: Path, meta: Path, identity: dict[str, Any]) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise
        self.fh = os.fdopen(fd, "r+b")
        self.hasher = hashlib.sha256()
        try:
            recorded = json.loads(meta.read_text())
        except (OSError, ValueError):
            recorded = None
        try:
            if recorded != identity:
                self.fh.truncate(0)
                _write_atomic(meta, json.dumps(identity).encode())
        except OSError:
            self.fh.close()
            raise
        self.offset = os.fstat(fd).st_size

    def hash_prefix(self, on_bytes: Any) -> None:
        self.fh.seek(0)
        left = self.offset
        while left:
            block = self.fh.read(min(_HASH_READ, left))
            if not block:  # the file shrank under us: keep what is really there
                break
            self.hasher.update(block)
            left -= len(block)
            on_bytes(self.offset - left)
        self.offset -= left
        self.fh.truncate(self.offset)
        self.fh.seek(self.offset)

    def restart(self) -> None:
        self.fh.seek(0)
        self.fh.truncate(0)
        self.hasher = hashlib.sha256()
        self.offset = 0

    def write(self, chunk: bytes) -> None:
        self.fh.write(chunk)
        self.fh.flush()
        self.hasher.update(chunk)
        self.offset += len(chunk)

    def finish(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        try:
            self.fh.close()
        except OSError:
            pass  # a flush that hit a full disk again: the partial file is still a prefix


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def make_private_dirs(path: Path) -> None:
    """``mkdir -p`` with every folder it creates 0700 (``Path.mkdir`` gives parents the
    umask's 0755): which models a user keeps is theirs to know. Existing ones are left."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made meanwhile by another job
        os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _promote(partial: Path, meta: Path, dest: Path) -> None:
    os.replace(partial, dest)
    meta.unlink(missing_ok=True)
    _fsync_dir(dest.parent)


def _discard(partial: Path, meta: Path) -> None:
    partial.unlink(missing_ok=True)
    meta.unlink(missing_ok=True)


async def fetch(
    ctx: EngineContext,
    url: str,
    dest: Path,
    *,
    size: int | None,
    sha256: str | None,
    headers: dict[str, str] | None = None,
    label: str | None = None,
) -> TransferResult:
    """Download ``url`` to ``dest`` (resuming ``<dest>.partial``), verified before the rename.

    Raises ``DownloadError``: ``network_error`` and ``disk_full`` keep the partial file
    for the next call; ``checksum_mismatch`` and ``size_mismatch`` delete it; HTTP
    refusals map to ``auth_failed`` / ``file_not_found`` / ``network_error``.
    """
    label = label or dest.name
    partial, meta = partial_path(dest), _meta_path(dest)
    identity = {"sha256": sha256, "size": size} if sha256 else {"url": url, "size": size}
    await ctx.run_sync(make_private_dirs, dest.parent)
    if size is not None:  # fail before creating anything when the file clearly cannot fit
        have = await ctx.run_sync(_size_or_zero, partial)
        await _check_space(ctx, dest, size - min(have, size), label)
    try:
        sink = await ctx.run_sync(_Sink, partial, meta, identity)
    except BlockingIOError:
        raise DownloadError(
            f"{label} is already being downloaded by another job",
            hint="wait for that job to finish (ltcai jobs), then prepare again",
            code="download_in_progress",
        ) from None
    except OSError as exc:
        raise _io_error(exc, label, dest, size) from exc
    try:
        return await _fetch_into(ctx, sink, url, dest, size=size, sha256=sha256, headers=headers, label=label)
    finally:
        sink.close()


async def _fetch_into(
    ctx: EngineContext,
    sink: _Sink,
    url: str,
    dest: Path,
    *,
    size: int | None,
    sha256: str | None,
    headers: dict[str, str] | None,
    label: str,
) -> TransferResult:
    partial, meta = partial_path(dest), _meta_path(dest)
    if size is not None and sink.offset > size:
        await ctx.run_sync(sink.restart)
    if sink.offset:
        await _hash_prefix(ctx, sink, label)
    resumed_from = sink.offset
    restarted = False

    if size is None or sink.offset < size:
        try:
            restarted = await _stream(ctx, sink, url, size=size, headers=headers or {}, label=label)
        except httpx.TransportError as exc:
            total = f" of {format_bytes(size)}" if size is not None else ""
            raise DownloadError(
                f"the download of {label} stopped at {format_bytes(sink.offset)}{total}: {exc or type(exc).__name__}",
                hint="check the network and prepare again: the download resumes where it stopped",
                code="network_error",
            ) from exc
        except OSError as exc:
            raise _io_error(exc, label, dest, None if size is None else size - sink.offset) from exc
        except _SizeExceeded:
            await ctx.run_sync(_discard, partial, meta)
            raise DownloadError(
                f"the server sent more than the {format_bytes(size or 0)} expected for {label}",
                hint="the file on the server changed; prepare again to fetch the new version",
                code="size_mismatch",
            ) from None
    if restarted:
        resumed_from = 0

    if size is not None and sink.offset < size:
        raise DownloadError(
            f"the download of {label} ended early at {format_bytes(sink.offset)} of {format_bytes(size)}",
            hint="prepare again: the download resumes where it stopped",
            code="network_error",
        )
    try:
        await ctx.run_sync(sink.finish)
    except OSError as exc:
        raise _io_error(exc, label, dest, 0) from exc
    actual = sink.hasher.hexdigest()
    if sha256 is not None and actual != sha256.lower():
        await ctx.run_sync(_discard, partial, meta)
        where = f" (resumed at {format_bytes(resumed_from)})" if resumed_from else ""
        raise DownloadError(
            f"{label} has sha256 {actual}, expected {sha256}{where}; the download was deleted",
            hint="prepare again; if it fails the same way, the server or a proxy is serving different bytes",
            code="checksum_mismatch",
        )
    sink.close()  # release the lock before the rename, so the final file is never locked
    await ctx.run_sync(_promote, partial, meta, dest)
    ctx.progress(f"downloaded {label}", done=sink.offset, total=sink.offset, unit="B")
    return TransferResult(path=dest, size=sink.offset, sha256=actual, resumed_from=resumed_from, restarted=restarted)


async def _stream(
    ctx: EngineContext, sink: _Sink, url: str, *, size: int | None, headers: dict[str, str], label: str
) -> bool:
    """Append the rest of ``url`` to the sink; True when it had to start over from byte 0."""
    restarted = False
    for _attempt in range(2):
        request_headers = {**headers, "Accept-Encoding": "identity"}
        if sink.offset:
            request_headers["Range"] = f"bytes={sink.offset}-"
        async with ctx.http.stream(
            "GET", url, headers=request_headers, follow_redirects=True, timeout=_TIMEOUT
        ) as response:
            status = response.status_code
            if sink.offset and (status == 416 or (status == 206 and _range_start(response) != sink.offset)):
                # Our partial file is not a prefix of what the server has: start over.
                await ctx.run_sync(sink.restart)
                restarted = True
                continue
            if status not in (200, 206):
                raise _http_error(response, label)
            if sink.offset and status == 200:  # Range ignored: this is the whole file again
                await ctx.run_sync(sink.restart)
                restarted = True
            await _copy(ctx, sink, response, size=size, label=label)
            return restarted
    raise DownloadError(
        f"the server answered a resumed download of {label} with a range that was not asked for",
        hint="prepare again; if it keeps failing, delete the .partial file",
        code="network_error",
    )


async def _copy(ctx: EngineContext, sink: _Sink, response: httpx.Response, *, size: int | None, label: str) -> None:
    """Network reads and disk writes overlap: a writer task drains a few chunks behind.

    When the network fails, the writer still writes what had arrived (at most the chunk
    being assembled is lost); when the disk fails, reading stops.
    """
    send, receive = anyio.create_memory_object_stream[bytes](_WRITE_AHEAD)
    network_error: httpx.TransportError | None = None
    disk_error: OSError | None = None
    too_big = False

    async def write_all() -> None:
        nonlocal disk_error
        last = 0.0
        async with receive:
            try:
                async for chunk in receive:
                    await ctx.run_sync(sink.write, chunk)
                    now = time.monotonic()
                    if now - last >= _PROGRESS_INTERVAL_S:
                        last = now
                        ctx.progress(f"downloading {label}", done=sink.offset, total=size, unit="B")
            except OSError as exc:
                disk_error = exc
                tg.cancel_scope.cancel()

    ctx.progress(f"downloading {label}", done=sink.offset, total=size, unit="B")
    received = sink.offset
    async with anyio.create_task_group() as tg:
        tg.start_soon(write_all)
        async with send:
            try:
                async for chunk in response.aiter_bytes(CHUNK_SIZE):
                    received += len(chunk)
                    if size is not None and received > size:
                        too_big = True
                        break
                    await send.send(chunk)
            except httpx.TransportError as exc:
                network_error = exc
    if disk_error is not None:
        raise disk_error
    if too_big:
        raise _SizeExceeded
    if network_error is not None:
        raise network_error


def _range_start(response: httpx.Response) -> int | None:
    # "bytes 1048576-4194303/4194304"
    value = response.headers.get("Content-Range", "")
    unit, _, rest = value.partition(" ")
    start, _, _ = rest.partition("-")
    return int(start) if unit == "bytes" and start.isdigit() else None


async def _hash_prefix(ctx: EngineContext, sink: _Sink, label: str) -> None:
    have = sink.offset
    ctx.progress(f"checking the {format_bytes(have)} already downloaded of {label}", done=0, total=have, unit="B")
    last = 0.0

    def on_bytes(done: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= _PROGRESS_INTERVAL_S or done == have:
            last = now
            anyio.from_thread.run_sync(
                lambda: ctx.progress(f"checking the partial download of {label}", done=done, total=have, unit="B")
            )

    await ctx.run_sync(sink.hash_prefix, on_bytes)


async def _check_space(ctx: EngineContext, dest: Path, needed: int, label: str) -> None:
    free = (await ctx.run_sync(shutil.disk_usage, dest.parent)).free
    if needed > free:
        raise DownloadError(
            f"not enough disk space for {label}: {format_bytes(needed)} more needed, {format_bytes(free)} free"
            f" in {dest.parent}",
            hint=f"free at least {format_bytes(needed - free)} on that disk (or move the data dir), then prepare again;"
            " what was downloaded is kept",
            code="disk_full",
        )


def _io_error(exc: OSError, label: str, dest: Path, needed: int | None) -> DownloadError:
    if exc.errno in _NO_SPACE:
        amount = f"at least {format_bytes(needed)}" if needed else "some space"
        return DownloadError(
            f"the disk filled up while downloading {label}",
            hint=f"free {amount} on the disk holding {dest.parent}, then prepare again: the download resumes"
            " from what is already there",
            code="disk_full",
        )
    return DownloadError(
        f"cannot write {label} to {dest.parent}: {exc.strerror or exc}",
        hint="check the permissions and the disk of ltcai's data dir",
        code="io_error",
    )


def _http_error(response: httpx.Response, label: str) -> DownloadError:
    status = response.status_code
    if status in (401, 403):
        return DownloadError(
            f"the server refused access to {label} (HTTP {status})",
            hint="for a gated or private repository, accept its terms on the website and log in"
            " (`hf auth login` or HF_TOKEN)",
            code="auth_failed",
        )
    if status == 404:
        return DownloadError(
            f"{label} is not on the server (HTTP 404)", hint="check the model name", code="file_not_found"
        )
    return DownloadError(
        f"the server answered HTTP {status} for {label}",
        hint="the server may be busy; prepare again later: the download resumes",
        code="network_error",
    )
