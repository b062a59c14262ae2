"""Run every benchmark and write ``bench/results.md``.

    .venv/bin/python bench/run_all.py            # the full run (~10 minutes on 2 cores)
    .venv/bin/python bench/run_all.py --quick    # fewer samples, to check it works
    .venv/bin/python bench/run_all.py --only chat proxy --out /tmp/r.md

Every figure that has a direct path is given as a ratio against it, measured in the
same run; the summary compares the figures with the issues' targets. Nothing here
asserts: a missed target is reported, not raised.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_chat  # noqa: E402
import bench_control  # noqa: E402
import bench_download  # noqa: E402
import bench_postprocess  # noqa: E402
import bench_prepare  # noqa: E402
import bench_proxy  # noqa: E402
import bench_servers  # noqa: E402
import bench_startup  # noqa: E402
import bench_stream_cpu  # noqa: E402
from _common import BENCH_DIR, BenchEnv, Section, fmt, load_average, log, machine_info  # noqa: E402

BENCHMARKS = {
    "startup": bench_startup,
    "control": bench_control,
    "chat": bench_chat,
    "proxy": bench_proxy,
    "postprocess": bench_postprocess,
    "prepare": bench_prepare,
    "download": bench_download,
    "servers": bench_servers,
    "stream_cpu": bench_stream_cpu,
}


def _summary(sections: list[Section]) -> list[str]:
    lines = ["## Summary against the targets", "", "| what | measured | target | met |", "|---|---|---|---|"]
    for section in sections:
        for t in section.targets:
            met = {True: "yes", False: "**no**", None: "n/a"}[t.met]
            note = f" ({t.note})" if t.note else ""
            lines.append(f"| {t.what}{note} | {fmt(t.value, 3)} {t.unit} | ≤ {t.limit:g} {t.unit} | {met} |")
    problems = [p for s in sections for p in s.problems]
    if problems:
        lines += ["", "Problems seen:", "", *(f"- {p}" for p in problems)]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run of the benchmarks)")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results.md")
    args = parser.parse_args(argv)

    names = args.only or list(BENCHMARKS)
    env = BenchEnv(quick=args.quick)
    info = machine_info()
    load_before = load_average()
    sections: list[Section] = []
    started = time.monotonic()
    try:
        for name in names:
            log(f"== {name}")
            try:
                sections.append(BENCHMARKS[name].run(env))
            except Exception:  # noqa: BLE001 — one broken benchmark must not lose the others' figures
                section = Section(f"{name}: did not finish")
                section.add("```", traceback.format_exc().rstrip(), "```")
                section.problems.append(f"the {name} benchmark failed (see its section)")
                sections.append(section)
    finally:
        env.close()

    header = [
        "# ltcai benchmark results",
        "",
        f"Reproduce: `.venv/bin/python bench/run_all.py{' --quick' if args.quick else ''}"
        f"{' --only ' + ' '.join(names) if args.only else ''}` "
        f"(took {time.monotonic() - started:.0f} s). Ratios are against the direct path measured in the same run.",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in info.items()),
        f"| load average before / after | {load_before} / {load_average()} |",
        "",
    ]
    text = "\n".join(header + _summary(sections)) + "\n\n" + "\n".join(s.markdown() for s in sections)
    args.out.write_text(text)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
