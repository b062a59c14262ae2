"""ltcai's own cost on the data path, with an upstream fast enough not to hide it.

``_fast_upstream.py`` (one asyncio loop, canned answers) plays the engine, and a daemon
serves it as the ``openai`` provider pointed at loopback (``[engines.openai] base_url``):
the same fast path as every engine (profile → params → upstream → post-processing →
answer). Measured straight to the upstream and through ltcai's OpenAI API on loopback
TCP, in the same run:

- added latency per request at 1 client (non-streaming; streaming TTFT), paired;
- closed-loop throughput at 16 clients: requests/s, and streamed content events/s
  (each answer 64 events), through ltcai as a fraction of direct.

The load generator shares the 2 cores with the daemon and the upstream, so absolute
rates are low; the fraction is what carries over.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

from _common import BENCH_DIR, PYTHON, BenchEnv, Daemon, Dist, Section, Target, dist_header, dist_row, fmt, log
from _paired import Endpoint, paired, throughput

TITLE = "4. Proxy cost with a fast loopback upstream (ltcai vs direct)"
MODEL = "fast"
CHUNKS = 64
CLIENTS = 16


def start_upstream(*extra: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [PYTHON, str(BENCH_DIR / "_fast_upstream.py"), "--model", MODEL, "--chunks", str(CHUNKS), *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("LISTENING "):
        process.kill()
        raise RuntimeError(f"the fast upstream did not start: {line!r}")
    return process, int(line.split()[1])


LTCAI_MODEL = f"openai:{MODEL}"  # what a client asks ltcai for; the upstream sees MODEL


def _request() -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 64}


async def _measure(direct: Endpoint, ltcai: Endpoint, quick: bool) -> dict[str, object]:
    n, per_client, rounds = (100, 20, 1) if quick else (1000, 100, 3)
    out: dict[str, object] = {}
    log("proxy: added latency, 1 client")
    out["once"] = await paired(direct, ltcai, _request(), pairs_per_client=n, warmup=20, ltcai_model=LTCAI_MODEL)
    out["stream"] = await paired(
        direct, ltcai, _request(), pairs_per_client=n // 2, stream=True, warmup=10, ltcai_model=LTCAI_MODEL
    )
    log(f"proxy: throughput, {CLIENTS} clients")
    rates: dict[str, list[tuple[float, float]]] = {"direct": [], "ltcai": [], "direct_s": [], "ltcai_s": []}
    for _ in range(rounds):  # interleaved rounds: drift hits both sides
        for label, endpoint, model in (("direct", direct, MODEL), ("ltcai", ltcai, LTCAI_MODEL)):
            request = {**_request(), "model": model}
            rates[label].append(await throughput(endpoint, request, clients=CLIENTS, per_client=per_client))
            rates[label + "_s"].append(
                await throughput(endpoint, request, clients=CLIENTS, per_client=per_client // 4, stream=True)
            )
    out["rates"] = {k: max(v) for k, v in rates.items()}  # best round of each: the least disturbed
    return out


def run(env: BenchEnv) -> Section:
    section = Section(TITLE)
    upstream, port = start_upstream()
    daemon = Daemon(name="px", config=f'[engines.openai]\nbase_url = "http://127.0.0.1:{port}/v1"\n')
    try:
        daemon.start()
        report = daemon.prepare(LTCAI_MODEL)
        if not report.get("ready_to_chat"):
            raise RuntimeError(f"{LTCAI_MODEL} did not become ready: {report.get('message')}")
        direct = Endpoint("direct", port=port)
        ltcai = Endpoint("ltcai", port=daemon.port, headers={"Authorization": f"Bearer {daemon.token}"})
        out = asyncio.run(_measure(direct, ltcai, env.quick))
    finally:
        daemon.cleanup()
        upstream.kill()
        upstream.wait()
    once, stream, rates = out["once"], out["stream"], out["rates"]  # type: ignore[assignment]
    added, added_ttft = Dist.of(v / 1e6 for v in once.diffs), Dist.of(v / 1e6 for v in stream.diffs)
    req_ratio = rates["ltcai"][0] / rates["direct"][0]
    chunk_ratio = rates["ltcai_s"][1] / rates["direct_s"][1]
    section.add(
        f"Upstream: `bench/_fast_upstream.py`, served by ltcai as `openai:{MODEL}` over loopback. "
        f"Non-streaming answers are one sentence; streamed ones {CHUNKS} content events.",
        "",
        dist_header("ms", with_ratio=True),
        dist_row("direct, non-streaming, 1 client", once.ms("direct"), 3),
        dist_row("ltcai, non-streaming, 1 client", once.ms("ltcai"), 3, once.ms("direct")),
        dist_row("direct, TTFT, 1 client", stream.ms("direct"), 3),
        dist_row("ltcai, TTFT, 1 client", stream.ms("ltcai"), 3, stream.ms("direct")),
        dist_row("direct, inter-chunk gap", stream.gaps_ms("direct"), 3),
        dist_row("ltcai, inter-chunk gap", stream.gaps_ms("ltcai"), 3, stream.gaps_ms("direct")),
        "",
        "| added by ltcai, per pair | pairs | p50 ms | p90 ms | p99 ms |",
        "|---|---|---|---|---|",
        f"| non-streaming | {added.n} | {fmt(added.p50, 3)} | {fmt(added.p90, 3)} | {fmt(added.p99, 3)} |",
        f"| streaming TTFT | {added_ttft.n} | {fmt(added_ttft.p50, 3)} | {fmt(added_ttft.p90, 3)} | {fmt(added_ttft.p99, 3)} |",
        "",
        f"| {CLIENTS} clients, closed loop (best of the rounds) | direct | through ltcai | ltcai / direct |",
        "|---|---|---|---|",
        f"| requests/s, non-streaming | {fmt(rates['direct'][0], 0)} | {fmt(rates['ltcai'][0], 0)} | {req_ratio:.3f} |",
        f"| content events/s, streaming | {fmt(rates['direct_s'][1], 0)} | {fmt(rates['ltcai_s'][1], 0)} | {chunk_ratio:.3f} |",
        "",
        "Against an upstream this cheap, the direct side is nearly free, so the fraction is "
        "ltcai's per-request CPU (uvicorn + starlette + JSON + httpx to the upstream + "
        "post-processing) against the upstream's. Against a real engine — tens of ms per "
        "request — the same cost is section 3's added latency.",
    )
    section.targets += [
        Target("fast upstream: added latency p50, non-streaming", added.p50, 1, "ms"),
        Target("fast upstream: added latency p99, non-streaming", added.p99, 3, "ms"),
        Target("fast upstream: streaming TTFT overhead p50", added_ttft.p50, 2, "ms"),
        Target(f"fast upstream: 1 − throughput fraction, {CLIENTS} clients (requests)", 1 - req_ratio, 0.05, ""),
        Target(f"fast upstream: 1 − throughput fraction, {CLIENTS} clients (chunks)", 1 - chunk_ratio, 0.05, ""),
    ]
    return section


if __name__ == "__main__":
    sys.exit("run through bench/run_all.py --only proxy")
