"""A deliberately cheap OpenAI-compatible upstream, so that ltcai, not the engine, is measured.

    python bench/_fast_upstream.py --model fast [--chunks 64] [--file PATH]

Prints ``LISTENING <port>`` once bound on a free loopback port. One asyncio loop, no
framework: a request costs it a few tens of µs, far below what a real engine or ltcai
spends, so throughput through ltcai against throughput straight to this server is the
proxy's own cost.

Routes: ``GET /v1/models``; ``POST /v1/chat/completions`` (``stream`` or not: a short
answer that the smoke classifier calls ok, or ``--chunks`` content events then a finish
event and ``[DONE]``); ``GET /file`` (``--file`` with ``Range`` support, sent with
sendfile, for the download benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

ANSWER = "2 + 2 = 4."


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fast")
    parser.add_argument("--chunks", type=int, default=64, help="content events in a streamed answer")
    parser.add_argument("--file", help="served at GET /file, with Range support")
    parser.add_argument("--gap-ms", type=float, default=0.0, help="pause between streamed events, as an engine's token time")
    return parser.parse_args()


def _head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _json(status: str, body: object) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    return _head(status, {"content-type": "application/json", "content-length": str(len(data))}) + data


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class Upstream:
    def __init__(self, options: argparse.Namespace) -> None:
        self.model = options.model
        self.chunks = options.chunks
        self.gap_s = options.gap_ms / 1000
        self.file = options.file
        self.models = _json("200 OK", {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "bench"}]})
        events = []
        for i in range(self.chunks):
            text = ANSWER if i == 0 else f" t{i}"
            events.append(self._event({"content": text}, None))
        events.append(self._event({}, "stop"))
        events.append(b"data: [DONE]\n\n")
        self.stream_events = [_chunked(e) for e in events]

    def _event(self, delta: dict[str, str], finish: str | None) -> bytes:
        chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    def completion(self) -> bytes:
        return _json(
            "200 OK",
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 8, "completion_tokens": 8, "total_tokens": 16},
            },
        )

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = raw[:-4].decode("latin-1").split("\r\n")
                method, path, _version = request_line.split(" ", 2)
                headers = {}
                for line in header_lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                if method == "GET" and path == "/v1/models":
                    writer.write(self.models)
                elif method == "POST" and path == "/v1/chat/completions":
                    if json.loads(body or b"{}").get("stream"):
                        await self._stream(writer)
                    else:
                        writer.write(self.completion())
                elif method == "GET" and path == "/file" and self.file:
                    await self._send_file(writer, headers.get("range"))
                else:
                    writer.write(_json("404 Not Found", {"error": {"message": f"no route {method} {path}"}}))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        writer.write(_head("200 OK", {"content-type": "text/event-stream", "transfer-encoding": "chunked"}))
        for event in self.stream_events:
            writer.write(event)
            await writer.drain()  # one event per write, as an engine emits tokens
            if self.gap_s:
                await asyncio.sleep(self.gap_s)
        writer.write(b"0\r\n\r\n")

    async def _send_file(self, writer: asyncio.StreamWriter, range_header: str | None) -> None:
        assert self.file is not None
        size = os.path.getsize(self.file)
        start = 0
        if range_header and range_header.startswith("bytes="):
            start = int(range_header[6:].split("-", 1)[0] or 0)
        status = "206 Partial Content" if start else "200 OK"
        headers = {"content-type": "application/octet-stream", "content-length": str(size - start), "accept-ranges": "bytes"}
        if start:
            headers["content-range"] = f"bytes {start}-{size - 1}/{size}"
        writer.write(_head(status, headers))
        await writer.drain()
        with open(self.file, "rb") as fh:
            await asyncio.get_running_loop().sendfile(writer.transport, fh, start, size - start)


async def main() -> None:
    upstream = Upstream(_parse())
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0, limit=1 << 20)
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
