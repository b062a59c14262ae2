"""Prepare-to-READY of ``smollm2`` against starting the raw engine by hand.

- raw: the engine ltcai starts, started by hand: the command line the daemon gave it
  (read from ``/proc/PID/cmdline`` of the engine it served, so the same binary, model,
  slots and context; only the port differs), polled every 5 ms until it is ready
  (llama-server: ``/health`` says 200; llama_cpp.server: ``/v1/models`` answers), then
  the smoke prompt with the profile's parameters (what ``ltcai prepare`` sends);
- ltcai, cold: a fresh daemon (already listening, its start-up is section 1), then
  ``POST /prepare smollm2`` streamed to the report: resolution, engine check, verifying
  the bundled file's sha256, the same server start, the smoke test, classification, the
  ``context`` probe (one GET), the profile saved;
- ltcai, warm: the same daemon after ``unload``: the file's hash is remembered, so this
  is the orchestration a user meets on every later prepare;
- ltcai, restarted: the same data dir, a new daemon (a reboot, ``ltcai service restart``):
  the file's hash is remembered on disk (``models/.verified.json``), the rest is cold.

Each round runs cold / warm / raw (raw needs the command line the round's daemon used),
so drift hits all three; ratios are against raw.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx

from _common import (
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


def smoke_params() -> dict:
    """What ``ltcai prepare`` sends for SmolLM2's smoke test: its profile's parameters (built
    as the daemon builds it, from the GGUF's own metadata), 64 tokens, the fixed seed."""
    from ltcai.compat import build_profile, generation_params
    from ltcai.daemon.chat import SMOKE_SEED
    from ltcai.engines.gguf_metadata import read_gguf_metadata

    profile = build_profile("smollm2-135m-instruct-q4_1", "llamacpp", metadata=read_gguf_metadata(smollm2_path()))
    return {**generation_params(profile, {"max_tokens": 64}), "seed": SMOKE_SEED}


def engine_command(daemon: Daemon) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of the engine the daemon serves smollm2 with."""
    served = next(m for m in daemon.get("/models")["models"] if m["input_id"] == "smollm2")
    if not served.get("pid"):
        raise RuntimeError("the daemon serves smollm2 without a process of its own")
    proc = Path(f"/proc/{served['pid']}")
    argv = proc.joinpath("cmdline").read_bytes().decode().split("\0")[:-1]
    env = dict(v.split("=", 1) for v in proc.joinpath("environ").read_bytes().decode().split("\0") if "=" in v)
    return argv, env


def _on_port(argv: list[str], port: int) -> list[str]:
    argv = list(argv)
    argv[argv.index("--port") + 1] = str(port)
    return argv


def raw_engine_ms(argv: list[str], env: dict[str, str], params: dict) -> tuple[float, float, str]:
    """(ms spawn → ready, ms spawn → smoke answer read, the answer), for the engine started
    with ``argv``."""
    port = free_port()
    python_server = "llama_cpp.server" in argv
    ready_path = "/v1/models" if python_server else "/health"  # llama-server: 503 while loading
    started = time.perf_counter_ns()
    process = subprocess.Popen(_on_port(argv, port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not http_get_ok(port, ready_path):
            if process.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited while starting")
            time.sleep(0.005)
        ready = time.perf_counter_ns()
        body = {"model": "smollm2", "messages": [{"role": "user", "content": SMOKE_PROMPT}], **params}
        response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=120)
        response.raise_for_status()
        done = time.perf_counter_ns()
        answer = response.json()["choices"][0]["message"].get("content") or ""
    finally:
        process.terminate()
        process.wait(timeout=30)
    return (ready - started) / 1e6, (done - started) / 1e6, answer


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
    raw_ready, raw_total, cold, warm, restarted = [], [], [], [], []
    stages: dict[str, list[float]] = {}
    answers, raw_answers = set(), set()
    params = smoke_params()
    for i in range(runs + 1):  # the first run of each warms the page cache, not counted
        log(f"prepare: run {i + 1}/{runs + 1}")
        daemon = Daemon(http=False, name="pr")
        try:
            daemon.start()
            c_ms, report = _prepare_ms(daemon)
            daemon.post("/models/unload", {"model": "smollm2"})
            w_ms, w_report = _prepare_ms(daemon)
            argv, engine_env = engine_command(daemon)
            daemon.stop()
            daemon.start()
            s_ms, _report = _prepare_ms(daemon)
        finally:
            daemon.cleanup()  # the engine stops with it: the raw one gets the machine to itself
        r_ready, r_total, r_answer = raw_engine_ms(argv, engine_env, params)
        if i:
            raw_ready.append(r_ready)
            raw_total.append(r_total)
            cold.append(c_ms)
            warm.append(w_ms)
            restarted.append(s_ms)
            answers.add((report.get("smoke_test") or {}).get("answer"))
            raw_answers.add(r_answer)
            for state, ms in _stage_ms(w_report).items():
                stages.setdefault(state, []).append(ms)
    d_raw, d_cold, d_warm, d_restarted = Dist.of(raw_total), Dist.of(cold), Dist.of(warm), Dist.of(restarted)
    section.add(
        f"The raw engine: `{' '.join(Path(a).name if a.startswith('/') else a for a in argv)}` (paths shortened). "
        f"N={runs} of each, after one uncounted round. The smoke answers seen, ltcai's: "
        + ", ".join(json.dumps(a, ensure_ascii=False) for a in sorted(a for a in answers if a))
        + "; the raw engine's (same parameters and seed, not post-processed): "
        + ", ".join(json.dumps(a, ensure_ascii=False) for a in sorted(raw_answers)) + ".",
        "",
        dist_header("ms", with_ratio=True).replace("vs direct", "vs raw"),
        dist_row("raw: spawn → ready", Dist.of(raw_ready), 0),
        dist_row("raw: spawn → smoke answer", d_raw, 0, d_raw),
        dist_row("ltcai prepare, cold daemon → report", d_cold, 0, d_raw),
        dist_row("ltcai prepare after unload → report", d_warm, 0, d_raw),
        dist_row("ltcai prepare, restarted daemon → report", d_restarted, 0, d_raw),
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
            "a new data dir: includes hashing the 98 MB bundled file once",
        ),
        Target("prepare → READY overhead vs raw engine, restarted daemon (p50 ratio − 1)", d_restarted.p50 / d_raw.p50 - 1, 0.15, ""),
    ]
    return section
