"""The OpenAI-compatible API on loopback TCP, behind the bearer token.

Only the ``/v1`` routes are served on TCP: job control stays on the Unix socket, where
the peer's uid is known. Binding a non-loopback address needs an explicit opt-in.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import Any

import structlog
from starlette.applications import Starlette

from ..config.token import token_matches
from ..errors import InvalidRequest
from .api import error_body, exception_handlers
from .openai_api import openai_routes
from .services import Services

__all__ = ["bind_tcp", "build_tcp_app", "parse_bind"]

log = structlog.get_logger(__name__)


def parse_bind(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise InvalidRequest(f"--http wants HOST:PORT, e.g. 127.0.0.1:8080, not {value!r}", code="invalid_config")
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_tcp(value: str, *, allow_remote: bool) -> socket.socket:
    host, port = parse_bind(value)
    if not _is_loopback(host):
        if not allow_remote:
            raise InvalidRequest(
                f"{host} is not a loopback address: the API would be reachable from other machines",
                hint="pass --allow-remote to do it anyway (the bearer token still guards it)",
                code="remote_bind_refused",
            )
        log.warning("serving the API on a non-loopback address", address=value)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=128)
    sock.setblocking(False)
    return sock


class _BearerAuth:
    """Pure ASGI: a missing or wrong token gets an OpenAI-shaped 401 before routing."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            authorization = headers.get(b"authorization", b"").decode("latin-1") or None
            if not token_matches(self.token, authorization):
                body = json.dumps(
                    error_body("invalid_api_key", "missing or wrong bearer token", "`ltcai token` prints it", 401)
                ).encode()
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def build_tcp_app(services: Services, token: str) -> Any:
    app = Starlette(routes=openai_routes(services), exception_handlers=exception_handlers())
    return _BearerAuth(app, token)
