"""Building ``llama-server`` from the pinned llama.cpp source, once per version.

The source is the one llama-cpp-python's sdist already vendors (``vendor/llama.cpp``,
with ``tools/server``): ``pip download`` fetches it from the package index, so the build
needs nothing beyond what pip can reach, and the llama.cpp that ltcai builds is the one
its Python fallback was tested with.

The build is all-or-nothing: it runs in a temporary folder beside its destination and
is renamed into place only when the binary has been built and answers ``--version``;
a failed or interrupted build leaves nothing that counts as installed. cmake's
``[n/m]`` steps become progress (a bar in ``ltcai prepare`` / ``ltcai engines install``),
and every line feeds the stall timer. Builds are single-flight per destination.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog

from ..errors import EngineUnavailable
from .base import EngineContext
from .llama_server import probe_version

__all__ = [
    "PINNED_SOURCE",
    "BuildPlan",
    "StepParser",
    "build_llama_server",
    "install_dir",
    "installed_binary",
    "missing_tools",
    "plan_build",
]

log = structlog.get_logger(__name__)

# The llama-cpp-python release whose vendored llama.cpp ltcai builds (and tests with).
PINNED_SOURCE = "0.3.36"
_SDIST = "llama-cpp-python"
_VENDOR = "vendor/llama.cpp"
_TARGET = "llama-server"
_MARKER = "build.json"  # written last: a folder without it is not an install
_TAIL = 25

# Everything llama-server does not need is off; nothing may reach the network at build
# time (the prebuilt web UI would be fetched from a model hub: off, and no web UI).
_BASE_CMAKE_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
)
_BACKEND_ARGS = {"cpu": (), "metal": ("-DGGML_METAL=ON",), "cuda": ("-DGGML_CUDA=ON",)}


@dataclass(frozen=True)
class BuildPlan:
    """What to build: which source, for which back-end, with which extra cmake flags."""

    source_version: str = PINNED_SOURCE
    backend: str = "cpu"  # cpu, metal or cuda
    source_dir: str | None = None  # a llama.cpp checkout to build instead of the pinned sdist
    extra_cmake_args: tuple[str, ...] = ()
    jobs: int = field(default_factory=lambda: os.cpu_count() or 2)

    @property
    def name(self) -> str:
        if self.source_dir:  # one build per checkout folder
            digest = hashlib.sha256(self.source_dir.encode()).hexdigest()[:10]
            return f"local-{digest}-{self.backend}"
        return f"{self.source_version}-{self.backend}"

    def cmake_args(self) -> list[str]:
        return [*_BASE_CMAKE_ARGS, *_BACKEND_ARGS[self.backend], *self.extra_cmake_args]


def plan_build(options: Mapping[str, Any]) -> BuildPlan:
    """The build the options ask for. ``build_backend = "auto"`` (the default) picks Metal
    on Apple silicon, CUDA where ``nvcc`` is on PATH and an NVIDIA GPU is present, the
    CPU otherwise (a CUDA toolkit alone, as on CI images, is no GPU to build for)."""
    backend = str(options.get("build_backend", "auto")).lower()
    if backend == "auto":
        if sys.platform == "darwin" and platform.machine() == "arm64":
            backend = "metal"
        elif shutil.which("nvcc") and _nvidia_gpu_present():
            backend = "cuda"
        else:
            backend = "cpu"
    if backend not in _BACKEND_ARGS:
        raise EngineUnavailable(
            f"unknown build_backend {backend!r} for llama-server",
            hint="[engines.llamacpp] build_backend is one of: auto, " + ", ".join(_BACKEND_ARGS),
            code="invalid_config",
        )
    source_dir = options.get("source_dir")
    return BuildPlan(
        source_dir=str(Path(str(source_dir)).expanduser().resolve()) if source_dir else None,
        source_version=str(options.get("source_version", PINNED_SOURCE)),
        backend=backend,
        extra_cmake_args=tuple(str(a) for a in options.get("cmake_args", ())),
    )


def _nvidia_gpu_present() -> bool:
    return Path("/dev/nvidiactl").exists() or Path("/dev/nvidia0").exists()


def install_dir(engines_dir: Path, plan: BuildPlan) -> Path:
    return engines_dir / "llamacpp" / plan.name


def installed_binary(engines_dir: Path, plan: BuildPlan) -> Path | None:
    """The built binary, only if its build finished (the marker file is written last)."""
    folder = install_dir(engines_dir, plan)
    binary = folder / "bin" / _TARGET
    return binary if (folder / _MARKER).is_file() and binary.is_file() else None


def _tool(name: str) -> str | None:
    """A build tool on PATH, or beside this Python (pip's ``cmake`` / ``ninja`` wheels)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else None


def _compiler() -> str | None:
    return next((c for c in (os.environ.get("CXX"), "c++", "g++", "clang++") if c and shutil.which(c)), None)


def missing_tools(plan: BuildPlan) -> str | None:
    """What the build lacks on this host (None: it can build). Blocking: PATH walks."""
    missing = []
    if _tool("cmake") is None:
        missing.append("cmake")
    if _compiler() is None:
        missing.append("a C++ compiler")
    if plan.backend == "cuda" and not shutil.which("nvcc"):
        missing.append("nvcc (CUDA toolkit)")
    return ", ".join(missing) or None


class StepParser:
    """Turns a build's output lines into (done, total) steps: ninja's ``[12/206]`` and
    make's ``[ 45%]`` (as steps out of 100)."""

    _NINJA = re.compile(r"^\[(\d+)/(\d+)\]")
    _MAKE = re.compile(r"^\[\s*(\d+)%\]")

    def parse(self, line: str) -> tuple[int, int] | None:
        if match := self._NINJA.match(line):
            return int(match[1]), int(match[2])
        if match := self._MAKE.match(line):
            return int(match[1]), 100
        return None


class _Run:
    """One build command, its output reported as progress and kept for an error."""

    def __init__(self, ctx: EngineContext, what: str) -> None:
        self.ctx = ctx
        self.what = what
        self.tail: list[str] = []
        self.steps = StepParser()

    def on_line(self, line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        self.tail = [*self.tail[-(_TAIL - 1) :], line]
        step = self.steps.parse(line)
        if step is not None:
            done, total = step
            self.ctx.progress(f"{self.what}: {line[:160]}", done=done, total=total, unit="steps")
        else:
            self.ctx.progress(f"{self.what}: {line[:160]}")

    async def __call__(self, argv: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        process = await self.ctx.spawn(
            "llamacpp-build", [str(a) for a in argv], env=env, cwd=str(cwd) if cwd else None, on_line=self.on_line
        )
        try:
            code = await process.wait()
        except BaseException:
            await process.stop()  # cancelled (job cancel, stall, daemon stop): leave nothing running
            raise
        if code != 0:
            raise EngineUnavailable(
                f"building llama-server failed while {self.what} (exit {code})",
                hint="its last output:\n" + "\n".join(self.tail[-15:])
                + "\nset [engines.llamacpp] server_binary to a llama-server you have, or server = \"python\"",
                code="engine_install_failed",
            )


def _build_env() -> dict[str, str]:
    env = dict(os.environ)
    # The helpers' own bin dir first, so pip-installed cmake/ninja are found by each other.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    return env


def _extract_vendor(sdist: Path, into: Path) -> Path:
    """Unpack only ``vendor/llama.cpp`` from the sdist (blocking: run in a thread)."""
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/", 1)[0]
        prefix = f"{top}/{_VENDOR}/"
        members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
        if not members:
            raise EngineUnavailable(
                f"{sdist.name} carries no {_VENDOR}: it cannot build llama-server",
                hint="set [engines.llamacpp] source_version to a llama-cpp-python release that vendors llama.cpp",
                code="engine_install_failed",
            )
        # The "data" filter refuses links and paths outside ``into`` (Python ≥ 3.11.4).
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(into, members=members, **safe)
    return into / top / _VENDOR


async def _fetch_source(ctx: EngineContext, plan: BuildPlan, work: Path, python: str, env: dict[str, str]) -> Path:
    """The pinned sdist from the package index (pip: the user's index, proxy and
    certificates apply), unpacked down to its vendored llama.cpp."""
    ctx.progress(f"fetching the llama.cpp source ({_SDIST} {plan.source_version} sdist) from the package index")
    await _Run(ctx, "fetching the source")(
        [python, "-m", "pip", "download", "--no-deps", "--no-binary", _SDIST,
         "--progress-bar", "off", "-d", str(work), f"{_SDIST}=={plan.source_version}"],
        env=env,
    )  # fmt: skip
    sdists = await ctx.run_sync(lambda: sorted(work.glob("*.tar.gz")))
    if not sdists:
        raise EngineUnavailable(
            f"pip download gave no source archive for {_SDIST}=={plan.source_version}",
            code="engine_install_failed",
        )
    ctx.progress(f"unpacking {sdists[0].name}")
    return await ctx.run_sync(_extract_vendor, sdists[0], work / "src")


def _remove_stale_builds(parent: Path) -> None:
    """Temporary folders of builds whose process is gone (killed mid-build)."""
    for stale in parent.glob(".build-*"):
        pid = stale.name.split("-")[1] if stale.name.count("-") >= 2 else ""
        alive = pid.isdigit() and Path(f"/proc/{pid}").exists() and int(pid) != os.getpid()
        if not alive:
            shutil.rmtree(stale, ignore_errors=True)


def _install(binary: Path, work: Path, destination: Path, plan: BuildPlan, version: str | None) -> Path:
    """Stage the binary with its marker and rename the folder into place (atomic)."""
    staged = work / "install"
    (staged / "bin").mkdir(parents=True)
    shutil.copy2(binary, staged / "bin" / _TARGET)
    record = {
        "source": plan.source_dir or f"{_SDIST}=={plan.source_version} ({_VENDOR})",
        "backend": plan.backend,
        "cmake_args": plan.cmake_args(),
        "version": version,
        "built_at": time.time(),
    }
    (staged / _MARKER).write_text(json.dumps(record, indent=2) + "\n")
    if destination.exists():  # an unfinished earlier install (no marker): replace it
        shutil.rmtree(destination)
    os.rename(staged, destination)
    return destination / "bin" / _TARGET


async def build_llama_server(ctx: EngineContext, plan: BuildPlan, *, python: str = sys.executable) -> Path:
    """Fetch the pinned source, build ``llama-server`` and install it; returns the binary.

    The caller holds the single-flight lock and has checked that no build exists yet.
    """
    destination = install_dir(ctx.engines_dir, plan)
    parent = destination.parent
    await ctx.run_sync(lambda: parent.mkdir(parents=True, exist_ok=True))
    await ctx.run_sync(_remove_stale_builds, parent)
    work = parent / f".build-{os.getpid()}-{time.monotonic_ns()}"
    await ctx.run_sync(work.mkdir)
    env = _build_env()
    try:
        source = Path(plan.source_dir) if plan.source_dir else await _fetch_source(ctx, plan, work, python, env)
        build = work / "build"
        generator = ["-G", "Ninja"] if _tool("ninja") else []
        cmake = _tool("cmake") or "cmake"
        ctx.progress(f"configuring llama.cpp for {plan.backend}")
        await _Run(ctx, "configuring")([cmake, "-S", source, "-B", build, *generator, *plan.cmake_args()], env=env)
        ctx.progress(f"compiling llama-server with {plan.jobs} jobs (about 10 minutes on 2 cores)")
        await _Run(ctx, "compiling")(
            [cmake, "--build", build, "--target", _TARGET, "--parallel", str(plan.jobs)], env=env
        )
        built = await ctx.run_sync(lambda: next((p for p in build.rglob(_TARGET) if p.is_file()), None))
        if built is None:
            raise EngineUnavailable("the build finished but produced no llama-server", code="engine_install_failed")
        version = await probe_version(str(built))
        if version is None:
            raise EngineUnavailable(
                f"the llama-server just built ({built}) does not run",
                hint="the build log is in the daemon's engine logs",
                code="engine_install_failed",
            )
        installed = await ctx.run_sync(_install, built, work, destination, plan, version)
        log.info("llama-server built", path=str(installed), version=version, backend=plan.backend)
        return installed
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(work, ignore_errors=True))


def read_build_record(binary: Path) -> dict[str, Any] | None:
    """What ltcai recorded of a build it made (blocking; None for other binaries)."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads((binary.parent.parent / _MARKER).read_text())
    return None


def _print_binary() -> int:
    """``python -m ltcai.engines.llama_server_build --print-binary``: the llama-server the
    llamacpp engine would run with the user's settings (config, PATH, ltcai's build), for
    scripts (``scripts/test`` puts its folder on PATH). Exit 1 when there is none."""
    from ..config.settings import load_settings
    from .llama_server import find_server_binary

    settings = load_settings()
    options = settings.engines.get("llamacpp", {})
    binary = find_server_binary(options, installed_binary(settings.paths.engines_dir, plan_build(options)))
    if binary is None:
        print("no llama-server: run `ltcai engines install llamacpp`", file=sys.stderr)
        return 1
    print(binary.path)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["--print-binary"]:
        print("usage: python -m ltcai.engines.llama_server_build --print-binary", file=sys.stderr)
        sys.exit(2)
    sys.exit(_print_binary())
