"""The client APIs on loopback TCP, behind the bearer token: OpenAI's ``/v1`` and Ollama's ``/api``,
and ``/metrics`` for a Prometheus scraper.

Job control stays on the Unix socket, where the peer's uid is known. Binding a
non-loopback address needs an explicit opt-in; so does serving ``/api`` to Ollama
clients that cannot send the token (``ollama_without_token``, loopback only, see
:mod:`.tcp_access`).
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
from .http_errors import error_body, exception_handlers, ollama_error_body
from .metrics import metrics_route
from .ollama_api import ollama_app
from .openai_api import openai_routes
from .services import Services
from .tcp_access import OPEN_PREFIX, ollama_open

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
    """Pure ASGI: a missing or wrong token gets a 401 before routing, in the shape of the
    client's API (OpenAI's error object, or Ollama's ``{"error": …}`` on ``/api``)."""

    def __init__(self, app: Any, token: str, *, ollama_open: bool = False) -> None:
        self.app = app
        self.token = token
        self.ollama_open = ollama_open

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            authorization = headers.get(b"authorization", b"").decode("latin-1") or None
            ollama = scope.get("path", "").startswith(OPEN_PREFIX)
            if not (ollama and self.ollama_open) and not token_matches(self.token, authorization):
                message, hint = "missing or wrong bearer token", "`ltcai token` prints it"
                error = (
                    ollama_error_body("invalid_api_key", message, hint) if ollama
                    else error_body("invalid_api_key", message, hint, 401)
                )
                body = json.dumps(error).encode()
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def build_tcp_app(services: Services, token: str) -> Any:
    settings = services.settings
    host = parse_bind(settings.http)[0] if settings.http else "127.0.0.1"
    open_api = ollama_open(settings, loopback=_is_loopback(host))
    if open_api:
        log.warning("Ollama's /api answers on TCP without the token", address=settings.http)
    routes = [*openai_routes(services), ollama_app(services), metrics_route(services)]
    app = Starlette(routes=routes, exception_handlers=exception_handlers())
    return _BearerAuth(app, token, ollama_open=open_api)
