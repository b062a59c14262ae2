"""Chat through ltcai against straight to the engine server, real llama.cpp + SmolLM2.

The same request (temperature 0, a fixed seed, explicit stops and max_tokens, so both
sides generate the same tokens) goes to the ``llama_cpp.server`` process the daemon
started, directly on its loopback port, and through ltcai's OpenAI-compatible API on
loopback TCP (bearer token) — the same transport — plus a Unix-socket row. Requests
alternate between the two paths (``_paired``); the added latency is the per-pair
difference. llama.cpp serves one request at a time, so at 16 clients both paths queue
behind the engine and the differences carry that queueing noise.
"""

from __future__ import annotations

import asyncio
import statistics

from _common import BenchEnv, Dist, Section, Target, dist_header, dist_row, fmt, log
from _paired import Endpoint, PairedResult, paired, throughput
from ltcai.compat import StreamPostprocessor

TITLE = "3. Chat through ltcai vs straight to the engine (llama.cpp, SmolLM2)"
MODEL = "smollm2"


def _request(engine_model: str) -> dict[str, object]:
    return {
        "model": engine_model,
        "messages": [{"role": "user", "content": "What is 2+2? Answer in one short sentence."}],
        "temperature": 0.0,
        "top_p": 1.0,
        "seed": 7,
        "max_tokens": 16,
        "stop": ["<|im_end|>", "<|endoftext|>"],
    }


def _events_after_postprocess(pieces: list[str], steps: tuple[str, ...]) -> int:
    """How many non-empty events a stream of ``pieces`` becomes after post-processing."""
    processor = StreamPostprocessor(steps)
    return sum(1 for out in [*(processor.feed(p) for p in pieces), processor.finish()] if out)


def _diff_row(label: str, result: PairedResult) -> str:
    d = Dist.of(v / 1e6 for v in result.diffs)
    return f"| {label} | {d.n} | {fmt(d.p50, 2)} | {fmt(d.p90, 2)} | {fmt(d.p99, 2)} | {fmt(statistics.fmean(result.diffs) / 1e6, 2)} |"


async def _measure(direct: Endpoint, tcp: Endpoint, uds: Endpoint, engine_model: str, quick: bool) -> dict[str, PairedResult]:
    n1, n16 = (8, 2) if quick else (40, 5)
    # ltcai is asked for the alias; the engine knows only the id it was started with.
    kw = {"ltcai_model": MODEL}
    out: dict[str, PairedResult] = {}
    for label, ltcai in (("tcp", tcp), ("uds", uds)):
        log(f"chat: non-streaming, 1 client, {label}")
        out[f"once_1_{label}"] = await paired(direct, ltcai, _request(engine_model), pairs_per_client=n1, **kw)
    log("chat: streaming, 1 client")
    out["stream_1"] = await paired(direct, tcp, _request(engine_model), pairs_per_client=n1, stream=True, **kw)
    log("chat: non-streaming, 16 clients")
    out["once_16"] = await paired(direct, tcp, _request(engine_model), pairs_per_client=n16, clients=16, **kw)
    log("chat: streaming, 16 clients")
    out["stream_16"] = await paired(direct, tcp, _request(engine_model), pairs_per_client=n16, clients=16, stream=True, **kw)
    log("chat: throughput, 16 clients")
    rates: dict[str, list[float]] = {"direct": [], "ltcai": []}
    for _ in range(1 if quick else 2):  # interleaved rounds
        for label, endpoint, model in (("direct", direct, engine_model), ("ltcai", tcp, MODEL)):
            rate, _events = await throughput(endpoint, {**_request(engine_model), "model": model}, clients=16, per_client=n16)
            rates[label].append(rate)
    out["rates"] = {k: max(v) for k, v in rates.items()}  # type: ignore[assignment]
    return out


