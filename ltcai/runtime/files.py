"""Files written so that a crash never leaves half of one, in directories only the user reads.

Blocking calls: callers on the event loop run them through ``anyio.to_thread.run_sync``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["append_all", "atomic_write_bytes", "ensure_private_dir", "open_for_append"]


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700: state and sockets are per-user."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that it is always either old or new, never partial.

    A temp file in the same directory is written and fsynced, renamed over ``path``, and
    the directory is fsynced: a reader, or a process killed mid-write and restarted, sees
    the old content or the new one.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def open_for_append(path: Path) -> int:
    """A file descriptor appending to ``path`` (created 0600): a log only its user reads."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def append_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``: ``os.write`` may take only part of it."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
