"""The persistent store: JSON documents under ``state/``, every write atomic.

A write goes to a temp file in the same directory, is fsynced, renamed over the old
file, and the directory is fsynced: a reader (or a daemon killed mid-write and
restarted) sees the old document or the new one, never half of either. A document
that cannot be parsed is set aside (renamed ``*.corrupt-<time>``) with a warning so the
daemon still starts. File work runs in a worker thread: the event loop never blocks.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import anyio
import structlog

from ..runtime.files import atomic_write_bytes, ensure_private_dir

__all__ = ["StateStore"]

log = structlog.get_logger(__name__)


class StateStore:
    """Named JSON documents (``profiles``, ``jobs/<id>``, ``engines``) under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare(self) -> None:
        ensure_private_dir(self.root)
        ensure_private_dir(self.root / "jobs")
        # Temp files left by a write that was killed: never valid documents.
        for stale in self.root.rglob(".*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()

    def _path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def read_sync(self, name: str, default: Any = None) -> Any:
        path = self._path(name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return default
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            os.replace(path, aside)
            log.warning("state file corrupt; set aside", file=str(path), moved_to=str(aside), error=str(exc))
            return default

    def write_sync(self, name: str, document: Any) -> None:
        data = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        atomic_write_bytes(self._path(name), data)

    def delete_sync(self, name: str) -> None:
        with contextlib.suppress(OSError):
            self._path(name).unlink()

    def names_sync(self, folder: str) -> list[str]:
        return sorted(f"{folder}/{p.stem}" for p in (self.root / folder).glob("*.json"))

    async def read(self, name: str, default: Any = None) -> Any:
        return await anyio.to_thread.run_sync(self.read_sync, name, default)

    async def write(self, name: str, document: Any) -> None:
        await anyio.to_thread.run_sync(self.write_sync, name, document)

    async def save(self, name: str, document: Any) -> bool:
        """``write``, but a failure (a full or read-only disk) is logged, not raised.

        For the daemon's own records: a full disk must not take the daemon down with it.
        What was not saved lives on in memory (and goes to disk with its next change, if
        it has one); the old document stays whole on disk (the write is atomic). False if
        not saved.
        """
        try:
            await self.write(name, document)
        except OSError as exc:
            log.error(
                "could not save state",
                file=str(self._path(name)),
                error=exc.strerror or str(exc),
                hint="free space on the disk holding the data dir; ltcai keeps running meanwhile",
            )
            return False
        return True

    async def delete(self, name: str) -> None:
        await anyio.to_thread.run_sync(self.delete_sync, name)
