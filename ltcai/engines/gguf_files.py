"""Checks on model files: GGUF magic, size, sha256 — hashing off the event loop.

A caller may pass a ``memo`` set (an adapter keeps one for its lifetime) so a second
prepare of the same unchanged 98 MB file does not hash it again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio

from ..errors import DownloadError
from .base import EngineContext

__all__ = ["GGUF_MAGIC", "check_magic", "sha256_file", "verify_file"]

GGUF_MAGIC = b"GGUF"
_CHUNK = 4 << 20


def sha256_file(path: Path, on_bytes: object = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            if callable(on_bytes):
                on_bytes(len(chunk))
    return digest.hexdigest()


async def check_magic(ctx: EngineContext, path: Path) -> None:
    def read_magic() -> bytes:
        with path.open("rb") as fh:
            return fh.read(4)

    if await ctx.run_sync(read_magic) != GGUF_MAGIC:
        raise DownloadError(
            f"{path} is not a GGUF model file",
            hint="llama.cpp loads .gguf files; convert the model or pick a GGUF repository",
            code="invalid_model_file",
        )


async def verify_file(
    ctx: EngineContext, path: Path, *, size: int | None, sha256: str | None, memo: set[tuple] | None = None
) -> None:
    """Fail unless ``path`` has the expected size and hash (each when known)."""
    stat = path.stat()
    if size is not None and stat.st_size != size:
        raise DownloadError(
            f"{path} is {stat.st_size} bytes, expected {size}",
            hint="the file is incomplete or changed; reinstall or download it again",
            code="size_mismatch",
        )
    if sha256 is None:
        return
    key = (str(path), stat.st_size, stat.st_mtime_ns, sha256)
    if memo is not None and key in memo:
        return
    done = 0

    def on_bytes(n: int) -> None:
        nonlocal done
        done += n
        anyio.from_thread.run_sync(lambda: ctx.progress("verifying sha256", done=done, total=stat.st_size, unit="B"))

    actual = await ctx.run_sync(sha256_file, path, on_bytes)
    if actual != sha256:
        raise DownloadError(
            f"{path} has sha256 {actual}, expected {sha256}",
            hint="the file is corrupt; delete it and prepare again",
            code="checksum_mismatch",
        )
    if memo is not None:
        memo.add(key)
