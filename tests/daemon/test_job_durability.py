"""What a follower has seen of a job is on disk (in-process daemon, FAKE engine).

A kill -9 may come the instant after a client saw a state or the report; the daemon that
restarts must then restore the job at least that far. Disk writes are slowed down here
(monkeypatch on the store's write), which made the race certain: before the fix the
runner published each state and only then saved it, so the record on disk lagged one
state behind what followers had already been told.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from ltcai.daemon.store import StateStore

_SLOW_WRITE_S = 0.3


@pytest.fixture
def slow_job_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    write = StateStore.write

    async def slow(self: StateStore, name: str, document: Any) -> None:
        if name.startswith("jobs/"):
            await anyio.sleep(_SLOW_WRITE_S)
        await write(self, name, document)

    monkeypatch.setattr(StateStore, "write", slow)


@pytest.mark.asyncio
async def test_every_state_and_the_report_a_follower_sees_are_already_on_disk(
    inprocess_daemon: Any, slow_job_writes: None, tag: str
) -> None:
    async with inprocess_daemon() as d:
        started = await d.client.post("/prepare", json={"model": f"fake-ok-{tag}", "engine": "fake", "stream": False})
        job_id = started.json()["job_id"]
        record = Path(d.settings.paths.state_dir) / "jobs" / f"{job_id}.json"
        seen = []
        with anyio.fail_after(60):
            async with d.client.stream("GET", f"/jobs/{job_id}/events") as response:
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    # Read at once, before anything else runs: what is on disk right now.
                    on_disk = json.loads(record.read_text())
                    if event["type"] == "state":
                        seen.append(event["state"])
                        assert on_disk["machine"]["state"] == event["state"], (event, on_disk["machine"]["state"])
                        assert event in on_disk["events"]
                    elif event["type"] == "report":
                        assert on_disk["machine"]["state"] == "ready"
                        assert event in on_disk["events"]
        assert seen[-1] == "ready" and len(seen) == 9
