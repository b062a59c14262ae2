"""``ltcai.runtime.process``: real child processes, real pipes, real log files; no daemon.

Each test spawns a small Python child with :func:`spawn_process`, runs its watcher in a
task group as the daemon's supervisor does, and looks at what came out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
import structlog

from ltcai.runtime import process as process_module
from ltcai.runtime.process import MAX_LINE_CHARS, LineSplitter, OnLine, ProcessHandle, spawn_process

# 70 kB without a newline (over asyncio's 64 KiB readline limit), then 1.3 MB of "\r"
# progress-bar lines: the output that hung an engine forever (issue 10, defect 1).
FLOOD = (
    "import sys\n"
    "out = sys.stdout.buffer\n"
    "out.write(b'x' * 70_000)\n"
    "out.write((b'y' * 99 + b'\\r') * 13_000)\n"
    "out.write(b'\\ndone\\n')\n"
)
FLOOD_BYTES = b"x" * 70_000 + (b"y" * 99 + b"\r") * 13_000 + b"\ndone\n"


@asynccontextmanager
async def watched(
    tmp_path: Path, code: str, *, on_line: OnLine | None = None, name: str = "child"
) -> AsyncIterator[ProcessHandle]:
    """A Python child running ``code``, watched for the block, stopped at its end."""
    async with anyio.create_task_group() as tg:
        handle = await spawn_process(name, [sys.executable, "-c", code], log_dir=tmp_path / "logs", on_line=on_line)
        tg.start_soon(handle.watch)
        try:
            yield handle
        finally:
            await handle.stop(grace_s=1.0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive: it holds nothing
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# ----------------------------------------------------------------- the line splitter


def test_the_splitter_ends_lines_at_newline_carriage_return_and_both() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"a\nb\rc\r\nd") == ["a", "b", "c"]
    assert splitter.finish() == ["d"]


def test_a_crlf_split_across_two_chunks_is_one_line_end() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"50%\r") == ["50%"]
    assert splitter.feed(b"\n60%\r") == ["60%"]
    assert splitter.feed(b"\r") == [""]  # a second "\r" is a (blank) line of its own
    assert splitter.finish() == []


def test_a_line_longer_than_the_cap_comes_out_in_capped_pieces() -> None:
    splitter = LineSplitter(max_chars=4)
    assert splitter.feed(b"abcdefghij") == ["abcd", "efgh"]  # "ij" waits for more
    assert splitter.feed(b"k\n" + b"z" * 9 + b"\n") == ["ijk", "zzzz", "zzzz", "z"]
    assert splitter.finish() == []


def test_a_utf8_character_split_across_chunks_is_decoded_whole() -> None:
    splitter = LineSplitter()
    encoded = "café ☕\n".encode()
    assert splitter.feed(encoded[:4]) == []
    assert splitter.feed(encoded[4:6]) == []
    assert splitter.feed(encoded[6:]) == ["café ☕"]


# ----------------------------------------------------------------- the output pump


@pytest.mark.asyncio
async def test_a_child_flooding_lines_over_64_kib_exits_and_its_log_holds_every_byte(tmp_path: Path) -> None:
    """Regression (defect 1): asyncio's readline died on the 70 kB line, the pump stopped
    silently, the pipe filled and the child blocked forever with a 0-byte log."""
    with anyio.fail_after(30):
        async with watched(tmp_path, FLOOD) as child:
            assert await child.wait() == 0
    assert child.log_path.read_bytes() == FLOOD_BYTES
    assert child.last_lines(2) == ["y" * 99, "done"]
    assert all(len(line) <= MAX_LINE_CHARS for line in child.last_lines(60))


@pytest.mark.asyncio
async def test_a_raising_line_callback_is_logged_and_the_pump_keeps_draining(tmp_path: Path) -> None:
    seen: list[str] = []

    def on_line(line: str) -> None:
        seen.append(line)
        raise RuntimeError("a bug in the caller's progress parser")

    with structlog.testing.capture_logs() as logs, anyio.fail_after(30):
        async with watched(tmp_path, FLOOD, on_line=on_line) as child:
            assert await child.wait() == 0
    assert child.log_path.read_bytes() == FLOOD_BYTES
    # Every line reached the callback although every call raised: the 70 kB line (it runs
    # on into the first progress bar) in capped pieces, 12 999 more progress lines, "done".
    assert [len(line) for line in seen[:9]] == [MAX_LINE_CHARS] * 8 + [70_099 - 8 * MAX_LINE_CHARS]
    assert seen[9:] == ["y" * 99] * 12_999 + ["done"]
    failures = [e for e in logs if e["event"].startswith("output line callback failed")]
    assert [e["log_level"] for e in failures] == ["error", "warning"]
    assert failures[0]["exc_info"] is True and failures[1]["times"] == len(seen)


@pytest.mark.asyncio
async def test_the_line_callback_gets_each_complete_line_in_order(tmp_path: Path) -> None:
    seen: list[str] = []
    code = "import sys\nfor i in range(1, 4): print(f'[{i}/3] step', flush=True)\nsys.stdout.write('tail')"
    with anyio.fail_after(30):
        async with watched(tmp_path, code, on_line=seen.append) as child:
            await child.wait()
    assert seen == ["[1/3] step", "[2/3] step", "[3/3] step", "tail"]


@pytest.mark.asyncio
async def test_an_error_inside_the_pump_costs_lines_not_the_pump(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_feed = LineSplitter.feed
    calls = 0

    def feed_failing_once(self: LineSplitter, data: bytes) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("an unexpected bug while splitting")
        return real_feed(self, data)

    monkeypatch.setattr(LineSplitter, "feed", feed_failing_once)
    with structlog.testing.capture_logs() as logs, anyio.fail_after(30):
        async with watched(tmp_path, FLOOD) as child:
            assert await child.wait() == 0
    assert child.log_path.read_bytes() == FLOOD_BYTES
    assert child.last_lines(1) == ["done"]
    assert [e["log_level"] for e in logs if e["event"] == "engine output lines lost"] == ["error"]


@pytest.mark.asyncio
async def test_the_log_is_written_off_the_event_loop_which_keeps_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow disk (each write takes 0.5 s) slows the log, never the event loop."""
    loop_thread = threading.get_ident()
    writer_threads: set[int] = set()
    real_write_all = process_module.append_all

    def slow_write_all(fd: int, data: bytes) -> None:
        writer_threads.add(threading.get_ident())
        time.sleep(0.5)
        real_write_all(fd, data)

    monkeypatch.setattr(process_module, "append_all", slow_write_all)
    longest_gap = 0.0

    async def tick(stop: anyio.Event) -> None:
        nonlocal longest_gap
        last = time.monotonic()
        while not stop.is_set():
            await anyio.sleep(0.005)
            now = time.monotonic()
            longest_gap = max(longest_gap, now - last)
            last = now

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            stop = anyio.Event()
            tg.start_soon(tick, stop)
            async with watched(tmp_path, FLOOD) as child:
                await child.wait()
            stop.set()
    assert child.log_path.read_bytes() == FLOOD_BYTES
    assert writer_threads and loop_thread not in writer_threads
    assert longest_gap < 0.3, f"the event loop stalled {longest_gap:.3f} s"


