"""Checks on model files: GGUF magic, size, sha256 — hashing off the event loop.

A caller may pass a ``memo`` (an adapter keeps a :class:`VerifiedFiles` for its lifetime)
so a later prepare of the same unchanged file does not hash it again — also after a
daemon restart: the memo is kept in the models dir, keyed by path, size, mtime and the
expected hash, so a file that changed in any way is hashed anew. Hashing the bundled
98 MB SmolLM2 costs ~120 ms of the first prepare after each start otherwise.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import anyio

from ..errors import DownloadError
from ..runtime.files import atomic_write_bytes
from .base import EngineContext

__all__ = ["GGUF_MAGIC", "VerifiedFiles", "check_magic", "sha256_file", "verify_file"]

_MEMO_FILE = ".verified.json"
_MEMO_MAX = 256  # entries kept: the newest; an old file forgotten is only hashed again

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


class VerifiedFiles:
    """The files whose hash matched, as ``path|size|mtime_ns|sha256`` keys, in the models
    dir. Read once, on first use; a file that cannot be read or written is only a memo
    lost (the next prepare hashes again), never an error."""

    def __init__(self) -> None:
        self._keys: list[str] | None = None

    @staticmethod
    def _path(ctx: EngineContext) -> Path:
        return ctx.models_dir / _MEMO_FILE

    @classmethod
    def _read(cls, ctx: EngineContext) -> list[str]:
        try:
            keys = json.loads(cls._path(ctx).read_text())
        except (OSError, ValueError):
            return []
        return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []

    async def _load(self, ctx: EngineContext) -> list[str]:
        if self._keys is None:
            self._keys = await ctx.run_sync(self._read, ctx)
        return self._keys

    async def contains(self, ctx: EngineContext, key: str) -> bool:
        return key in await self._load(ctx)

    async def add(self, ctx: EngineContext, key: str) -> None:
        keys = await self._load(ctx)
        keys.append(key)

        def write() -> None:
            # Merged with the file as it is now: each engine (llama.cpp, MLX) keeps its own
            # memo of the same file, and one must not drop what the other wrote.
            merged = [k for k in self._read(ctx) if k not in keys] + keys
            try:
                ctx.models_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(self._path(ctx), json.dumps(merged[-_MEMO_MAX:]).encode())
            except OSError:
                pass  # a full or read-only disk: the memo lives on in memory

        await ctx.run_sync(write)
        del keys[:-_MEMO_MAX]


async def verify_file(
    ctx: EngineContext, path: Path, *, size: int | None, sha256: str | None, memo: VerifiedFiles | None = None
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
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{sha256}"
    if memo is not None and await memo.contains(ctx, key):
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
        await memo.add(ctx, key)
