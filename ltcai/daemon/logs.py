"""structlog set-up: a console renderer on a TTY, JSON lines otherwise (journald/launchd).

Context (job id, engine, model) is bound with contextvars, so every line a task logs
carries it without passing loggers around. Every line is also appended as JSON to
``logs/daemon.log`` (rotated at 10 MB, one old file kept), so ``ltcai logs`` works
whatever supervises the daemon.

The file is written by one worker thread fed through a bounded queue: a line logged on
the event loop costs a ``json.dumps`` and a ``put_nowait``, never a write to a slow or
stuck disk (issue 10, defect 2). A full queue drops the line from the file only (stdout
has it), counted: the file gets one line saying how many are missing there, and the
first such gap is logged once.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import structlog

from ..config.paths import DAEMON_LOG
from ..runtime.files import append_all, ensure_private_dir, open_for_append

__all__ = ["configure_logging"]

log = structlog.get_logger(__name__)

_ROTATE_BYTES = 10 << 20
# Lines waiting for the disk. ~10k lines is a few MB: a disk that stalls that long loses
# lines from the file (counted), never memory without bound or the loop's time.
_BACKLOG_LINES = 10_000
_BATCH_LINES = 512  # at most this many lines per write call
_CLOSE_TIMEOUT_S = 5.0  # at exit: how long the writer may take to flush what is queued
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_STOP = None  # the queue's last item: flush and end


class _JsonFileSink:
    """A structlog processor that queues each event as a JSON line for a writer thread.

    Called from any thread (the loop, worker threads, before and after ``anyio.run``);
    only the writer thread touches the file. :meth:`close` flushes and ends it (at exit,
    or when logging is configured without a file).
    """

    def __init__(self, path: Path, *, backlog: int) -> None:
        ensure_private_dir(path.parent)
        self.path = path
        self._lines: queue.Queue[str | None] = queue.Queue(maxsize=backlog)
        self._lock = threading.Lock()
        self._dropped = 0  # lines left out of the file since the last gap line written there
        self._reported: set[str] = set()  # each kind of trouble is logged once, not per batch
        self._reopen = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ltcai daemon.log writer", daemon=True)
        self._thread.start()

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        line = json.dumps(event_dict, default=str, ensure_ascii=False) + "\n"
        try:
            self._lines.put_nowait(line)
        except queue.Full:
            self._count_dropped(1)
        return event_dict

    def reopen(self, path: Path) -> None:
        """Write to ``path`` from the next line on, opening it afresh (SIGHUP, after a logrotate)."""
        ensure_private_dir(path.parent)
        with self._lock:
            self.path = path
            self._reopen = True

    def close(self, timeout_s: float = _CLOSE_TIMEOUT_S) -> None:
        """Write what is queued, then end the writer; idempotent. Blocks: not for the loop."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._lines.put(_STOP, timeout=timeout_s)
        except queue.Full:
            return  # the writer is stuck on the disk; it is a daemon thread, exit goes on
        self._thread.join(timeout_s)

    def _count_dropped(self, lines: int) -> None:
        with self._lock:
            self._dropped += lines

    def _run(self) -> None:
        fd: int | None = None
        while True:
            batch = self._next_batch()
            lines = [line for line in batch if line is not _STOP]
            fd = self._write_batch(fd, lines)
            if batch[-1] is _STOP:
                if fd is not None:
                    os.close(fd)
                return

    def _next_batch(self) -> list[str | None]:
        batch = [self._lines.get()]
        while batch[-1] is not _STOP and len(batch) < _BATCH_LINES:
            try:
                batch.append(self._lines.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write_batch(self, fd: int | None, lines: list[str]) -> int | None:
        """Append ``lines``, after a gap line if some were dropped; the fd to use next.

        Nothing escapes: an error costs the file these lines (counted for the next gap
        line, reported once), never the writer thread.
        """
        with self._lock:
            reopen, self._reopen, path = self._reopen, False, self.path
            dropped, self._dropped = self._dropped, 0
        to_write = [_gap_line(dropped), *lines] if dropped else lines
        try:
            if fd is not None and reopen:
                os.close(fd)
                fd = None
            if fd is None:
                fd = open_for_append(path)
            append_all(fd, "".join(to_write).encode("utf-8"))
        except Exception:
            self._count_dropped(len(lines) + dropped)
            self._report_once(
                "daemon log cannot be written; its lines go to stdout only", exc_info=True, path=str(path)
            )
            return fd
        if dropped:
            self._report_once(
                "daemon log left lines out: the disk was too slow or full (stdout has them)", dropped=dropped
            )
        try:
            if os.fstat(fd).st_size > _ROTATE_BYTES:
                fd = _rotate(fd, path)
        except Exception:  # the lines are in; the file only grows past its size
            self._report_once("daemon log cannot be rotated; it keeps growing", exc_info=True, path=str(path))
        return fd

    def _report_once(self, event: str, **fields: Any) -> None:
        # Logged from this thread like any line: to stdout, and queued for the file.
        if event not in self._reported:
            self._reported.add(event)
            log.warning(event, **fields)


def _rotate(fd: int, path: Path) -> int:
    """Keep one old file: ``daemon.log`` becomes ``daemon.log.1``; the fd of a fresh one."""
    os.replace(path, path.with_suffix(".log.1"))  # renaming an open file is fine on POSIX
    fresh = open_for_append(path)
    os.close(fd)
    return fresh


def _gap_line(dropped: int) -> str:
    event = {
        "event": "lines left out of this file here: the disk was too slow or full (stdout has them)",
        "dropped": dropped,
        "level": "warning",
        "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
    }
    return json.dumps(event) + "\n"


_sink: _JsonFileSink | None = None  # the one writer thread of this process, once a file is configured


def configure_logging(
    level: str = "info", *, stream: TextIO | None = None, json: bool | None = None, log_dir: Path | None = None
) -> None:
    """Configure structlog for the daemon. ``json=None`` picks by whether ``stream`` is a TTY.

    With ``log_dir``, lines also go to ``log_dir/daemon.log``; called again (SIGHUP) the
    same writer thread opens the file afresh. Blocks on file work: not for the loop.
    """
    global _sink
    stream = stream or sys.stdout
    if json is None:
        json = not stream.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    old_sink = _sink
    if log_dir is not None:
        if _sink is None:
            _sink = _JsonFileSink(log_dir / DAEMON_LOG, backlog=_BACKLOG_LINES)
            atexit.register(_sink.close)
        else:
            _sink.reopen(log_dir / DAEMON_LOG)
        processors.append(_sink)
    else:
        _sink = None
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level.lower(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    if old_sink is not None and old_sink is not _sink:
        old_sink.close()
