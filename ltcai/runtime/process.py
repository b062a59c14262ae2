"""A child process in its own process group, the pump that drains its output, its handle.

Each child runs in its own session/process group, so a stop reaches the whole tree it
forked, with a parent-death signal on Linux, so a ``kill -9``ed parent leaves nothing
behind. Its stdout and stderr share one pipe that ltcai creates itself (not asyncio's
subprocess pipes): the process's exit is then noticed when it happens, not when the last
holder of the pipe lets go of it.

The output pump is what keeps a child from ever blocking on a full pipe:

- it reads bounded chunks and splits lines itself (on ``\\n``, ``\\r`` and ``\\r\\n``, a line
  longer than :data:`MAX_LINE_CHARS` cut into pieces), never asyncio's ``readline``, which
  dies on a line over 64 KiB (a ``\\r`` progress bar writes one);
- the log file is written by a worker thread fed through a bounded in-memory queue: the
  event loop never does a blocking write;
- nothing it calls stops it: an error is logged and the pipe keeps being drained.

This module is the lowest layer: it imports nothing of ltcai but :mod:`ltcai.runtime`.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import contextlib
import ctypes
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .files import append_all, ensure_private_dir, open_for_append

__all__ = ["MAX_LINE_CHARS", "LineSplitter", "OnLine", "ProcessHandle", "Spawner", "signal_group", "spawn_process"]

log = structlog.get_logger(__name__)

READ_CHUNK = 64 * 1024
MAX_LINE_CHARS = 8 * 1024  # a longer "line" (a progress bar without a newline) is cut here
_TAIL_LINES = 60
# Output waiting for the disk: up to 64 read chunks (4 MiB). Past that the pump waits for the
# writer, and the child for the pump: a slow disk slows the engine, it never loses the log.
_LOG_BACKLOG_CHUNKS = 64
# After the child exits, how long its output may stand still (nothing read, nothing written
# to the log) before we stop waiting for end-of-file. Only a process outside its group (one
# that called setsid) can hold the pipe open that long; then we let go of it.
_DRAIN_STILL_S = 2.0
_PR_SET_PDEATHSIG = 1
_LINE_END = re.compile(r"\r\n|\r|\n")

OnLine = Callable[[str], None]


class Spawner(Protocol):
    """Starts a child for an engine adapter; what ``EngineContext.spawn`` is.

    ``name`` names the child in logs and its log file (``<name>-<pid>.log``); ``on_line``
    gets each complete output line (see :class:`ProcessHandle`). The child is owned by
    whoever implements this (the daemon's supervisor records it and stops it at exit);
    the adapter may stop it earlier through the handle.
    """

    async def __call__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        on_line: OnLine | None = None,
    ) -> ProcessHandle: ...


class LineSplitter:
    """Bytes in, complete lines out, in bounded memory whatever the child writes.

    ``\\n``, ``\\r`` and ``\\r\\n`` each end a line (also when split across two chunks); an
    unended run longer than ``max_chars`` is handed out in ``max_chars`` pieces, the rest
    kept as the start of the next. Bytes that are not UTF-8 become U+FFFD.
    """

    def __init__(self, max_chars: int = MAX_LINE_CHARS) -> None:
        self.max_chars = max_chars
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._after_cr = False  # the last text ended with "\r": a "\n" next is the same line end

    def feed(self, data: bytes) -> list[str]:
        """The lines ``data`` completes, in order."""
        return self._split(self._decoder.decode(data))

    def finish(self) -> list[str]:
        """At end of output: the lines still held, the unended last one included."""
        lines = self._split(self._decoder.decode(b"", final=True))
        if self._pending:
            lines.append(self._pending)
            self._pending = ""
        return lines

    def _split(self, text: str) -> list[str]:
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
            self._after_cr = False
        if not text:
            return []
        self._after_cr = text.endswith("\r")
        *ended, rest = _LINE_END.split(self._pending + text)
        lines = [line[i : i + self.max_chars] for line in ended for i in range(0, max(len(line), 1), self.max_chars)]
        # The unended rest is at most one chunk plus one cap long: cutting it is cheap.
        while len(rest) > self.max_chars:
            lines.append(rest[: self.max_chars])
            rest = rest[self.max_chars :]
        self._pending = rest
        return lines


class ProcessHandle:
    """One running child: what an engine adapter holds instead of the supervisor.

    Lifecycle state (``returncode``, ``exited``) is written by :meth:`watch`, which its
    owner runs once in a task group, and by :meth:`stop` when the owner's watcher was
    cancelled first (a stopping daemon). Everything else only reads it.

    Attributes: ``name`` (the engine), ``pid`` (also the process group id), ``argv``,
    ``log_path`` (all its output, ``<logs>/<name>-<pid>.log``), ``started_at`` (epoch s),
    ``exited`` (an event set once the child has exited and :meth:`watch` has drained its
    output, or, after :meth:`stop`, as soon as it is gone),
    ``returncode`` (None while it runs; negative: killed by that signal), ``stopping``
    (True once :meth:`stop` was called: an exit after it is not a crash).
    """

    def __init__(
        self,
        name: str,
        proc: asyncio.subprocess.Process,
        argv: list[str],
        log_path: Path,
        output: asyncio.StreamReader,
        output_transport: asyncio.ReadTransport,
        on_line: OnLine | None = None,
    ) -> None:
        self.name = name
        self.pid = proc.pid
        self.argv = argv
        self.log_path = log_path
        self.started_at = time.time()
        self.exited = anyio.Event()
        self.returncode: int | None = None
        self.stopping = False
        self._proc = proc
        self._output = output
        self._output_transport = output_transport
        self._on_line = on_line
        self._on_line_failures = 0
        self._drained = anyio.Event()  # the pump has read the pipe to its end
        self._moved = 0  # chunks read plus batches written: output still on its way
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)

    @property
    def running(self) -> bool:
        """True until the child has exited (and, when watched, its output is drained)."""
        return not self.exited.is_set()

    def last_lines(self, n: int = 20) -> list[str]:
        """The child's last ``n`` output lines (at most 60 are kept), trailing blanks stripped."""
        return list(self._tail)[-n:]

    async def wait(self) -> int:
        """The return code, once the child has exited on its own or through :meth:`stop`.

        Needs the owner's watcher running (or a :meth:`stop`): that is what notices the exit.
        """
        await self.exited.wait()
        assert self.returncode is not None
        return self.returncode

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace_s``; returns once the child is gone.

        Idempotent, and finished even when the caller is cancelled (a stop half done would
        leave a process behind). Waits on the process itself, not on the watcher: at daemon
        shutdown the watchers are cancelled before the engines are stopped. Whatever the
        child forked into its group is killed too.
        """
        if self._proc.returncode is not None:
            return
        self.stopping = True
        with anyio.CancelScope(shield=True):
            signal_group(self.pid, signal.SIGTERM)
            with anyio.move_on_after(grace_s):
                await self._proc.wait()
            if self._proc.returncode is None:
                signal_group(self.pid, signal.SIGKILL)
                await self._proc.wait()
            self._mark_exited(self._proc.returncode)
            signal_group(self.pid, signal.SIGKILL)

    async def watch(self) -> None:
        """Drain the output into the tail, ``on_line`` and the log file until the child exits.

        Run exactly once, by the owner, in its task group; returns once the child has exited
        and all of its output is in the log file, having set ``returncode`` and ``exited``.
        What the child forked into its group does not outlive it (it would hold the pipe and
        whatever memory it took). Cancelled (the owner is stopping), it lets go of the pipe
        and the log file and leaves the child to :meth:`stop`.
        """
        send, receive = anyio.create_memory_object_stream[bytes](_LOG_BACKLOG_CHUNKS)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._write_log, receive, name=f"log {self.name} {self.pid}")
                tg.start_soon(self._pump, send, name=f"pump {self.name} {self.pid}")
                returncode = await self._proc.wait()
                signal_group(self.pid, signal.SIGKILL)
                await self._until_drained_or_still()
                self._output_transport.close()  # a holder outside the group gets EPIPE; the pump ends
        finally:
            self._output_transport.close()
        if self._on_line_failures > 1:
            log.warning("output line callback failed", engine=self.name, pid=self.pid, times=self._on_line_failures)
        self._mark_exited(returncode)

    async def _until_drained_or_still(self) -> None:
        """Wait for the pump to reach end-of-file, for as long as the output keeps moving.

        A slow disk keeps it moving (the log writer finishes batches), so a long backlog is
        waited out; only a pipe that stays silent and open gives up.
        """
        while True:
            moved = self._moved
            with anyio.move_on_after(_DRAIN_STILL_S):
                await self._drained.wait()
                return
            if self._moved == moved:
                return

    def _mark_exited(self, returncode: int) -> None:
        self.returncode = returncode
        self.exited.set()

    async def _pump(self, send: MemoryObjectSendStream[bytes]) -> None:
        """Read the pipe to its end: every chunk to the log writer, every line to the tail."""
        splitter = LineSplitter()
        try:
            async with send:
                await self._pump_chunks(send, splitter)
                self._take_lines(splitter.finish)
        finally:
            self._drained.set()

    async def _pump_chunks(self, send: MemoryObjectSendStream[bytes], splitter: LineSplitter) -> None:
        while True:
            try:
                chunk = await self._output.read(READ_CHUNK)
            except Exception:
                # The reader holds a transport error and would raise it on every read:
                # close our end, so the child gets EPIPE instead of a pipe nobody reads.
                log.exception("engine output cannot be read; pipe closed", engine=self.name, pid=self.pid)
                self._output_transport.close()
                return
            if not chunk:
                return
            self._moved += 1
            await send.send(chunk)
            self._take_lines(lambda: splitter.feed(chunk))  # noqa: B023  (called right here)

    def _take_lines(self, split: Callable[[], list[str]]) -> None:
        try:
            for line in split():
                self._tail.append(line.rstrip())
                if self._on_line is not None:
                    self._call_on_line(line)
        except Exception:  # a bug here must cost lines, never the pump (the child would block)
            log.exception("engine output lines lost", engine=self.name, pid=self.pid)

    def _call_on_line(self, line: str) -> None:
        assert self._on_line is not None
        try:
            self._on_line(line)
        except Exception:
            self._on_line_failures += 1
            if self._on_line_failures == 1:  # once, with the traceback; the count comes at exit
                log.exception("output line callback failed; output keeps flowing", engine=self.name, pid=self.pid)

    async def _write_log(self, receive: MemoryObjectReceiveStream[bytes]) -> None:
        """Append what the pump sends to the log file, in a worker thread, a batch at a time.

        A log that cannot be written (a full disk) is reported once; the output keeps being
        received and dropped, so the pump, and the child, never wait on a dead writer.
        """
        fd: int | None = None
        failed = False
        try:
            async with receive:
                async for chunk in receive:
                    batch = [chunk]
                    with contextlib.suppress(anyio.WouldBlock, anyio.EndOfStream):
                        while True:
                            batch.append(receive.receive_nowait())
                    if not failed:
                        try:
                            if fd is None:
                                fd = await anyio.to_thread.run_sync(open_for_append, self.log_path)
                            await anyio.to_thread.run_sync(append_all, fd, b"".join(batch))
                        except Exception:
                            failed = True
                            log.exception(
                                "engine log cannot be written; its output is kept in memory only",
                                engine=self.name, pid=self.pid, log_path=str(self.log_path),
                            )
                    self._moved += 1
        finally:
            if fd is not None:
                os.close(fd)


async def spawn_process(
    name: str,
    argv: Sequence[str],
    *,
    log_dir: Path,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    on_line: OnLine | None = None,
) -> ProcessHandle:
    """Start ``argv`` in a new session with a parent-death signal; its output to one pipe.

    The caller owns the result and must run :meth:`ProcessHandle.watch` in its task group
    right away (that drains the pipe; an undrained child blocks once the pipe is full) and
    :meth:`ProcessHandle.stop` it before exiting. Call it from the event loop's thread: the
    parent-death signal fires when the thread that forked the child ends. ``OSError`` (no
    such program, not executable) is raised as is; nothing is left running then.
    """
    await anyio.to_thread.run_sync(ensure_private_dir, log_dir)
    read_fd, write_fd = os.pipe()  # not inheritable: no other child gets a copy
    try:
        output, transport = await _connect_reader(read_fd)
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_pdeathsig_preexec(),
        )
    except BaseException:
        transport.close()
        raise
    finally:
        os.close(write_fd)  # the child has its own; ours would keep the pipe open forever
    return ProcessHandle(name, proc, list(argv), log_dir / f"{name}-{proc.pid}.log", output, transport, on_line)


async def _connect_reader(read_fd: int) -> tuple[asyncio.StreamReader, asyncio.ReadTransport]:
    loop = asyncio.get_running_loop()
    # The limit only sets when reading pauses (at twice it); lines are split by LineSplitter.
    reader = asyncio.StreamReader(limit=READ_CHUNK)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
    )
    return reader, transport


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to process group ``pid``; one already gone, or not ours, is left alone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _pdeathsig_preexec() -> Any:
    """A preexec_fn that asks Linux to SIGKILL the child when its parent dies, or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:  # runs in the forked child: no allocation-heavy work here
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return preexec
