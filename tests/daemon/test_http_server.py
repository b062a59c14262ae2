"""The control server's connection protocol, on real sockets in a real asyncio server."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvicorn
from uvicorn.server import ServerState

from ltcai.daemon.http_server import PeerCheckedProtocol


async def _app(scope, receive, send):  # type: ignore[no-untyped-def]
    raise AssertionError("no request is sent in these tests")


@pytest.mark.asyncio
async def test_tcp_connections_disable_nagle_on_a_listener_from_create_server() -> None:
    """``socket.create_server`` (what ``ltcai serve --http`` binds) makes proto-0 sockets,
    on which asyncio never sets TCP_NODELAY; a keep-alive client then waited ~40 ms per
    request for a delayed ACK (seen in bench/bench_proxy.py: 47 ms added per request)."""
    config = uvicorn.Config(_app, lifespan="off", log_config=None)
    config.load()
    protocols: list[PeerCheckedProtocol] = []

    def factory() -> PeerCheckedProtocol:
        protocol = PeerCheckedProtocol(config, ServerState(), {})
        protocols.append(protocol)
        return protocol

    listener = socket.create_server(("127.0.0.1", 0))
    assert listener.proto == 0  # the premise: asyncio's own nodelay logic skips it
    server = await asyncio.get_running_loop().create_server(factory, sock=listener)
    try:
        _reader, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        for _ in range(100):
            if protocols and getattr(protocols[0], "transport", None) is not None:
                break
            await asyncio.sleep(0.01)
        accepted = protocols[0].transport.get_extra_info("socket")
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
