"""Micro-benchmark of streamed post-processing (SPEC.md §3), the chat hot path.

Streams a realistic ~200-token answer in 1–6 character chunks through the chat path's
``AnswerStream`` (the marker catalogue, the profile's stops, reasoning routing, then each
family step list), plain, as gpt-oss harmony output and with a ``<think>`` block first,
and reports the cost per chunk; the steps alone (the 0.4.0 path) for comparison. No assertions:
run it before and after touching ``ltcai/compat/`` post-processing (part of ``run_all.py``).

    .venv/bin/python bench/bench_postprocess.py
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

from _common import BenchEnv, Section, Target, log

from ltcai.compat import (
    AnswerStream,
    HarmonyStreamPostprocessor,
    Profile,
    StreamPostprocessor,
    apply_postprocess,
    build_profile,
    clean_answer,
    postprocess_harmony,
)

TITLE = "5. Compat post-processing cost per streamed chunk"
STEP_LISTS = (("strip_role_tokens",), ("trim_after_user_marker", "strip_role_tokens"))
ROUNDS = 300

ANSWER = (
    "2+2는 4입니다. 덧셈은 가장 기본적인 산술 연산으로, 두 수를 합쳐 하나의 값을 얻습니다.\n\n"
    "## Why it works\n\n"
    "When you add **2** and **2**, you combine two groups of two items. Counting them gives "
    "four: 1, 2, 3, 4. In Python you can check it with `assert 2 + 2 == 4`, and in most "
    "languages `a < b` compares while `a + b` adds. See [the docs](https://docs.python.org) "
    "for more.\n\n"
    "- 2 + 2 = 4\n- 2 × 2 = 4\n- 2² = 4\n\n"
    "같은 결과가 세 번 나오는 것은 우연이 아닙니다: 2는 덧셈, 곱셈, 거듭제곱에서 특별한 수입니다. "
    "Let me know if you want a longer explanation, with examples in other languages too!  "
)
HARMONY = (
    "<|channel|>analysis<|message|>The user asks in Korean: answer in one sentence, 2+2? "
    "Answer 4, in Korean, maybe with a short explanation.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>" + ANSWER + "<|return|>"
)


THINKING = "<think>\nThe user asks 2+2 in Korean; answer 4 with a short explanation.\n</think>\n\n" + ANSWER


def profile_for(steps: tuple[str, ...], harmony: bool) -> Profile:
    """A profile with this step list: gpt-oss's (harmony template) or a ChatML model's."""
    return build_profile("openai/gpt-oss-20b" if harmony else "Qwen/Qwen2.5-7B-Instruct", user_overrides={"postprocess": list(steps)})


def chunked(text: str, rng: random.Random) -> list[str]:
    """Cut like a tokenizer stream: 1–6 characters a chunk."""
    chunks, i = [], 0
    while i < len(text):
        n = rng.randint(1, 6)
        chunks.append(text[i : i + n])
        i += n
    return chunks


def per_chunk_us(run: Callable[[list[str]], object], chunks: list[str], rounds: int) -> tuple[float, float]:
    """Median and best µs per chunk over ``rounds`` runs (each run builds a fresh processor)."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        run(chunks)
        samples.append((time.perf_counter_ns() - start) / len(chunks) / 1000)
    return statistics.median(samples), min(samples)


def stream_plain(steps: tuple[str, ...]) -> Callable[[list[str]], object]:
    def run(chunks: list[str]) -> object:
        processor = StreamPostprocessor(steps)
        feed = processor.feed
        for chunk in chunks:
            feed(chunk)
        return processor.finish()

    return run


def stream_harmony(steps: tuple[str, ...]) -> Callable[[list[str]], object]:
    def run(chunks: list[str]) -> object:
        processor = HarmonyStreamPostprocessor(steps)
        feed = processor.feed
        for chunk in chunks:
            feed(chunk)
        return processor.finish()

    return run


def stream_answer(profile: Profile) -> Callable[[list[str]], object]:
    def run(chunks: list[str]) -> object:
        stream = AnswerStream(profile)
        feed = stream.feed
        for chunk in chunks:
            feed(chunk)
        return stream.finish()

    return run


def run(env: BenchEnv) -> Section:
    section = Section(TITLE)
    rounds = 60 if env.quick else ROUNDS
    rng = random.Random(0)
    plain, harmony = chunked(ANSWER, rng), chunked(HARMONY, rng)
    log("postprocess: streamed post-processing per chunk")
    baseline = per_chunk_us(stream_plain(()), plain, rounds)[0]
    thinking = chunked(THINKING, rng)
    rows, worst = [], 0.0
    for steps in STEP_LISTS:
        cases = (
            ("steps only (0.4.0)", "plain", stream_plain(steps), plain, lambda: apply_postprocess(ANSWER, steps)),
            ("steps only (0.4.0)", "harmony", stream_harmony(steps), harmony, lambda: postprocess_harmony(HARMONY, steps)),
        )
        for mode, text, chunks in (("plain", ANSWER, plain), ("harmony", HARMONY, harmony), ("<think> first", THINKING, thinking)):
            profile = profile_for(steps, harmony=mode == "harmony")
            cases += (("catalogue + stops + steps", mode, stream_answer(profile), chunks, lambda p=profile, t=text: clean_answer(t, p)),)
        for path, mode, runner, chunks, whole in cases:
            median, best = per_chunk_us(runner, chunks, rounds)
            start = time.perf_counter_ns()
            for _ in range(rounds):
                whole()
            whole_us = (time.perf_counter_ns() - start) / rounds / 1000
            if path.startswith("catalogue"):
                worst = max(worst, median)
            rows.append(f"| {' + '.join(steps)} | {path} | {mode} | {median:.2f} | {best:.2f} | {whole_us:.1f} |")
    section.add(
        f"A ~200-token answer ({len(ANSWER)} characters) streamed in {len(plain)} chunks of 1–6 characters "
        f"(harmony: {len(HARMONY)} characters, {len(harmony)} chunks; with a <think> block: {len(THINKING)} "
        f"characters, {len(thinking)} chunks) through each family's step list: the chat path's AnswerStream "
        f"(marker catalogue, the profile's stops, reasoning routing, then the steps) and the steps alone; "
        f"median of {rounds} runs, each with a fresh processor. "
        f"The direct path has no post-processing: the floor is the bare call loop ({baseline:.2f} µs/chunk).",
        "",
        "| steps | path | output | median µs/chunk | best µs/chunk | whole answer at once, µs |",
        "|---|---|---|---|---|---|",
        *rows,
    )
    section.targets.append(Target("post-processing cost per streamed chunk (chat path, worst case, median)", worst, 5, "µs"))
    return section


def main() -> None:
    print(run(BenchEnv(quick=False)).markdown())


if __name__ == "__main__":
    main()
