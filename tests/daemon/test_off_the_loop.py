"""File work the daemon does while it serves runs in worker threads, never on the event loop.

In-process: each blocking call is wrapped to record the thread it runs in, and the test
asserts it was not the event loop's (issue 10, defect 2). The engine output pump's log
writes are proven in ``tests/runtime/test_process.py``; the daemon's own log file
(``logs/daemon.log``) here, against a real stuck "disk" (a FIFO nobody reads).
"""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog

from ltcai.config.paths import default_paths
from ltcai.config.settings import load_settings
from ltcai.daemon import app
from ltcai.daemon import logs as logs_module
from ltcai.daemon.logs import configure_logging
from ltcai.daemon.jobs import _KEEP_FINISHED_JOBS, JobManager
from ltcai.daemon.prepare_machine import PrepareMachine
from ltcai.daemon.store import StateStore


@pytest.mark.asyncio
async def test_pruning_old_jobs_deletes_their_records_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: ``JobManager._prune`` deleted job files on the loop (this test failed)."""
    store = StateStore(tmp_path / "state")
    store.prepare()
    for i in range(_KEEP_FINISHED_JOBS + 2):
        machine = PrepareMachine(f"job{i:04d}", "fake", "model")
        store.write_sync(f"jobs/job{i:04d}", {"machine": machine.snapshot(), "resolution": None, "created_at": i})
    loop_thread = threading.get_ident()
    deleted_in: dict[str, int] = {}
    real_delete = StateStore.delete_sync

    def recording_delete(self: StateStore, name: str) -> None:
        deleted_in[name] = threading.get_ident()
        real_delete(self, name)

    monkeypatch.setattr(StateStore, "delete_sync", recording_delete)
    jobs = JobManager(store)
    await jobs.restore()  # more finished jobs than kept: the oldest two go
    assert sorted(deleted_in) == ["jobs/job0000", "jobs/job0001"]
    assert loop_thread not in deleted_in.values()
    assert store.names_sync("jobs")[0] == "jobs/job0002" and len(jobs.jobs) == _KEEP_FINISHED_JOBS


@pytest.mark.asyncio
async def test_a_sighup_reload_reads_the_config_in_a_worker_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: SIGHUP's reload parsed the config file on the loop (this test failed)."""
    paths = default_paths({"LTCAI_DATA_DIR": str(tmp_path / "data"), "LTCAI_CONFIG_DIR": str(tmp_path / "config")})
    paths.config_file.parent.mkdir(parents=True)
    paths.config_file.write_text('log_level = "warning"\n')
    loop_thread = threading.get_ident()
    ran_in: dict[str, int] = {}

    def recording(name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            ran_in[name] = threading.get_ident()
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(app, "load_settings", recording("load_settings", load_settings))
    monkeypatch.setattr(app, "configure_logging", recording("configure_logging", lambda *a, **k: None))
    reloaded: list[Any] = []
    woken: list[bool] = []
    services = SimpleNamespace(
        settings=load_settings({}, paths=paths),
        profiles=SimpleNamespace(reload_user_table=reloaded.append),
        lifecycle=SimpleNamespace(wake=lambda: woken.append(True)),  # the idle reaper recomputes deadlines
    )
    assert services.settings.log_level == "warning"
    paths.config_file.write_text('log_level = "error"\n')
    await app._reload(services)  # type: ignore[arg-type]
    assert services.settings.log_level == "error" and reloaded and woken
    assert set(ran_in) == {"load_settings", "configure_logging"}
    assert loop_thread not in ran_in.values()


@pytest.fixture
def logs_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for ``daemon.log``; structlog's configuration and the writer restored after."""
    old = structlog.get_config()
    yield tmp_path / "logs"
    configure_logging(stream=io.StringIO())  # ends the file's writer thread
    structlog.configure(**old)


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def _wait_for_line(path: Path, event: str) -> None:
    """Until the writer thread has put a line with ``event`` into ``path``."""
    deadline = time.monotonic() + 10
    while not (path.exists() and event in path.read_text()):
        assert time.monotonic() < deadline, f"{event!r} never reached {path}"
        time.sleep(0.01)


@pytest.mark.asyncio
async def test_a_stuck_disk_never_stalls_the_loop_logging_and_daemon_log_keeps_every_line(logs_dir: Path) -> None:
    """Regression: each line was written to ``daemon.log`` on the loop; a disk that took
    nothing held the loop until it did (this test failed: 200 lines took the 2 s the
    reader waited). The "disk" is a FIFO whose reader starts reading after 2 s.
    """
    logs_dir.mkdir()
    os.mkfifo(logs_dir / "daemon.log")
    reader = os.open(logs_dir / "daemon.log", os.O_RDONLY | os.O_NONBLOCK)
    lines = 200  # 200 kB: three times what a pipe holds
    received = bytearray()

    def read_later() -> None:
        time.sleep(2.0)
        deadline = time.monotonic() + 30
        while received.count(b"\n") < lines and time.monotonic() < deadline:
            select.select([reader], [], [], 0.1)
            try:
                received.extend(os.read(reader, 1 << 16))
            except BlockingIOError:
                pass

    drain = threading.Thread(target=read_later)
    drain.start()
    try:
        configure_logging(stream=io.StringIO(), json=True, log_dir=logs_dir)
        log = structlog.get_logger("test")
        started = time.monotonic()
        for i in range(lines):
            log.info("a line", i=i, padding="x" * 1000)
        logging_took = time.monotonic() - started
        drain.join()
    finally:
        configure_logging(stream=io.StringIO())
        os.close(reader)
    assert logging_took < 1.0, f"logging {lines} lines on the loop took {logging_took:.2f} s"
    assert [e["i"] for e in _events(received.decode())] == list(range(lines))


@pytest.mark.asyncio
async def test_the_daemon_log_is_written_in_a_worker_thread(logs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loop_thread = threading.get_ident()
    writer_threads: set[int] = set()
    real_append_all = logs_module.append_all

    def recording_append_all(fd: int, data: bytes) -> None:
        writer_threads.add(threading.get_ident())
        real_append_all(fd, data)

    monkeypatch.setattr(logs_module, "append_all", recording_append_all)
    configure_logging(stream=io.StringIO(), json=True, log_dir=logs_dir)
    structlog.get_logger("test").info("on the loop")
    configure_logging(stream=io.StringIO())  # flushes and ends the writer
    assert [e["event"] for e in _events((logs_dir / "daemon.log").read_text())] == ["on the loop"]
    assert writer_threads and loop_thread not in writer_threads


def test_lines_past_a_full_backlog_are_counted_in_the_file_and_the_first_gap_is_logged_once(
    logs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer is held in its write; the backlog (5 lines) fills; what does not fit is
    left out of the file, never silently: a gap line there counts it, and stdout, which
    has every line, says it once.
    """
    writing, release = threading.Event(), threading.Event()
    real_append_all = logs_module.append_all

    def held_append_all(fd: int, data: bytes) -> None:
        writing.set()
        assert release.wait(10)
        real_append_all(fd, data)

    monkeypatch.setattr(logs_module, "_BACKLOG_LINES", 5)
    monkeypatch.setattr(logs_module, "append_all", held_append_all)
    stdout = io.StringIO()
    configure_logging(stream=stdout, json=True, log_dir=logs_dir)
    log = structlog.get_logger("test")

    def overflow(first: int) -> None:
        writing.clear()
        release.clear()
        log.info("line", i=first)
        assert writing.wait(10)  # the writer holds line ``first``; the next 5 fit, 5 do not
        for i in range(first + 1, first + 11):
            log.info("line", i=i)
        release.set()

    gap = "lines left out of this file here: the disk was too slow or full (stdout has them)"
    warning = "daemon log left lines out: the disk was too slow or full (stdout has them)"
    overflow(0)
    _wait_for_line(logs_dir / "daemon.log", warning)  # the writer is idle again
    overflow(100)
    configure_logging(stream=io.StringIO())  # flushes and ends the writer
    in_file = [(e["event"], e.get("i", e.get("dropped"))) for e in _events((logs_dir / "daemon.log").read_text())]
    assert in_file == [
        ("line", 0), (gap, 5), *[("line", i) for i in range(1, 6)], (warning, 5),
        ("line", 100), (gap, 5), *[("line", i) for i in range(101, 106)],
    ]
    on_stdout = _events(stdout.getvalue())
    assert [e["i"] for e in on_stdout if e["event"] == "line"] == [*range(11), *range(100, 111)]
    assert [e["dropped"] for e in on_stdout if e["event"] == warning] == [5]


def test_a_daemon_log_line_queued_at_exit_is_written_before_the_process_ends(tmp_path: Path) -> None:
    code = (
        "import io, sys, structlog\n"
        "from pathlib import Path\n"
        "from ltcai.daemon.logs import configure_logging\n"
        "configure_logging(stream=io.StringIO(), json=True, log_dir=Path(sys.argv[1]))\n"
        "log = structlog.get_logger()\n"
        "for i in range(5000):\n"
        "    log.info('line', i=i)\n"
        "log.info('stopped')\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    events = _events((tmp_path / "daemon.log").read_text())
    assert [e.get("i") for e in events[:-1]] == list(range(5000)) and events[-1]["event"] == "stopped"


def test_configuring_again_reopens_the_daemon_log_after_a_logrotate(logs_dir: Path) -> None:
    """SIGHUP's reload calls ``configure_logging`` again: a file moved away is let go of."""
    configure_logging(stream=io.StringIO(), json=True, log_dir=logs_dir)
    log = structlog.get_logger("test")
    log.info("before")
    _wait_for_line(logs_dir / "daemon.log", "before")
    (logs_dir / "daemon.log").rename(logs_dir / "daemon.log.rotated")
    configure_logging(stream=io.StringIO(), json=True, log_dir=logs_dir)
    log.info("after")
    configure_logging(stream=io.StringIO())
    assert [e["event"] for e in _events((logs_dir / "daemon.log.rotated").read_text())] == ["before"]
    assert [e["event"] for e in _events((logs_dir / "daemon.log").read_text())] == ["after"]


def test_a_full_disk_costs_the_file_lines_counted_there_once_it_has_room(
    logs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_append_all = logs_module.append_all
    failed_writes: list[bytes] = []
    disk_full = threading.Event()
    disk_full.set()

    def append_all(fd: int, data: bytes) -> None:
        if disk_full.is_set():
            failed_writes.append(data)
            raise OSError(28, "No space left on device")
        real_append_all(fd, data)

    monkeypatch.setattr(logs_module, "append_all", append_all)
    stdout = io.StringIO()
    configure_logging(stream=stdout, json=True, log_dir=logs_dir)
    log = structlog.get_logger("test")
    log.info("lost")  # its write fails; so does the warning's, which the failure logs
    deadline = time.monotonic() + 10
    while len(failed_writes) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    disk_full.clear()
    log.info("kept")  # written after a gap line counting the two; the gap is then logged once
    deadline = time.monotonic() + 10
    while "left lines out" not in stdout.getvalue():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    configure_logging(stream=io.StringIO())
    in_file = [(e["event"], e.get("dropped")) for e in _events((logs_dir / "daemon.log").read_text())]
    assert in_file == [
        ("lines left out of this file here: the disk was too slow or full (stdout has them)", 2),
        ("kept", None),
        ("daemon log left lines out: the disk was too slow or full (stdout has them)", 2),
    ]
    warnings = [e for e in _events(stdout.getvalue()) if e["level"] == "warning"]
    assert [e["event"] for e in warnings] == [
        "daemon log cannot be written; its lines go to stdout only",
        "daemon log left lines out: the disk was too slow or full (stdout has them)",
    ]
