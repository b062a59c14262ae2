"""The control API's HTTP server: uvicorn on sockets we bound, with the peer-uid check.

uvicorn is driven from our task group (``Server.serve(sockets=…)``), never runs its own
loop or signal handlers: shutdown is ours to order (stop accepting, let streams finish
within the grace period, then stop engines).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Generator
from typing import Any

import anyio
import structlog
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .control_socket import peer_uid

__all__ = ["ControlServer"]

log = structlog.get_logger(__name__)

_FORBIDDEN_BODY = (
    b'{"error":{"code":"forbidden","message":"this daemon serves only its own user",'
    b'"hint":"connect as the user who started the daemon, or start your own"}}'
)
_FORBIDDEN = (
    b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\nconnection: close\r\n"
    + f"content-length: {len(_FORBIDDEN_BODY)}\r\n\r\n".encode()
    + _FORBIDDEN_BODY
)


_REFUSE_WAIT_S = 5.0
_MAX_REFUSED_HEAD = 8192


class PeerCheckedProtocol(HttpToolsProtocol):
    """Refuses a Unix-socket peer whose uid is not the daemon's (SO_PEERCRED); TCP without Nagle.

    The refusal is sent once the peer's request head has arrived, not at connect: a
    socket closed with the request still unread makes the peer's read fail with
    ECONNRESET, and it would never see the 403 that says why.
    """

    _refused: Any = None  # the transport of a refused peer, until it is answered
    _refusing = False  # this connection never reaches uvicorn's HTTP handling

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and a
            # socket from socket.create_server has proto 0: without this, the second
            # request on a keep-alive connection waits ~40 ms for a delayed ACK (Nagle).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if sock is not None and sock.family == socket.AF_UNIX:
            uid = peer_uid(sock)
            if uid is not None and uid != os.getuid():
                log.warning("refused a connection from another user", peer_uid=uid)
                self._refusing, self._refused = True, transport
                self._refused_head = b""
                # A peer that never sends a request is hung up on all the same.
                asyncio.get_running_loop().call_later(_REFUSE_WAIT_S, self._answer_refused)
                return
        super().connection_made(transport)
        # uvicorn times a connection out only once a response is done (keep-alive); one that
        # never sends a request would hold its socket forever. Idle from the start is idle:
        # the same timer, cancelled by uvicorn when the first bytes arrive.
        self.timeout_keep_alive_task = asyncio.get_running_loop().call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def data_received(self, data: bytes) -> None:
        if not self._refusing:
            super().data_received(data)
            return
        self._refused_head = (self._refused_head + data)[-_MAX_REFUSED_HEAD:]
        if b"\r\n\r\n" in self._refused_head:
            self._answer_refused()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._refusing:
            super().connection_lost(exc)
        self._refused = None

    def send_400_response(self, msg: str) -> None:
        """A request the HTTP parser refused (a bad header byte, a broken request line).

        uvicorn answers those itself in plain text; every error of this API is JSON.
        """
        body = json.dumps(
            {"error": {"code": "bad_http_request", "message": f"not a valid HTTP request: {msg}",
                       "hint": "send HTTP/1.1 with printable ASCII header names and values"}}
        ).encode()
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        self.transport.close()

    def _answer_refused(self) -> None:
        transport, self._refused = self._refused, None
        if transport is not None and not transport.is_closing():
            transport.write(_FORBIDDEN)
            transport.close()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The daemon's own signal task decides what a signal means.
        yield


class ControlServer:
    """One uvicorn server over already-bound sockets, stoppable with a grace period."""

    def __init__(
        self, app: Any, sockets: list[socket.socket], *, grace_s: float, keep_alive_s: float = 30.0
    ) -> None:
        config = uvicorn.Config(
            app,
            http=PeerCheckedProtocol,
            lifespan="off",
            ws="none",  # no WebSocket routes: and no websockets import at start-up
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=grace_s,
            timeout_keep_alive=keep_alive_s,  # also how long a connection may wait to send a request
            server_header=False,
        )
        self._server = _Server(config)
        self._sockets = sockets
        self.finished = anyio.Event()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``request_stop`` drained the open requests; ``finished`` is set then."""

        async def serve() -> None:
            try:
                await self._server.serve(sockets=self._sockets)
            finally:
                self.finished.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            # uvicorn has no "started" event to await; the sockets are already bound, so
            # this settles within a few loop iterations.
            while not self._server.started and not self.finished.is_set():
                await anyio.sleep(0.001)
            task_status.started()

    def request_stop(self) -> None:
        """Stop accepting; open requests get the grace period to finish."""
        self._server.should_exit = True