def run(env: BenchEnv) -> Section:
    section = Section(TITLE)
    daemon = env.smollm2_ready()
    served = next(m for m in daemon.get("/models")["models"] if m["input_id"] == MODEL)
    port = int(served["base_url"].split(":")[2].split("/")[0])
    engine_model = served["model"]
    direct = Endpoint("direct", port=port)
    auth = {"Authorization": f"Bearer {daemon.token}"}
    tcp = Endpoint("ltcai tcp", port=daemon.port, headers=auth)
    uds = Endpoint("ltcai uds", uds=daemon.socket)
    out = asyncio.run(_measure(direct, tcp, uds, engine_model, env.quick))

    s1, s16 = out["stream_1"], out["stream_16"]
    rates = out["rates"]  # type: ignore[assignment]
    steps = tuple(next(p for p in daemon.get("/profiles")["profiles"] if p["model_id"] == engine_model)["postprocess"])
    # Post-processing must hold back what could still be a marker (or trailing white space
    # it will trim): those chunks go out with the next one. Anything merged beyond that
    # would be coalescing by ltcai.
    expected = [_events_after_postprocess(d.pieces, steps) for d in s1.direct_streams]
    same_chunks = all(lt.content_events == e for lt, e in zip(s1.ltcai_streams, expected, strict=True))
    texts = {s.text for s in s1.direct_streams}
    section.add(
        f"`llama_cpp.server` (pid {served['pid']}) straight on its port vs ltcai's `/v1/chat/completions`; "
        "each client alternates the two paths. Answer: " + repr(next(iter(texts))) + ".",
        "",
        "Latency per request (non-streaming) and time to first token (streaming):",
        "",
        dist_header("ms", with_ratio=True),
        dist_row("direct, non-streaming, 1 client", out["once_1_tcp"].ms("direct"), 1),
        dist_row("ltcai TCP, non-streaming, 1 client", out["once_1_tcp"].ms("ltcai"), 1, out["once_1_tcp"].ms("direct")),
        dist_row("ltcai Unix socket, non-streaming, 1 client", out["once_1_uds"].ms("ltcai"), 1, out["once_1_uds"].ms("direct")),
        dist_row("direct, TTFT, 1 client", s1.ms("direct"), 1),
        dist_row("ltcai TCP, TTFT, 1 client", s1.ms("ltcai"), 1, s1.ms("direct")),
        dist_row("direct, non-streaming, 16 clients", out["once_16"].ms("direct"), 1),
        dist_row("ltcai TCP, non-streaming, 16 clients", out["once_16"].ms("ltcai"), 1, out["once_16"].ms("direct")),
        dist_row("direct, TTFT, 16 clients", s16.ms("direct"), 1),
        dist_row("ltcai TCP, TTFT, 16 clients", s16.ms("ltcai"), 1, s16.ms("direct")),
        "",
        "Added by ltcai, per pair (ltcai − direct, same client, back to back):",
        "",
        "| | pairs | p50 ms | p90 ms | p99 ms | mean ms |",
        "|---|---|---|---|---|---|",
        _diff_row("non-streaming, 1 client, TCP", out["once_1_tcp"]),
        _diff_row("non-streaming, 1 client, Unix socket", out["once_1_uds"]),
        _diff_row("streaming TTFT, 1 client", s1),
        _diff_row("non-streaming, 16 clients", out["once_16"]),
        _diff_row("streaming TTFT, 16 clients", s16),
        "",
        "Inter-chunk gaps (streaming, between content events):",
        "",
        dist_header("ms", with_ratio=True),
        dist_row("direct, 1 client", s1.gaps_ms("direct"), 2),
        dist_row("ltcai, 1 client", s1.gaps_ms("ltcai"), 2, s1.gaps_ms("direct")),
        dist_row("direct, 16 clients", s16.gaps_ms("direct"), 2),
        dist_row("ltcai, 16 clients", s16.gaps_ms("ltcai"), 2, s16.gaps_ms("direct")),
        "",
        f"Throughput, 16 clients closed loop, non-streaming (best round): direct {fmt(rates['direct'], 2)} requests/s, "
        f"through ltcai {fmt(rates['ltcai'], 2)} requests/s: **{rates['ltcai'] / rates['direct']:.3f}** of direct.",
        "",
        f"Chunk coalescing: the engine sent {s1.direct_streams[0].content_events} content events per answer; "
        f"post-processing ({' + '.join(steps)}) must hold back {s1.direct_streams[0].content_events - expected[0]} of "
        f"them (white space it may trim, a possible marker prefix) until the next; ltcai sent exactly the rest in "
        f"every stream: **{'yes' if same_chunks else 'NO'}**.",
    )
    if not same_chunks:
        section.problems.append("ltcai coalesced or split streamed chunks")
    d1 = Dist.of(v / 1e6 for v in out["once_1_tcp"].diffs)
    dt = Dist.of(v / 1e6 for v in s1.diffs)
    section.targets += [
        Target("real engine: added latency p50, non-streaming, 1 client", d1.p50, 2, "ms"),
        Target("real engine: streaming TTFT overhead p50, 1 client", dt.p50, 2, "ms"),
        Target("real engine: 1 − throughput fraction, 16 clients", 1 - rates["ltcai"] / rates["direct"], 0.05, ""),
    ]
    return section

