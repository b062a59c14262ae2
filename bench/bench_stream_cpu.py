"""The daemon's CPU per streamed token: what ltcai takes from the engine's cores.

On a machine with few cores the daemon shares them with the engine, whose threads wait
for each other at every layer: each µs the daemon spends per token is a µs an engine
thread may lose. Wall-clock figures on such a machine swing with whatever else runs;
CPU seconds per token, read from ``/proc/<pid>/stat``, barely move.

The upstream is ``_fast_upstream.py`` pacing its events ``GAP_MS`` apart (one event per
read, as an engine's tokens arrive), served by ltcai as ``openai:fast``; one client
streams ``REQUESTS`` answers of ``CHUNKS`` events. Two daemons, the same run: uvloop (the
default) and asyncio's own loop (``LTCAI_EVENT_LOOP=asyncio``). The direct line is the
upstream's own CPU for the same stream, the floor of any proxy in Python.
"""

from __future__ import annotations

import asyncio
import json
import os

from _common import BenchEnv, Daemon, Section, fmt, log
from _paired import Endpoint, _stream
from bench_proxy import LTCAI_MODEL, MODEL, start_upstream

TITLE = "9. Daemon CPU per streamed token (paced loopback upstream)"
CHUNKS = 64
GAP_MS = 2.0
REQUESTS = 40


def _cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _body(model: str) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": CHUNKS, "stream": True}).encode()


async def _streams(endpoint: Endpoint, body: bytes, n: int) -> int:
    events = 0
    for _ in range(n):
        conn = await endpoint.connect()
        try:
            events += (await _stream(conn, endpoint, body)).content_events
        finally:
            await conn.close()
    return events


def _per_token_us(pid: int, endpoint: Endpoint, body: bytes, n: int) -> float:
    asyncio.run(_streams(endpoint, body, 3))  # warm-up: connections, imports, caches
    before = _cpu_s(pid)
    events = asyncio.run(_streams(endpoint, body, n))
    return (_cpu_s(pid) - before) / events * 1e6


def run(env: BenchEnv) -> Section:
    section = Section(TITLE)
    upstream, port = start_upstream("--gap-ms", str(GAP_MS))
    config = f'[engines.openai]\nbase_url = "http://127.0.0.1:{port}/v1"\n'
    daemons = {
        "uvloop": Daemon(name="cu", config=config),
        "asyncio": Daemon(name="ca", config=config, extra_env={"LTCAI_EVENT_LOOP": "asyncio"}),
    }
    n = REQUESTS // 4 if env.quick else REQUESTS
    results: dict[str, list[float]] = {"direct": [], "uvloop": [], "asyncio": []}
    try:
        for daemon in daemons.values():
            daemon.start()
            daemon.prepare(LTCAI_MODEL)
        direct = Endpoint("direct", port=port)
        for round_ in range(3):  # interleaved: drift hits each alike; the lowest of each is kept
            log(f"stream cpu: round {round_ + 1}")
            results["direct"].append(_per_token_us(upstream.pid, direct, _body(MODEL), n))
            for loop, daemon in daemons.items():
                endpoint = Endpoint(loop, port=daemon.port, headers={"Authorization": f"Bearer {daemon.token}"})
                results[loop].append(_per_token_us(daemon.pid, endpoint, _body(LTCAI_MODEL), n))
    finally:
        for daemon in daemons.values():
            daemon.cleanup()
        upstream.kill()
        upstream.wait()
    best = {k: min(v) for k, v in results.items()}
    section.add(
        f"One client, {n} streams of {CHUNKS} events paced {GAP_MS:g} ms apart, 3 interleaved rounds; CPU µs"
        " (user + system) of each process per content event, lowest round (all rounds in brackets).",
        "",
        "| process | CPU µs per token | vs upstream |",
        "|---|---|---|",
        *(
            f"| {label} | {fmt(best[key], 0)} ({', '.join(fmt(v, 0) for v in results[key])}) | {best[key] / best['direct']:.1f}× |"
            for key, label in (("direct", "the upstream itself (direct floor)"), ("uvloop", "ltcai daemon, uvloop (default)"),
                               ("asyncio", "ltcai daemon, asyncio loop"))
        ),
        "",
        f"uvloop ÷ asyncio: **{best['uvloop'] / best['asyncio']:.2f}×** the daemon's CPU per token.",
    )
    return section
