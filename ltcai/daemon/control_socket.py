"""The control socket: bound by us (not the ASGI server) so its permissions are ours.

The socket is 0600 in a 0700 directory and every connection's peer uid is checked
(SO_PEERCRED on Linux, getpeereid on BSD/macOS) against the daemon's own: the file
mode keeps other users out, the peer check still holds if someone loosens it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import sys
from pathlib import Path

from ..errors import Conflict
from ..runtime.files import ensure_private_dir

__all__ = ["bind_control_socket", "peer_uid", "remove_socket", "socket_identity"]


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket, or None if unknown."""
    if sys.platform.startswith("linux"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid
    getpeereid = getattr(os, "getpeereid", None)  # not in the stdlib today; future-proof
    if getpeereid is not None:
        return getpeereid(sock.fileno())[0]
    return None


def _socket_answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def bind_control_socket(path: Path) -> socket.socket:
    """Bind and listen on ``path``; refuse if a live daemon owns it, replace a stale one."""
    ensure_private_dir(path.parent)
    if path.exists() or path.is_symlink():
        if _socket_answers(path):
            raise Conflict(
                f"another ltcai daemon is already listening on {path}",
                hint="stop it first (`ltcai service stop`, or kill the `ltcai serve` process), "
                "or start this one with --socket PATH",
                code="daemon_already_running",
            )
        path.unlink()  # stale: left by a daemon that was killed
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file is born 0600, no window where it is wider
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise Conflict(f"{path} is in use", code="daemon_already_running") from exc
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def socket_identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def remove_socket(path: Path, identity: tuple[int, int]) -> None:
    """Remove our socket file, but only if it is still ours (not a successor's)."""
    with contextlib.suppress(OSError):
        if socket_identity(path) == identity:
            path.unlink()
