"""Shared fixtures: daemons driven by the FAKE engine plugin (``tests/fakes``).

Two ways to run a daemon:

* ``daemon`` / ``stall_daemon`` / ``start_daemon``: a real ``ltcai serve`` SUBPROCESS with
  its own data dir, config dir and socket under a short ``/tmp/lt…`` root (AF_UNIX paths
  are limited to ~107 bytes). Readiness is awaited through ``NOTIFY_SOCKET`` — the
  systemd protocol the unit uses — so no test polls for it. At teardown the daemon gets
  SIGTERM and must exit 0, leaving no process of any engine's process group alive.
  ``daemon`` is shared by the whole session (tests give their models unique ids);
  ``start_daemon`` starts private ones (signals, restarts, odd start-up states).
* ``inprocess_daemon``: ``run_daemon`` inside the test's own event loop, for tests that
  look inside (``structlog.testing.capture_logs``).

Every response body a helper sees is checked never to contain a traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import structlog

TESTS = Path(__file__).resolve().parent
FAKES = TESTS / "fakes"
REPO = TESTS.parent
FAKE_PLUGIN = "ltcai_fake_engine"

# The fake plugin must be importable here too: tests read its tables (PHASE_STATE…) and
# the in-process daemon loads it.
if str(FAKES) not in sys.path:
    sys.path.insert(0, str(FAKES))

_READY_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 30.0


# ----------------------------------------------------------------------------- helpers


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def live_processes_in_groups(pgids: set[int]) -> list[int]:
    """Live (non-zombie) processes whose process group is one of ``pgids`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After the command: state, ppid, pgrp, …
        if fields[0] != "Z" and int(fields[2]) in pgids:
            found.append(int(entry.name))
    return found


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``condition`` until truthy (for outside effects with nothing to await)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)


def assert_no_traceback(text: str | bytes, where: str = "response") -> None:
    raw = text if isinstance(text, bytes) else text.encode()
    assert b"Traceback" not in raw, f"a traceback reached the {where}: {raw[:2000]!r}"


def _check_response(response: httpx.Response) -> None:
    # Streams are checked line by line by ``events``; reading them here would block.
    if "ndjson" in response.headers.get("content-type", ""):
        return
    response.read()
    assert_no_traceback(response.content)


def uds_client(socket_path: Path, timeout: float | None = 60.0) -> httpx.Client:
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=str(socket_path)),
        base_url="http://ltcai",
        timeout=timeout,
        event_hooks={"response": [_check_response]},
    )


def async_uds_client(socket_path: Path, timeout: float | None = 60.0) -> httpx.AsyncClient:
    async def check(response: httpx.Response) -> None:
        if "ndjson" not in response.headers.get("content-type", ""):
            await response.aread()
            assert_no_traceback(response.content)

    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(socket_path)),
        base_url="http://ltcai",
        timeout=timeout,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        event_hooks={"response": [check]},
    )


def parse_ndjson_line(line: str) -> dict[str, Any]:
    assert_no_traceback(line, "event stream")
    return json.loads(line)


# ------------------------------------------------------------------ subprocess daemons


@dataclass
class DaemonHandle:
    """A running ``ltcai serve`` subprocess and the ways tests talk to it."""

    root: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    notify: socket.socket
    client: httpx.Client
    engine_groups: set[int] = field(default_factory=set)

    @property
    def socket_path(self) -> Path:
        return Path(self.env["LTCAI_SOCKET"])

    @property
    def data_dir(self) -> Path:
        return Path(self.env["LTCAI_DATA_DIR"])

    @property
    def config_dir(self) -> Path:
        return Path(self.env["LTCAI_CONFIG_DIR"])

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"

    @property
    def log_path(self) -> Path:
        return self.root / "daemon.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        """The daemon's structlog output (JSON lines off a TTY), parsed."""
        events = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events

    # -- the API --

    def events(self, method: str, path: str, body: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """The NDJSON events of a streamed response, as they arrive."""
        with self.client.stream(method, path, json=body, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                raise AssertionError(f"{method} {path} answered {response.status_code}: {response.text}")
            assert "ndjson" in response.headers["content-type"]
            for line in response.iter_lines():
                if line.strip():
                    yield parse_ndjson_line(line)

    def prepare(self, model: str, engine: str | None = "fake", **body: Any) -> list[dict[str, Any]]:
        """Every event of a streamed prepare; the last one is the report."""
        events = list(self.events("POST", "/prepare", {"model": model, "engine": engine, **body}))
        assert events and events[-1]["type"] == "report", events[-3:]
        self.remember_engines()
        return events

    def report(self, model: str, engine: str | None = "fake", **body: Any) -> dict[str, Any]:
        return self.prepare(model, engine, **body)[-1]["report"]

    def start_job(self, model: str, engine: str = "fake") -> str:
        response = self.client.post("/prepare", json={"model": model, "engine": engine, "stream": False})
        assert response.status_code == 202, response.text
        return response.json()["job_id"]

    def wait_for_state(self, job_id: str, state: str) -> list[dict[str, Any]]:
        """Follow a job's events until it has entered ``state``; the events so far."""
        seen = []
        for event in self.events("GET", f"/jobs/{job_id}/events"):
            seen.append(event)
            if event["type"] == "state" and event["state"] == state:
                return seen
            assert event["type"] != "report", f"job ended before {state}: {event}"
        raise AssertionError(f"event stream of {job_id} ended before {state}")

    def engine_processes(self) -> list[dict[str, Any]]:
        processes = self.client.get("/logs").json()["engines"]
        self.engine_groups.update(p["pid"] for p in processes)
        return processes

    def remember_engines(self) -> None:
        with contextlib.suppress(httpx.HTTPError):
            self.engine_processes()

    def engine_pid(self, model: str, timeout: float = 10.0) -> int:
        """The pid of the fake server for ``model`` (it prints ``… model=<id>`` first)."""

        def find() -> int | None:
            for process in self.engine_processes():
                if any(line.endswith(f" model={model}") for line in process["tail"]):
                    return process["pid"]
            return None

        return wait_until(find, timeout)

    def engine_line(self, pid: int, prefix: str) -> str:
        for process in self.engine_processes():
            if process["pid"] == pid:
                for line in process["tail"]:
                    if line.startswith(prefix):
                        return line
        raise AssertionError(f"engine {pid} printed no line starting {prefix!r}")

    # -- process control --

    def notifications(self, timeout: float = 0.0) -> list[str]:
        """sd_notify messages received so far (waiting up to ``timeout`` for the first)."""
        messages = []
        ready, _, _ = select.select([self.notify], [], [], timeout)
        while ready:
            messages.append(self.notify.recv(4096).decode())
            ready, _, _ = select.select([self.notify], [], [], 0)
        return messages

    def send(self, sig: int) -> None:
        self.process.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = _STOP_TIMEOUT_S) -> int:
        if self.process.poll() is None:
            self.remember_engines()
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"daemon ignored {signal.Signals(sig).name} for {timeout} s:\n{self.log_text()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL: the daemon gets no chance to clean anything up."""
        self.remember_engines()
        self.process.kill()
        self.process.wait()

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The real ``ltcai`` command line against this daemon."""
        return subprocess.run(
            [sys.executable, "-m", "ltcai", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def close(self) -> None:
        self.client.close()
        self.notify.close()


def daemon_env(root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an isolated daemon with the fake engine plugin loaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LTCAI_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update(
        {
            "LTCAI_DATA_DIR": str(root / "d"),
            "LTCAI_CONFIG_DIR": str(root / "c"),
            "LTCAI_SOCKET": str(root / "s.sock"),
            "LTCAI_PLUGINS": FAKE_PLUGIN,
            "LTCAI_STALL_TIMEOUT_S": "60",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(FAKES), env.get("PYTHONPATH")])),
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def make_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="lt", dir="/tmp"))


def launch_daemon(root: Path, extra_env: dict[str, str] | None = None, config: str | None = None) -> DaemonHandle:
    """Start ``ltcai serve`` on ``root``; returns once it said READY=1 (and answers)."""
    env = daemon_env(root, extra_env)
    config_dir = Path(env["LTCAI_CONFIG_DIR"])
    config_dir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (config_dir / "config.toml").write_text(config)
    notify_path = root / f"n{time.monotonic_ns() % 10**8}.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    env["NOTIFY_SOCKET"] = str(notify_path)
    log = (root / "daemon.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "ltcai", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root
    )
    log.close()
    handle = DaemonHandle(root, env, process, notify, uds_client(Path(env["LTCAI_SOCKET"])))
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while True:
        if any("READY=1" in m for m in handle.notifications(timeout=0.05)):
            break
        if process.poll() is not None:
            handle.close()
            raise AssertionError(f"daemon exited ({process.returncode}) before READY=1:\n{handle.log_text()[-4000:]}")
        if time.monotonic() > deadline:
            handle.close()
            process.kill()
            raise AssertionError(f"daemon not ready in {_READY_TIMEOUT_S} s:\n{handle.log_text()[-4000:]}")
    # READY=1 promises a bound socket: it must answer at once, without retries.
    status = handle.client.get("/status")
    assert status.status_code == 200, status.text
    return handle


def finish_daemon(handle: DaemonHandle) -> None:
    """Stop (SIGTERM) if still running, require exit 0, and no engine process left behind."""
    try:
        if handle.process.poll() is None:
            code = handle.stop()
            assert code == 0, f"daemon exited {code}:\n{handle.log_text()[-4000:]}"
        survivors = live_processes_in_groups(handle.engine_groups)
        for pid in survivors:  # clean up before failing, so one bug does not cascade
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not survivors, f"engine processes survived the daemon: {survivors}"
    finally:
        if handle.process.poll() is None:  # a failure above must not leave the daemon running
            handle.process.kill()
            handle.process.wait()
        handle.close()


@pytest.fixture(scope="session")
def daemon() -> Iterator[DaemonHandle]:
    """One ``ltcai serve`` subprocess for the session: give each test's models unique ids."""
    root = make_root()
    handle = launch_daemon(root)
    yield handle
    finish_daemon(handle)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def stall_daemon() -> Iterator[DaemonHandle]:
    """A daemon whose prepare steps stall after 1 s without progress."""
    root = make_root()
    handle = launch_daemon(root, {"LTCAI_STALL_TIMEOUT_S": "1"})
    yield handle
    finish_daemon(handle)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def daemon_root() -> Iterator[Path]:
    """A fresh short root for private daemons (several may use it in turn: restarts)."""
    root = make_root()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def start_daemon(daemon_root: Path) -> Iterator[Callable[..., DaemonHandle]]:
    """``start_daemon(extra_env=None, config=None, root=daemon_root)``: a private daemon.

    Every daemon it started is finished at teardown (exit 0 required unless the test
    already stopped or killed it; no engine process may survive either way).
    """
    started: list[DaemonHandle] = []

    def start(extra_env: dict[str, str] | None = None, config: str | None = None, root: Path | None = None) -> DaemonHandle:
        handle = launch_daemon(root or daemon_root, extra_env, config)
        started.append(handle)
        return handle

    yield start
    # Newest first: a restarted daemon still runs while its predecessor is long gone. One
    # shared set of engine groups, so each must also have reaped those before it.
    groups: set[int] = set().union(*(h.engine_groups for h in started))
    failures: list[AssertionError] = []
    for handle in reversed(started):
        handle.engine_groups = groups
        try:
            finish_daemon(handle)
        except AssertionError as exc:
            failures.append(exc)
    if failures:
        raise failures[0]


@pytest.fixture(name="pid_alive")
def pid_alive_fixture() -> Callable[[int], bool]:
    return pid_alive


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., Any]:
    return wait_until


@pytest.fixture
def async_client_for() -> Callable[..., httpx.AsyncClient]:
    """``async with async_client_for(socket_path) as client:`` an async client on the socket."""
    return async_uds_client


@pytest.fixture
def tag(request: pytest.FixtureRequest) -> str:
    """A short word unique to this test, to make model ids on the shared daemon unique."""
    return f"t{abs(hash(request.node.nodeid)) % 10**8}"


# ------------------------------------------------------------------- in-process daemon


@dataclass
class InprocessDaemon:
    settings: Any
    client: httpx.AsyncClient

    async def prepare(self, model: str, engine: str = "fake") -> list[dict[str, Any]]:
        events = []
        async with self.client.stream("POST", "/prepare", json={"model": model, "engine": engine}) as response:
            assert response.status_code == 200, await response.aread()
            async for line in response.aiter_lines():
                if line.strip():
                    events.append(parse_ndjson_line(line))
        return events


@pytest.fixture
def inprocess_daemon(
    monkeypatch: pytest.MonkeyPatch, daemon_root: Path
) -> Callable[..., contextlib.AbstractAsyncContextManager[InprocessDaemon]]:
    """``async with inprocess_daemon(**env) as d:`` runs ``run_daemon`` in this event loop.

    Leaving the block cancels the daemon's root task group, which stops its engines.
    Logging goes to memory at debug level, so ``capture_logs`` sees every line.
    """
    from ltcai.config.settings import load_settings
    from ltcai.daemon.app import run_daemon
    from ltcai.daemon.logs import configure_logging

    monkeypatch.setenv("LTCAI_PLUGINS", FAKE_PLUGIN)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)

    @contextlib.asynccontextmanager
    async def run(**extra_env: str) -> AsyncIterator[InprocessDaemon]:
        old_config = structlog.get_config()
        configure_logging("debug", stream=io.StringIO(), json=True)
        env = daemon_env(daemon_root, extra_env)
        settings = load_settings(env)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_daemon, settings)
                async with async_uds_client(settings.paths.socket_path) as client:
                    with anyio.fail_after(_READY_TIMEOUT_S):
                        while True:
                            with contextlib.suppress(httpx.TransportError):
                                if (await client.get("/status")).status_code == 200:
                                    break
                            await anyio.sleep(0.01)
                    yield InprocessDaemon(settings, client)
                tg.cancel_scope.cancel()
        finally:
            structlog.configure(**old_config)

    return run
