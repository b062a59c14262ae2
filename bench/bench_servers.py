"""llama.cpp's two servers, and llama-server through ltcai: SmolLM2, streaming, 1/4/16 clients.

Three paths to the same model file, same request (streaming, temperature 0, a prompt
that never ends before ``max_tokens``):

- through ltcai: the daemon's ``/v1/chat/completions`` on loopback TCP, served by the
  ``llama-server`` the daemon started (its default);
- llama-server direct: the same ``llama-server`` process, straight on its port;
- llama_cpp.server direct: llama-cpp-python's server, started here as ltcai started it
  before (``--interrupt_requests false``), on the same file.

Each client runs a closed loop (one request, then the next), a new connection per
request (llama-server closes some reused keep-alive connections under load; a new
connection costs ~0.1 ms on loopback). Rounds interleave the three paths so drift of
the machine hits each alike. Tokens: the completion tokens the answer's ``finish_reason``
and ``usage`` say (``stream_options.include_usage``; llama_cpp.server sends no usage, and
does not merge chunks: its content events are its tokens). Content events would
undercount ltcai, whose post-processing holds back a chunk that might begin a marker
and sends it with the next.

Run it on a quiet machine: llama.cpp's threads spin at barriers, so another busy process
on 2 cores slows its batches several-fold (a first run beside a test suite measured
llama-server at 26 tok/s for 16 clients).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import dataclass, field

from _common import PYTHON, BenchEnv, Dist, Section, Target, fmt, free_port, http_get_ok, log, smollm2_path
from _paired import Endpoint, StreamSample, _stream

TITLE = "8. llama-server vs llama_cpp.server, and llama-server through ltcai (SmolLM2, streaming)"
MAX_TOKENS = 48
PROMPT = "Count from one to one hundred in words, separated by commas."
CONCURRENCY = (1, 4, 16)


@dataclass
class Run:
    samples: list[StreamSample] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")

    def ttft_ms(self) -> Dist:
        return Dist.of(s.ttft_ns / 1e6 for s in self.samples)

    def gaps_ms(self) -> Dist:
        return Dist.of(g / 1e6 for s in self.samples for g in s.gaps_ns)


def _body(model: str) -> bytes:
    return json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": PROMPT}],
            "temperature": 0.0,
            "max_tokens": MAX_TOKENS,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()


async def _closed_loop(endpoint: Endpoint, body: bytes, clients: int, per_client: int) -> Run:
    run = Run()

    async def client() -> None:
        for _ in range(per_client):
            conn = await endpoint.connect()
            try:
                sample = await _stream(conn, endpoint, body)
            finally:
                await conn.close()
            run.samples.append(sample)
            run.tokens += _completion_tokens(sample)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    run.seconds = time.perf_counter() - started
    return run


def _completion_tokens(sample: StreamSample) -> int:
    """The answer's completion tokens from its usage, else its content events."""
    tokens = (sample.usage or {}).get("completion_tokens")
    return int(tokens) if tokens else sample.content_events


