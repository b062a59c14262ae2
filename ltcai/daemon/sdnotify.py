"""systemd's readiness/watchdog protocol: a datagram to ``$NOTIFY_SOCKET``.

The protocol is one sendto() of ``KEY=VALUE`` lines; libsystemd is not needed for it.
Without ``NOTIFY_SOCKET`` (not started by systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify", "watchdog_interval_s"]


def _address(env: dict[str, str]) -> str | None:
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return None
    # A leading "@" names a socket in the abstract namespace.
    return "\0" + address[1:] if address.startswith("@") else address


def notify(message: str, env: dict[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``READY=1``); True if a notify socket was there to take it."""
    address = _address(dict(os.environ) if env is None else env)
    if address is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)
    return True


def watchdog_interval_s(env: dict[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None if not asked."""
    env = dict(os.environ) if env is None else env
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
