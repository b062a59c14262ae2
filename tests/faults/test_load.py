"""Load: many clients at once on one real ``ltcai serve`` (FAKE engine plugin).

64 clients follow the same prepare, 200 status calls land together, 16 chat streams run
at once — nothing dropped, every stream complete — and the daemon's memory (VmRSS from
/proc) stays flat across 1,000 more requests.

Proven elsewhere: 50 concurrent prepares of 5 models make exactly 5 jobs with identical
stories (tests/daemon/test_daemon_jobs.py::test_fifty_concurrent_prepares_of_five_models_make_five_jobs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

STREAMED_ANSWER = "Two plus two makes four, and that is all there is to it."
RSS_GROWTH_LIMIT_KB = 20 * 1024


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _ndjson(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    events = []
    async with client.stream("POST", path, json=body, timeout=60) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.strip():
                events.append(json.loads(line))
    return events


@pytest.mark.asyncio
async def test_many_clients_at_once_nothing_dropped_and_memory_flat(start_daemon, async_client_for):
    daemon = start_daemon()
    pid = daemon.process.pid
    async with async_client_for(daemon.socket_path) as client:
        # 64 clients follow one prepare (slow download): one job, 64 identical stories.
        stories: list[list[dict[str, Any]]] = []

        async def follow_prepare() -> None:
            stories.append(await _ndjson(client, "/prepare", {"model": "fake-slow-download-load", "engine": "fake"}))

        async with anyio.create_task_group() as tg:
            for _ in range(64):
                tg.start_soon(follow_prepare)
        assert len(stories) == 64
        reports = [s[-1] for s in stories]
        assert all(r["type"] == "report" and r["report"]["state"] == "ready" for r in reports)
        assert len({r["job_id"] for r in reports}) == 1
        states = [[e["state"] for e in s if e["type"] == "state"] for s in stories]
        assert all(s == states[0] for s in states) and states[0][-1] == "ready"

        # 200 status calls at once.
        statuses: list[int] = []

        async def status() -> None:
            statuses.append((await client.get("/status")).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(status)
        assert statuses == [200] * 200

        # 16 chat streams at once, each ~13 chunks 0.1 s apart: every one whole.
        chatty = "fake-slow-stream-load"
        assert (await _ndjson(client, "/prepare", {"model": chatty, "engine": "fake"}))[-1]["report"]["state"] == "degraded"
        answers: list[str] = []

        async def chat_stream() -> None:
            deltas = await _ndjson(client, "/chat", {"model": chatty, "engine": "fake", "prompt": "hi", "stream": True})
            assert deltas[-1] == {"finish_reason": "stop"}, deltas[-3:]
            answers.append("".join(d.get("content", "") for d in deltas))

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(16):
                    tg.start_soon(chat_stream)
        assert answers == [STREAMED_ANSWER] * 16

        # Memory: warm up, then 1,000 requests (status, chats, job listings, bad ids).
        async def mixed(i: int) -> None:
            kind = i % 4
            if kind == 0:
                response = await client.post("/chat", json={"model": "fake-slow-download-load", "engine": "fake", "prompt": "hi"})
            elif kind == 1:
                response = await client.get("/jobs")
            elif kind == 2:
                response = await client.post("/prepare", json={"model": "../x", "engine": "fake"})
                assert response.status_code == 400
                return
            else:
                response = await client.get("/status")
            assert response.status_code == 200, response.text

        async def wave(start: int, count: int, width: int = 20) -> None:
            for base in range(start, start + count, width):
                async with anyio.create_task_group() as tg:
                    for i in range(base, min(base + width, start + count)):
                        tg.start_soon(mixed, i)

        await wave(0, 300)
        before = _rss_kb(pid)
        await wave(300, 1000)
        after = _rss_kb(pid)
        assert after - before < RSS_GROWTH_LIMIT_KB, f"RSS grew {after - before} KiB over 1,000 requests"
        assert (await client.get("/status")).json()["jobs_running"] == 0