@pytest.mark.asyncio
async def test_a_log_that_cannot_be_written_is_reported_and_the_child_still_runs_to_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(fd: int, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(process_module, "append_all", disk_full)
    with structlog.testing.capture_logs() as logs, anyio.fail_after(30):
        async with watched(tmp_path, FLOOD) as child:
            assert await child.wait() == 0
    assert child.last_lines(1) == ["done"]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "engine log cannot be written; its output is kept in memory only"
    ]


# ----------------------------------------------------------------- exit and stop


@pytest.mark.asyncio
async def test_exit_is_noticed_after_the_last_output_is_in(tmp_path: Path) -> None:
    code = "import sys\nprint('error loading model: unknown architecture')\nsys.exit(3)"
    with anyio.fail_after(30):
        async with watched(tmp_path, code) as child:
            await child.exited.wait()
            assert not child.running and child.returncode == 3 and not child.stopping
            assert child.last_lines(5) == ["error loading model: unknown architecture"]


@pytest.mark.asyncio
async def test_what_an_exited_child_forked_into_its_group_does_not_outlive_it(tmp_path: Path) -> None:
    """The grandchild holds the pipe: the watcher must neither wait for it nor leave it."""
    code = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
    )
    with anyio.fail_after(10):
        async with watched(tmp_path, code) as child:
            assert await child.wait() == 0
    grandchild = int(child.last_lines(1)[0])
    with anyio.fail_after(5):
        while _alive(grandchild):
            await anyio.sleep(0.02)


@pytest.mark.asyncio
async def test_a_process_outside_the_group_holding_the_pipe_delays_the_exit_by_seconds_not_forever(
    tmp_path: Path,
) -> None:
    """A child that escaped the group (setsid) keeps the pipe open and silent: the watcher
    stops waiting once the output has stood still for 2 s."""
    code = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
    )
    try:
        with anyio.fail_after(10):
            async with watched(tmp_path, code) as child:
                started = time.monotonic()
                assert await child.wait() == 0
                assert time.monotonic() - started < 5
        assert child.log_path.read_bytes() == f"{child.last_lines(1)[0]}\n".encode()
    finally:
        os.kill(int(child.last_lines(1)[0]), signal.SIGKILL)


@pytest.mark.asyncio
async def test_stop_terms_then_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    seen = anyio.Event()
    with anyio.fail_after(30):
        async with watched(tmp_path, code, on_line=lambda line: seen.set()) as child:
            await seen.wait()
            started = time.monotonic()
            await child.stop(grace_s=0.3)
            took = time.monotonic() - started
            assert child.stopping and not child.running
            assert child.returncode == -signal.SIGKILL
            assert 0.3 <= took < 5
            await child.stop()  # a second stop is a no-op


@pytest.mark.asyncio
async def test_a_missing_program_raises_and_leaves_no_pipe_open(tmp_path: Path) -> None:
    before = _open_pipes()
    with pytest.raises(FileNotFoundError):
        await spawn_process("nothing", [str(tmp_path / "no-such-program")], log_dir=tmp_path / "logs")
    await anyio.sleep(0.01)  # a closed transport lets go of its file on the next loop turn
    assert _open_pipes() <= before


def _open_pipes() -> set[str]:
    pipes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("pipe:"):
                pipes.add(f"{fd}={target}")
    return pipes


def test_the_spawner_protocol_is_what_the_supervisor_implements() -> None:
    import inspect

    from ltcai.daemon.supervisor import Supervisor
    from ltcai.runtime.process import Spawner

    wanted = inspect.signature(Spawner.__call__)
    got = inspect.signature(Supervisor.spawn)
    assert list(got.parameters) == list(wanted.parameters)
    assert {n: p.kind for n, p in got.parameters.items()} == {n: p.kind for n, p in wanted.parameters.items()}

