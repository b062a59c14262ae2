"""Readiness of a server that says "loading" (llama-server's ``/health`` answers 503 while
its model loads): waited out and reported as progress, never mistaken for a stall.

The server is a FAKE: a few lines of stdlib HTTP that answer 503 for a while, then 200.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from ltcai.engines.local_server import free_port, start_and_wait_ready

SLOW_LOADER = textwrap.dedent(
    """
    import sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer
    ready_at = time.monotonic() + float(sys.argv[2])
    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            loading = time.monotonic() < ready_at
            body = b'{"error":{"message":"Loading model"}}' if loading else b'{"status":"ok"}'
            self.send_response(503 if loading else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
    """
)


@pytest.mark.asyncio
async def test_a_server_that_is_loading_is_waited_for_and_reported(engine_harness: Callable[..., Any]) -> None:
    port = free_port()
    async with engine_harness() as h:
        process = await start_and_wait_ready(
            h.ctx(),
            "fake-llama-server",
            [sys.executable, "-c", SLOW_LOADER, str(port), "2.5"],
            f"http://127.0.0.1:{port}/health",
            what="llama-server",
            loading_status=503,
        )
        assert process.running
        await process.stop()
    loading = [m for m in h.progress.messages if m == "llama-server is loading the model"]
    # Reported while it loaded (about once a second over 2.5 s), not on every 10 ms poll.
    assert 2 <= len(loading) <= 4, h.progress.messages
