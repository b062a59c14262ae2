"""llama-server's command line from ltcai's settings: slots, threads, context per slot."""

from __future__ import annotations

import pytest

from ltcai.engines.llama_server import default_slots, server_argv


def _argv(**options: object) -> list[str]:
    return server_argv("llama-server", model_path="m.gguf", model_id="m", port=1, options=options, profile=None, slots=8)


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


@pytest.mark.parametrize(("cores", "slots"), [(1, 4), (2, 8), (4, 8), (64, 8)])
def test_default_slots_batch_more_sequences_than_cores(cores: int, slots: int) -> None:
    assert default_slots(cores) == slots


def test_threads_are_llama_cpps_choice_unless_set() -> None:
    assert "--threads" not in _argv()
    assert _flag(_argv(n_threads=6), "--threads") == "6"


def test_n_ctx_is_per_slot() -> None:
    argv = _argv(n_ctx=2048)
    assert _flag(argv, "--parallel") == "8" and _flag(argv, "--ctx-size") == str(8 * 2048)