def _start_python_server(port: int) -> subprocess.Popen[bytes]:
    argv = [
        PYTHON, "-m", "llama_cpp.server", "--model", str(smollm2_path()), "--model_alias", "smollm2",
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--interrupt_requests", "false",
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not http_get_ok(port, "/v1/models"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("llama_cpp.server did not start")
        time.sleep(0.05)
    return process


async def _measure(paths: dict[str, tuple[Endpoint, bytes]], rounds: int, per_client: int) -> dict[tuple[str, int], Run]:
    best: dict[tuple[str, int], Run] = {}
    for clients in CONCURRENCY:
        for round_ in range(rounds):
            for label, (endpoint, body) in paths.items():
                log(f"servers: {label}, {clients} clients, round {round_ + 1}")
                await _closed_loop(endpoint, body, clients, 1)  # warm-up (prompt cache, pages)
                run = await _closed_loop(endpoint, body, clients, per_client)
                key = (label, clients)
                if key not in best or run.tok_s > best[key].tok_s:
                    best[key] = run
    return best


def run(env: BenchEnv) -> Section:
    section = Section(TITLE)
    daemon = env.smollm2_ready()
    served = next(m for m in daemon.get("/models")["models"] if m["input_id"] == "smollm2")
    engine_port = int(served["base_url"].split(":")[2].split("/")[0])
    engines = {e["name"]: e for e in daemon.get("/engines")["engines"]}
    server = engines["llamacpp"].get("details", {})
    python_port = free_port()
    python_server = _start_python_server(python_port)
    try:
        auth = {"Authorization": f"Bearer {daemon.token}"}
        paths = {
            "ltcai → llama-server": (Endpoint("ltcai", port=daemon.port, headers=auth), _body("smollm2")),
            "llama-server direct": (Endpoint("llama-server", port=engine_port), _body(served["model"])),
            "llama_cpp.server direct": (Endpoint("llama_cpp.server", port=python_port), _body("smollm2")),
        }
        rounds, per_client = (1, 2) if env.quick else (2, 4)
        runs = asyncio.run(_measure(paths, rounds, per_client))
    finally:
        python_server.terminate()
        python_server.wait(timeout=30)

    ltcai, direct, python = "ltcai → llama-server", "llama-server direct", "llama_cpp.server direct"
    section.add(
        f"llama-server {server.get('server_version')} ({server.get('origin')}: `{server.get('binary')}`), pid "
        f"{served['pid']}, started by ltcai with its defaults; llama_cpp.server from llama-cpp-python, one request "
        f"at a time. Streaming, `max_tokens` {MAX_TOKENS}, temperature 0, best of {rounds} interleaved rounds, "
        f"{per_client} requests per client per round.",
        "",
        "| path | clients | tok/s (aggregate) | vs llama_cpp.server | vs llama-server direct | TTFT p50 ms | TTFT p99 ms | gap p50 ms | gap p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    )
    for clients in CONCURRENCY:
        for label in (ltcai, direct, python):
            r = runs[(label, clients)]
            t, g = r.ttft_ms(), r.gaps_ms()
            section.add(
                f"| {label} | {clients} | {fmt(r.tok_s, 1)} | {r.tok_s / runs[(python, clients)].tok_s:.2f}× "
                f"| {r.tok_s / runs[(direct, clients)].tok_s:.3f}× | {fmt(t.p50, 0)} | {fmt(t.p99, 0)} "
                f"| {fmt(g.p50, 1)} | {fmt(g.p99, 1)} |"
            )
    one = runs[(ltcai, 1)].tok_s / runs[(python, 1)].tok_s
    sixteen = runs[(ltcai, 16)].tok_s / runs[(python, 16)].tok_s
    worst = min(runs[(ltcai, c)].tok_s / runs[(direct, c)].tok_s for c in CONCURRENCY)
    ttft = runs[(ltcai, 16)].ttft_ms().p50 / runs[(python, 16)].ttft_ms().p50
    section.add(
        "",
        f"Through ltcai vs llama_cpp.server: **{one:.2f}×** at 1 client (target ≥ 1.8×), **{sixteen:.2f}×** at 16 "
        f"(target ≥ 2.5×); vs llama-server direct, the lowest of 1/4/16 clients: **{worst:.3f}×** (target ≥ 0.97×); "
        f"16-client TTFT p50 **{ttft:.2f}×** llama_cpp.server's (target ≤ 0.3×).",
    )
    # The summary's targets are "value ≤ limit": ratios that must be high are given inverted.
    section.targets += [
        Target("llama_cpp.server ÷ ltcai tok/s, 1 client", 1 / one, 1 / 1.8, "", "ltcai ≥ 1.8×"),
        Target("llama_cpp.server ÷ ltcai tok/s, 16 clients", 1 / sixteen, 1 / 2.5, "", "ltcai ≥ 2.5×"),
        Target("1 − ltcai ÷ llama-server direct tok/s, worst of 1/4/16", 1 - worst, 0.03, ""),
        Target("ltcai ÷ llama_cpp.server TTFT p50, 16 clients", ttft, 0.3, ""),
    ]
    return section
