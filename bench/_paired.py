"""Paired measurements: the same chat request straight to an upstream and through ltcai.

Each client owns one keep-alive connection to each path and alternates between them
(direct, ltcai, direct, …), so slow drift of the machine (another process, thermal,
the engine's cache) hits both sides alike; the per-pair difference is the added cost.
The clients run concurrently in one asyncio loop with the cheap raw HTTP client of
``_rawhttp`` on both sides, so its cost cancels out of the differences.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from _common import Dist
from _rawhttp import RawConnection, content_of_event

__all__ = ["Endpoint", "PairedResult", "StreamSample", "paired", "throughput"]

_IDLE_REOPEN_S = 4.0


@dataclass(frozen=True)
class Endpoint:
    """Where a chat request goes: a TCP port or a Unix socket, with its headers."""

    label: str
    path: str = "/v1/chat/completions"
    port: int | None = None
    uds: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    async def connect(self) -> RawConnection:
        return await RawConnection.open(uds=self.uds, port=self.port)


@dataclass
class StreamSample:
    total_ns: int
    ttft_ns: int  # request written → first event with content
    gaps_ns: list[int]  # between consecutive content events
    content_events: int
    text: str
    pieces: list[str] = field(default_factory=list)  # each content event's text, in order
    usage: dict[str, Any] | None = None  # the stream's usage event (stream_options.include_usage)


@dataclass
class PairedResult:
    direct: list[int] = field(default_factory=list)  # ns per request (non-streaming) or TTFT (streaming)
    ltcai: list[int] = field(default_factory=list)
    diffs: list[int] = field(default_factory=list)  # ltcai − direct, per pair
    direct_streams: list[StreamSample] = field(default_factory=list)
    ltcai_streams: list[StreamSample] = field(default_factory=list)
    elapsed_s: float = 0.0

    def ms(self, which: str) -> Dist:
        return Dist.of(v / 1e6 for v in getattr(self, which))

    def gaps_ms(self, which: str) -> Dist:
        streams = self.direct_streams if which == "direct" else self.ltcai_streams
        return Dist.of(g / 1e6 for s in streams for g in s.gaps_ns)


async def _once(conn: RawConnection, endpoint: Endpoint, body: bytes) -> int:
    started = time.perf_counter_ns()
    response = await conn.request("POST", endpoint.path, body, endpoint.headers)
    took = time.perf_counter_ns() - started
    if response.status != 200:
        raise RuntimeError(f"{endpoint.label}: HTTP {response.status}: {response.body[:300]!r}")
    return took


async def _stream(conn: RawConnection, endpoint: Endpoint, body: bytes) -> StreamSample:
    try:
        response = await conn.stream_events("POST", endpoint.path, body, endpoint.headers)
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise RuntimeError(f"{endpoint.label}: the stream was cut off ({type(exc).__name__})") from exc
    if response.status != 200:
        raise RuntimeError(f"{endpoint.label}: HTTP {response.status}")
    arrivals, pieces, usage = [], [], None
    for arrived, payload in response.events:
        if payload.startswith(b"data:") and b'"error"' in payload[:40]:
            raise RuntimeError(f"{endpoint.label}: error event {payload[:300]!r}")
        if b'"usage":{' in payload or b'"usage": {' in payload:
            usage = json.loads(payload[5:]).get("usage") or usage
        content = content_of_event(payload)
        if content:
            arrivals.append(arrived)
            pieces.append(content)
    if not arrivals:
        raise RuntimeError(f"{endpoint.label}: a stream with no content")
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    return StreamSample(
        response.end_ns - response.start_ns, arrivals[0] - response.start_ns, gaps, len(arrivals), "".join(pieces), pieces,
        usage,
    )


async def paired(
    direct: Endpoint,
    ltcai: Endpoint,
    request: dict[str, Any],
    *,
    pairs_per_client: int,
    clients: int = 1,
    stream: bool = False,
    warmup: int = 2,
    ltcai_model: str | None = None,
) -> PairedResult:
    """``pairs_per_client`` alternating requests per client, ``clients`` at once.

    ``ltcai_model``: the id to ask ltcai for when it differs from the engine's own
    (an alias such as ``smollm2``); everything else in the two bodies is the same.
    """
    bodies = (
        json.dumps({**request, "stream": stream}).encode(),
        json.dumps({**request, "stream": stream, "model": ltcai_model or request["model"]}).encode(),
    )
    result = PairedResult()

    async def client(index: int) -> None:
        conns = [await direct.connect(), await ltcai.connect()]
        last_used = [time.monotonic()] * 2
        try:
            for i in range(warmup + pairs_per_client):
                # Alternate which side goes first, so neither always gets the warmer cache.
                order = (0, 1) if (i + index) % 2 == 0 else (1, 0)
                sample: list[Any] = [None, None]
                for side in order:
                    endpoint = (direct, ltcai)[side]
                    if time.monotonic() - last_used[side] > _IDLE_REOPEN_S:
                        # uvicorn closes a keep-alive connection idle for 5 s (llama_cpp.server
                        # keeps that default); a real client would reconnect, so do we, untimed.
                        await conns[side].close()
                        conns[side] = await endpoint.connect()
                    if stream:
                        sample[side] = await _stream(conns[side], endpoint, bodies[side])
                    else:
                        sample[side] = await _once(conns[side], endpoint, bodies[side])
                    last_used[side] = time.monotonic()
                if i < warmup:
                    continue
                if stream:
                    d, lt = sample
                    result.direct_streams.append(d)
                    result.ltcai_streams.append(lt)
                    result.direct.append(d.ttft_ns)
                    result.ltcai.append(lt.ttft_ns)
                    result.diffs.append(lt.ttft_ns - d.ttft_ns)
                else:
                    result.direct.append(sample[0])
                    result.ltcai.append(sample[1])
                    result.diffs.append(sample[1] - sample[0])
        finally:
            await asyncio.gather(*(c.close() for c in conns))

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    result.elapsed_s = time.perf_counter() - started
    return result


async def throughput(
    endpoint: Endpoint, request: dict[str, Any], *, clients: int, per_client: int, stream: bool = False
) -> tuple[float, float]:
    """Closed loop: (requests/s, content events/s) with ``clients`` connections busy."""
    body = json.dumps({**request, "stream": stream}).encode()
    events = 0

    async def client() -> None:
        nonlocal events
        conn = await endpoint.connect()
        try:
            for _ in range(per_client):
                if stream:
                    events += (await _stream(conn, endpoint, body)).content_events
                else:
                    await _once(conn, endpoint, body)
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    took = time.perf_counter() - started
    return clients * per_client / took, events / took
