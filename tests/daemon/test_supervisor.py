"""The daemon's Supervisor with real child processes: what it records and what it stops.

In-process (no ``ltcai serve``): a Supervisor runs in the test's task group as it does in
the daemon, and its children are small Python programs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from ltcai.daemon.store import StateStore
from ltcai.daemon.supervisor import Supervisor

# 70 kB without a newline (over asyncio's 64 KiB readline limit), then 1.3 MB of "\r"
# progress-bar lines (what a download or build progress bar writes).
FLOOD = (
    "import sys\n"
    "out = sys.stdout.buffer\n"
    "out.write(b'x' * 70_000)\n"
    "out.write((b'y' * 99 + b'\\r') * 13_000)\n"
)
FLOOD_BYTES = b"x" * 70_000 + (b"y" * 99 + b"\r") * 13_000


@pytest.mark.asyncio
async def test_an_engine_writing_a_line_over_64_kib_exits_and_its_log_holds_every_byte(tmp_path: Path) -> None:
    """Regression (issue 10, defect 1): the old pump read lines with asyncio's readline,
    which raised on the 70 kB line under a ``suppress(Exception)``; the pump stopped, the
    pipe filled, and the child blocked forever on its next write, leaving a 0-byte log.
    This test timed out on that code."""
    store = StateStore(tmp_path / "state")
    store.prepare()
    supervisor = Supervisor(store, tmp_path / "logs")
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        process = await supervisor.spawn("flood", [sys.executable, "-c", FLOOD])
        assert await store.read(Supervisor.RECORDS) == [
            {"pid": process.pid, "engine": "flood", "started_at": process.started_at, "pgid": process.pid,
             "argv": [sys.executable, "-c", FLOOD]}
        ]
        with anyio.fail_after(20):
            await process.exited.wait()
            while supervisor.processes:  # the watcher forgets it right after
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert process.returncode == 0 and not process.stopping
    assert process.log_path.read_bytes() == FLOOD_BYTES
    assert process.last_lines(1) == ["y" * 99]
    assert await store.read(Supervisor.RECORDS) == []
