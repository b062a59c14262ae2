"""The bearer token that guards the loopback TCP API: made at first start, kept 0600.

The Unix socket needs no token (the peer's uid is the check); TCP has no peer identity,
so any local process could connect — the token is what tells the user's own clients apart.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from ..runtime.files import atomic_write_bytes, ensure_private_dir

__all__ = ["ensure_token", "token_matches"]


def ensure_token(path: Path) -> str:
    """The token stored at ``path``, creating it (0600, in a 0700 folder) if missing."""
    try:
        token = path.read_text().strip()
        if token:
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
            return token
    except FileNotFoundError:
        pass
    ensure_private_dir(path.parent)
    token = "ltcai-" + secrets.token_urlsafe(32)
    atomic_write_bytes(path, token.encode() + b"\n", mode=0o600)
    return token


def token_matches(expected: str, authorization: str | None) -> bool:
    """Constant-time check of an ``Authorization: Bearer …`` header."""
    if not authorization or not authorization.startswith("Bearer "):
        return False
    return hmac.compare_digest(authorization[len("Bearer ") :].strip().encode(), expected.encode())
