"""Control-API latency under 100 concurrent clients (issue 3 item 8).

100 clients, each an ``RawConnection`` with its own Unix-socket connection, all in
one asyncio loop in this process:

- ``GET /status``, closed loop: every client sends its next request as soon as the last
  answered (the daemon always has ~100 requests queued: the worst case);
- ``GET /status``, paced: each client sends one request every 200 ms with random phase
  (~500 requests/s offered), closer to many idle CLIs and editors polling;
- prepare-join: ``POST /prepare`` of the already-READY ``smollm2``, read to the report
  line (the daemon replays the finished job's events to each joiner).

The same with one client gives the unloaded floor that the ratios use. The load
generator shares the machine's cores with the daemon, which inflates every figure.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

from _common import (
    SMOLLM2_ALIAS,
    BenchEnv,
    Dist,
    Section,
    Target,
    dist_header,
    dist_row,
    fmt,
    log,
    ns_to_ms,
)
from _rawhttp import RawConnection

TITLE = "2. Control API under 100 concurrent clients (Unix socket)"
CLIENTS = 100


_JOIN_BODY = json.dumps({"model": SMOLLM2_ALIAS}).encode()


async def _client(socket: str) -> RawConnection:
    # The cheap raw client, not httpx: 100 httpx clients would eat the CPU the daemon
    # being measured needs on 2 cores (httpx costs ~10x more per request).
    return await RawConnection.open(uds=socket)


async def _status_once(client: RawConnection) -> int:
    started = time.perf_counter_ns()
    response = await client.request("GET", "/status")
    if response.status != 200:
        raise RuntimeError(f"GET /status: HTTP {response.status}")
    return time.perf_counter_ns() - started


async def _prepare_join(client: RawConnection) -> int:
    started = time.perf_counter_ns()
    response = await client.stream_events("POST", "/prepare", _JOIN_BODY, separator=b"\n")
    if response.status != 200 or json.loads(response.events[-1][1]).get("type") != "report":
        raise RuntimeError(f"prepare-join: HTTP {response.status}, no report at the end")
    return response.events[-1][0] - started


async def _closed_loop(clients: list[RawConnection], per_client: int, op) -> tuple[list[int], float]:  # type: ignore[no-untyped-def]
    samples: list[int] = []

    async def worker(client: RawConnection) -> None:
        for _ in range(per_client):
            samples.append(await op(client))

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    return samples, time.perf_counter() - started


async def _paced(clients: list[RawConnection], per_client: int, interval_s: float) -> tuple[list[int], float]:
    samples: list[int] = []

    async def worker(client: RawConnection) -> None:
        await asyncio.sleep(random.random() * interval_s)
        next_at = time.perf_counter()
        for _ in range(per_client):
            samples.append(await _status_once(client))
            next_at += interval_s
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    return samples, time.perf_counter() - started


async def _measure(socket: str, quick: bool) -> dict[str, tuple[Dist, float]]:
    rounds = 20 if quick else 100
    join_rounds = 3 if quick else 10
    out: dict[str, tuple[Dist, float]] = {}
    single = await _client(socket)
    try:
        for _ in range(50):
            await _status_once(single)
        samples, took = await _closed_loop([single], 300 if not quick else 100, _status_once)
        out["status_1"] = (Dist.of(ns_to_ms(samples)), len(samples) / took)
        for _ in range(3):
            await _prepare_join(single)
        samples, took = await _closed_loop([single], join_rounds * 5, _prepare_join)
        out["join_1"] = (Dist.of(ns_to_ms(samples)), len(samples) / took)
    finally:
        await single.close()

    clients = [await _client(socket) for _ in range(CLIENTS)]
    try:
        await asyncio.gather(*(_status_once(c) for c in clients))  # connect all, warm up
        samples, took = await _closed_loop(clients, rounds, _status_once)
        out["status_100"] = (Dist.of(ns_to_ms(samples)), len(samples) / took)
        samples, took = await _paced(clients, rounds // 2, 0.2)
        out["status_100_paced"] = (Dist.of(ns_to_ms(samples)), len(samples) / took)
        await asyncio.gather(*(_prepare_join(c) for c in clients))
        samples, took = await _closed_loop(clients, join_rounds, _prepare_join)
        out["join_100"] = (Dist.of(ns_to_ms(samples)), len(samples) / took)
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    return out


def run(env: BenchEnv) -> Section:
    section = Section(TITLE)
    daemon = env.smollm2_ready()
    events = len(daemon.get(f"/jobs/{daemon.get('/models')['models'][0]['job_id']}")["events"])
    log("control: status and prepare-join under 100 clients")
    out = asyncio.run(_measure(daemon.socket, env.quick))
    s1, s100, paced = out["status_1"], out["status_100"], out["status_100_paced"]
    j1, j100 = out["join_1"], out["join_100"]
    section.add(
        f"{CLIENTS} clients, each its own keep-alive Unix-socket connection (bench/_rawhttp.py), one asyncio loop. "
        "Ratios are against 1 client on the same daemon in the same run (the unloaded floor; "
        "there is no \"direct\" path for the control API).",
        "",
        dist_header("ms", with_ratio=True).replace("vs direct", "vs 1 client"),
        dist_row("GET /status, 1 client", s1[0], 2, s1[0]),
        dist_row(f"GET /status, {CLIENTS} clients, closed loop", s100[0], 2, s1[0]),
        dist_row(f"GET /status, {CLIENTS} clients, paced 5/s each", paced[0], 2, s1[0]),
        dist_row("POST /prepare (READY model) → report, 1 client", j1[0], 2, j1[0]),
        dist_row(f"POST /prepare (READY model) → report, {CLIENTS} clients", j100[0], 2, j1[0]),
        "",
        "| throughput | requests/s |",
        "|---|---|",
        f"| GET /status, 1 client | {fmt(s1[1], 0)} |",
        f"| GET /status, {CLIENTS} clients closed loop | {fmt(s100[1], 0)} |",
        f"| GET /status, {CLIENTS} clients paced (offered ≈ {CLIENTS * 5}/s) | {fmt(paced[1], 0)} |",
        f"| prepare-join, {CLIENTS} clients | {fmt(j100[1], 0)} |",
        "",
        f"A prepare-join replays the finished job's {events} events, then the report.",
        f"Closed loop, {CLIENTS} requests are always queued: p50 ≈ queue length × per-request cost "
        f"({fmt(1000 / s100[1], 2)} ms at the measured rate), so the p99 target can only be met paced.",
    )
    section.targets += [
        Target(f"GET /status p99, {CLIENTS} clients paced", paced[0].p99, 5, "ms"),
        Target(f"GET /status p99, {CLIENTS} clients closed loop", s100[0].p99, 5, "ms", "saturation"),
    ]
    return section
