"""A minimal HTTP/1.1 client on asyncio streams, for load generation and chunk timing.

Why not httpx here: on a 2-core box the load generator competes with the servers it
measures, and httpx spends ~10x more CPU per request than this. Both paths of every
comparison (through ltcai, direct) use the same client, so its cost cancels out of the
ratios, and a cheap client keeps it from masking the servers' own cost.

One ``RawConnection`` is one keep-alive connection (TCP or Unix socket). ``request``
returns the whole body; ``stream_events`` returns Server-Sent Events (or NDJSON lines)
with the ``perf_counter_ns`` at which each arrived. Handles Content-Length and chunked
bodies, which is all uvicorn (ltcai, llama_cpp.server) and the fake upstream send.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RawConnection", "RawResponse", "StreamedResponse", "content_of_event"]


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class StreamedResponse:
    status: int
    start_ns: int  # when the request was written
    headers_ns: int  # when the response head arrived
    events: list[tuple[int, bytes]] = field(default_factory=list)  # (arrival ns, event payload)
    end_ns: int = 0


def content_of_event(payload: bytes) -> str | None:
    """The ``delta.content`` of an OpenAI chat chunk event (``data: {...}``), else None."""
    if not payload.startswith(b"data:"):
        return None
    data = payload[5:].strip()
    if data == b"[DONE]":
        return None
    event = json.loads(data)
    for choice in event.get("choices") or ():
        content = (choice.get("delta") or {}).get("content")
        if content:
            return content
    return None


class RawConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host

    @classmethod
    async def open(cls, *, uds: str | None = None, host: str = "127.0.0.1", port: int | None = None) -> RawConnection:
        if uds is not None:
            reader, writer = await asyncio.open_unix_connection(uds, limit=1 << 20)
            return cls(reader, writer, "ltcai")
        assert port is not None
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer, f"{host}:{port}")

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str] | None) -> None:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}"]
        if body is not None:
            lines.append("Content-Type: application/json")
            lines.append(f"Content-Length: {len(body)}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.writer.write(head + body if body else head)

    async def _head(self) -> tuple[int, dict[str, str]]:
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = raw[:-4].decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    async def _chunks(self, headers: dict[str, str]):  # type: ignore[no-untyped-def]
        """The body's pieces as they arrive (one per HTTP chunk, or the whole body)."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            reader = self.reader
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                        pass
                    return
                data = await reader.readexactly(size + 2)
                yield data[:-2]
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length:
                yield await self.reader.readexactly(length)
        else:  # read to close
            data = await self.reader.read()
            if data:
                yield data

    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> RawResponse:
        self._send(method, path, body, headers)
        status, response_headers = await self._head()
        parts = [piece async for piece in self._chunks(response_headers)]
        return RawResponse(status, response_headers, b"".join(parts))

    async def stream_events(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        separator: bytes = b"\n\n",
    ) -> StreamedResponse:
        """Events split on ``separator`` (SSE: blank line; NDJSON: ``b"\\n"``), timestamped."""
        now = time.perf_counter_ns
        start = now()
        self._send(method, path, body, headers)
        status, response_headers = await self._head()
        result = StreamedResponse(status, start, now())
        buffer = b""
        async for piece in self._chunks(response_headers):
            arrived = now()
            buffer += piece
            while True:
                cut = buffer.find(separator)
                if cut < 0:
                    break
                event, buffer = buffer[:cut], buffer[cut + len(separator) :]
                event = event.strip()
                if event:
                    result.events.append((arrived, event))
        if buffer.strip():
            result.events.append((now(), buffer.strip()))
        result.end_ns = now()
        return result
