"""Prepare-to-READY of ``smollm2`` against starting the raw engine by hand.

- raw: spawn ``python -m llama_cpp.server`` on the bundled GGUF, poll ``/v1/models``
  every 5 ms until it answers, send the smoke prompt with the profile's parameters
  (what ``ltcai prepare`` sends), read the answer;
- ltcai, cold: a fresh daemon (already listening, its start-up is section 1), then
  ``POST /prepare smollm2`` streamed to the report: resolution, engine check (a
  subprocess of the engine's Python), verifying the bundled file's sha256, the same
  server start, the smoke test, classification, the profile saved;
- ltcai, warm: the same daemon after ``unload``: the file's hash is remembered, so this
  is the orchestration a user meets on every later prepare.

Runs alternate raw / cold / warm so drift hits all three; ratios are against raw.
"""

from __future__ import annotations

import json
import subprocess
import time

import httpx

from _common import (
    PYTHON,
    SMOKE_PROMPT,
    BenchEnv,
    Daemon,
    Dist,
    Section,
    Target,
    dist_header,
    dist_row,
    fmt,
    free_port,
    http_get_ok,
    log,
    smollm2_path,
)

TITLE = "6. Prepare to READY vs starting the raw engine (smollm2)"
# The smoke request ltcai sends for SmolLM2 (its profile: ChatML, family "unknown" defaults).
_SMOKE_PARAMS = {"temperature": 0.2, "top_p": 0.9, "max_tokens": 64, "stop": ["<|im_end|>", "<|endoftext|>", "</s>", "<|user|>", "<|assistant|>"]}


def raw_engine_ms() -> tuple[float, float]:
    """(ms spawn → /v1/models answers, ms spawn → smoke answer read)."""
    port = free_port()
    started = time.perf_counter_ns()
    process = subprocess.Popen(
        [PYTHON, "-m", "llama_cpp.server", "--model", str(smollm2_path()), "--model_alias", "smollm2",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while not http_get_ok(port, "/v1/models"):
            if process.poll() is not None:
                raise RuntimeError("llama_cpp.server exited while starting")
            time.sleep(0.005)
        ready = time.perf_counter_ns()
        body = {"model": "smollm2", "messages": [{"role": "user", "content": SMOKE_PROMPT}], **_SMOKE_PARAMS}
        response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120)
        response.raise_for_status()
        done = time.perf_counter_ns()
    finally:
        process.terminate()
        process.wait(timeout=30)
    return (ready - started) / 1e6, (done - started) / 1e6


def _prepare_ms(daemon: Daemon) -> tuple[float, dict]:
    started = time.perf_counter_ns()
    report = daemon.prepare("smollm2")
    took = (time.perf_counter_ns() - started) / 1e6
    if not report.get("ready_to_chat"):
        raise RuntimeError(f"smollm2 did not become ready: {report.get('message')}")
    return took, report


def _stage_ms(report: dict) -> dict[str, float]:
    """ms spent in each state after the first: a stage log line is written as its step ends."""
    logs = report.get("stage_logs") or []
    out: dict[str, float] = {}
    for a, b in zip(logs, logs[1:], strict=False):
        out[b["state"]] = out.get(b["state"], 0.0) + (b["time"] - a["time"]) * 1000
    return out


def run(env: BenchEnv) -> Section:
    section = Section(TITLE)
    runs = 2 if env.quick else 5
    raw_ready, raw_total, cold, warm = [], [], [], []
    stages: dict[str, list[float]] = {}
    answers = set()
    for i in range(runs + 1):  # the first run of each warms the page cache, not counted
        log(f"prepare: run {i + 1}/{runs + 1}")
        r_ready, r_total = raw_engine_ms()
        daemon = Daemon(http=False, name="pr")
        try:
            daemon.start()
            c_ms, report = _prepare_ms(daemon)
            daemon.post("/models/unload", {"model": "smollm2"})
            w_ms, w_report = _prepare_ms(daemon)
        finally:
            daemon.cleanup()
        if i:
            raw_ready.append(r_ready)
            raw_total.append(r_total)
            cold.append(c_ms)
            warm.append(w_ms)
            answers.add((report.get("smoke_test") or {}).get("answer"))
            for state, ms in _stage_ms(w_report).items():
                stages.setdefault(state, []).append(ms)
    d_raw, d_cold, d_warm = Dist.of(raw_total), Dist.of(cold), Dist.of(warm)
    section.add(
        f"N={runs} of each, after one uncounted round. The smoke answers seen: "
        + ", ".join(json.dumps(a, ensure_ascii=False) for a in sorted(a for a in answers if a)) + ".",
        "",
        dist_header("ms", with_ratio=True).replace("vs direct", "vs raw"),
        dist_row("raw: spawn → /v1/models answers", Dist.of(raw_ready), 0),
        dist_row("raw: spawn → smoke answer", d_raw, 0, d_raw),
        dist_row("ltcai prepare, cold daemon → report", d_cold, 0, d_raw),
        dist_row("ltcai prepare after unload → report", d_warm, 0, d_raw),
        "",
        "Where a warm prepare's time goes (ms, p50 per state, from the report's stage log):",
        "",
        "| state | p50 ms |",
        "|---|---|",
        *(f"| {state} | {fmt(Dist.of(v).p50, 1)} |" for state, v in stages.items()),
    )
    section.targets += [
        Target("prepare → READY overhead vs raw engine, warm (p50 ratio − 1)", d_warm.p50 / d_raw.p50 - 1, 0.15, ""),
        Target(
            "prepare → READY overhead vs raw engine, cold daemon (p50 ratio − 1)",
            d_cold.p50 / d_raw.p50 - 1,
            0.15,
            "",
            "includes hashing the 98 MB bundled file once",
        ),
    ]
    return section
