"""The CLI's side of the control API: httpx over the daemon's Unix socket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from ..errors import DaemonNotRunning, LtcaiError

__all__ = ["DaemonClient", "RemoteError"]


class RemoteError(LtcaiError):
    """An error the daemon answered with, carried to the user as it was said."""

    def __init__(self, status: int, code: str, message: str, hint: str | None) -> None:
        super().__init__(message, hint=hint, code=code)
        self.status = status


def _not_running(socket_path: Path) -> DaemonNotRunning:
    return DaemonNotRunning(
        f"the ltcai daemon is not running (no answer on {socket_path})",
        hint="start it with `ltcai serve` (foreground) or `ltcai service install` (background, at login)",
    )


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        code, message, hint = error.get("code", "error"), error["message"], error.get("hint")
    except (ValueError, KeyError, TypeError, AttributeError):
        code, message, hint = "http_error", f"daemon answered HTTP {response.status_code}", None
    raise RemoteError(response.status_code, code, message, hint)


class DaemonClient:
    def __init__(self, socket_path: Path, *, timeout: float | None = 30.0) -> None:
        self.socket_path = socket_path
        transport = httpx.HTTPTransport(uds=str(socket_path))
        # The host is a placeholder: the transport always dials the socket.
        self._http = httpx.Client(transport=transport, base_url="http://ltcai", timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except (httpx.ConnectError, FileNotFoundError) as exc:
            raise _not_running(self.socket_path) from exc
        except httpx.TransportError as exc:
            raise DaemonNotRunning(f"lost the connection to the daemon: {exc}") from exc
        _raise_for(response)
        return response.json()

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, body or {})

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def stream(self, method: str, path: str, body: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """NDJSON events as they arrive; an ``error`` event raises."""
        try:
            with self._http.stream(method, path, json=body, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response)
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "error":
                        error = event["error"]
                        raise RemoteError(500, error.get("code", "error"), error["message"], error.get("hint"))
                    yield event
        except (httpx.ConnectError, FileNotFoundError) as exc:
            raise _not_running(self.socket_path) from exc
        except httpx.TransportError as exc:
            raise DaemonNotRunning(f"lost the connection to the daemon: {exc}") from exc
