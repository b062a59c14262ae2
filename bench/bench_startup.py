"""Daemon start to socket-ready, and idle RSS (issue 3 item 8).

Each run spawns ``python -m ltcai serve`` with a fresh data/config dir and polls
``GET /status`` on its socket every millisecond; ready = the first 200. One second
after that, VmRSS is read from /proc. The floor is a bare interpreter importing what
the daemon's server stack needs (``anyio, httpx, starlette, uvicorn``), timed from
spawn to exit, its RSS read by itself at the end.
"""

from __future__ import annotations

import subprocess
import time

from _common import PYTHON, BenchEnv, Daemon, Dist, Section, Target, dist_header, dist_row, fmt, log, rss_kib

TITLE = "1. Daemon start to socket-ready, idle RSS"

_FLOOR_CODE = (
    "import anyio, httpx, starlette, uvicorn\n"
    "for l in open('/proc/self/status'):\n"
    "    l.startswith(('VmRSS', 'VmHWM')) and print(l.split()[1])\n"
)
_IMPORT_CODE = "import ltcai.daemon.app"


def _floor(code: str) -> tuple[float, int]:
    started = time.perf_counter_ns()
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True).stdout
    elapsed = (time.perf_counter_ns() - started) / 1e6
    rss = int(out.split()[0]) if out.strip() else 0
    return elapsed, rss


def _importtime_top(limit: int = 8) -> list[tuple[str, int]]:
    """The modules with the largest cumulative import time under ``import ltcai.daemon.app``."""
    result = subprocess.run([PYTHON, "-X", "importtime", "-c", _IMPORT_CODE], capture_output=True, text=True)
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line[len("import time:") :].split("|"))
        if cumulative.isdigit():
            rows.append((name.strip(), int(cumulative)))
    top_level = [(n, us) for n, us in rows if not n.startswith(("ltcai.daemon.app",))]
    third_party = {}
    for name, us in top_level:
        root = name.split(".")[0]
        if root != "ltcai" and name == root:
            third_party[root] = max(third_party.get(root, 0), us)
    return sorted(third_party.items(), key=lambda item: -item[1])[:limit]


def run(env: BenchEnv) -> Section:
    section = Section(TITLE)
    runs = 3 if env.quick else 10
    ready, idle_rss, peak_rss = [], [], []
    log(f"startup: {runs} daemon starts")
    for i in range(runs + 1):  # the first warms the page cache and is not counted
        daemon = Daemon(http=False, name="st")
        try:
            ms = daemon.start()
            time.sleep(1.0)
            rss, hwm = rss_kib(daemon.pid)
        finally:
            daemon.cleanup()
        if i:
            ready.append(ms)
            idle_rss.append(rss / 1024)
            peak_rss.append(hwm / 1024)
    floors, floor_rss = [], []
    bare = []
    for i in range(runs + 1):
        ms, rss = _floor(_FLOOR_CODE)
        bare_ms, _ = _floor("pass")
        if i:
            floors.append(ms)
            floor_rss.append(rss / 1024)
            bare.append(bare_ms)
    d_ready, d_floor, d_bare = Dist.of(ready), Dist.of(floors), Dist.of(bare)
    d_rss, d_floor_rss = Dist.of(idle_rss), Dist.of(floor_rss)
    section.add(
        f"`python -m ltcai serve` (Unix socket only, fresh state dir), spawn → first 200 on `GET /status`; "
        f"polled every 1 ms. N={runs} after one uncounted warm-up.",
        "",
        dist_header("ms", with_ratio=True).replace("vs direct", "vs floor"),
        dist_row("ltcai serve → socket ready", d_ready, 1, d_floor),
        dist_row("floor: `python -c 'import anyio, httpx, starlette, uvicorn'` (to exit)", d_floor, 1, d_floor),
        dist_row("bare `python -c pass`", d_bare, 1, d_floor),
        "",
        "| RSS (MiB) | N | p50 | max | vs floor (p50) |",
        "|---|---|---|---|---|",
        f"| ltcai idle, 1 s after ready (VmRSS) | {d_rss.n} | {fmt(d_rss.p50, 1)} | {fmt(d_rss.max, 1)} | "
        f"{d_rss.p50 / d_floor_rss.p50:.2f}× |",
        f"| ltcai peak (VmHWM) | {len(peak_rss)} | {fmt(Dist.of(peak_rss).p50, 1)} | {fmt(max(peak_rss), 1)} | |",
        f"| floor (imports above, VmRSS) | {d_floor_rss.n} | {fmt(d_floor_rss.p50, 1)} | {fmt(d_floor_rss.max, 1)} | 1.00× |",
    )
    top = _importtime_top()
    if top:
        section.add(
            "",
            "Largest third-party imports under `import ltcai.daemon.app` (`-X importtime`, cumulative, one run):",
            "",
            "| module | ms |",
            "|---|---|",
            *(f"| {name} | {us / 1000:.1f} |" for name, us in top),
        )
    section.targets += [
        Target("daemon start → socket ready, p50", d_ready.p50, 300, "ms"),
        Target("daemon start → socket ready, p90", d_ready.p90, 300, "ms"),
        Target("idle RSS after start, p50", d_rss.p50, 60, "MiB"),
    ]
    return section
