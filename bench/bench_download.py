"""Download throughput: ltcai's resumable downloader against curl, same loopback file.

One file of random bytes is served by ``_fast_upstream.py`` (sendfile, Range support).
ltcai's path is ``ltcai.engines.resumable.fetch`` — what the llama.cpp engine runs for
a Hugging Face GGUF — with the size and sha256 known: it writes ``.partial`` in a
worker thread, hashes while it downloads, fsyncs, and renames into place. curl writes
the file and nothing else; ``curl | sha256sum`` is what a careful user would run by hand.
Runs alternate; every output is deleted before the next run (no page-cache reuse of
the destination).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import anyio
import httpx

from _common import BenchEnv, Dist, Section, Target, fmt, log
from bench_proxy import start_upstream
from ltcai.engines.base import EngineContext
from ltcai.engines.resumable import fetch

TITLE = "7. Download throughput vs curl (loopback)"


def _progress(message: str, *, done: float | None = None, total: float | None = None, unit: str | None = None) -> None:
    pass


async def _httpx_only(url: str) -> None:
    """The transport alone: httpx reading the body and dropping it (no write, no hash)."""
    async with httpx.AsyncClient() as http, http.stream("GET", url) as response:
        async for _chunk in response.aiter_bytes(1 << 20):
            pass


async def _ltcai_fetch(url: str, dest: Path, size: int, sha256: str) -> None:
    async with httpx.AsyncClient() as http:
        ctx = EngineContext(
            options={},
            models_dir=dest.parent,
            engines_dir=dest.parent,
            logs_dir=dest.parent,
            spawn=None,  # type: ignore[arg-type]  # downloads never spawn
            http=http,
            progress=_progress,
            run_sync=anyio.to_thread.run_sync,
        )
        await fetch(ctx, url, dest, size=size, sha256=sha256)


def run(env: BenchEnv) -> Section:
    section = Section(TITLE)
    if shutil.which("curl") is None:
        section.add("curl is not installed: nothing to compare against.")
        section.problems.append("download benchmark skipped: no curl")
        return section
    mib = 64 if env.quick else 256
    runs = 2 if env.quick else 5
    root = Path(tempfile.mkdtemp(prefix="ltbdl", dir="/tmp"))
    source = root / "model.bin"
    data = os.urandom(mib << 20)
    source.write_bytes(data)
    sha256 = hashlib.sha256(data).hexdigest()
    del data
    upstream, port = start_upstream("--file", str(source))
    url = f"http://127.0.0.1:{port}/file"
    samples: dict[str, list[float]] = {"curl": [], "curl_sha": [], "httpx": [], "ltcai": []}
    try:
        for i in range(runs + 1):
            log(f"download: run {i + 1}/{runs + 1} ({mib} MiB)")
            out = root / "out.bin"
            timings = {}
            started = time.perf_counter()
            subprocess.run(["curl", "-sS", "-o", str(out), url], check=True)
            timings["curl"] = time.perf_counter() - started
            out.unlink()
            started = time.perf_counter()
            subprocess.run(f"curl -sS {url} | tee {out} | sha256sum >/dev/null", shell=True, check=True)
            timings["curl_sha"] = time.perf_counter() - started
            out.unlink()
            started = time.perf_counter()
            anyio.run(_httpx_only, url)
            timings["httpx"] = time.perf_counter() - started
            started = time.perf_counter()
            anyio.run(_ltcai_fetch, url, out, mib << 20, sha256)
            timings["ltcai"] = time.perf_counter() - started
            out.unlink()
            if i:
                for key, seconds in timings.items():
                    samples[key].append(mib / seconds)
    finally:
        upstream.kill()
        upstream.wait()
        shutil.rmtree(root, ignore_errors=True)
    d = {k: Dist.of(v) for k, v in samples.items()}
    section.add(
        f"{mib} MiB of random bytes, N={runs} runs of each after one uncounted round. Figures in MiB/s (higher is better).",
        "",
        "| | N | p50 MiB/s | min | max | vs curl (p50) |",
        "|---|---|---|---|---|---|",
        *(
            f"| {label} | {d[k].n} | {fmt(d[k].p50, 0)} | {fmt(d[k].min, 0)} | {fmt(d[k].max, 0)} | "
            f"{d[k].p50 / d['curl'].p50:.3f}× |"
            for k, label in (
                ("curl", "`curl -o`"),
                ("curl_sha", "`curl \\| tee \\| sha256sum`"),
                ("httpx", "httpx alone, body dropped (ltcai's transport, the ceiling)"),
                ("ltcai", "ltcai `resumable.fetch` (hash + fsync + rename)"),
            )
        ),
        "",
        f"ltcai's downloader reaches {d['ltcai'].p50 / d['httpx'].p50:.0%} of what httpx alone reads: "
        "writing and hashing overlap the network reads; the gap to curl is httpx's read path "
        "(64 KiB reads through h11 in Python).",
    )
    section.targets.append(
        Target("download throughput shortfall vs curl (1 − p50 ratio)", 1 - d["ltcai"].p50 / d["curl"].p50, 0.2, "", "no issue target; a guide")
    )
    return section
