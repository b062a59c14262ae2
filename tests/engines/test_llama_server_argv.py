"""llama-server's command line from ltcai's settings: slots, threads, context per slot."""

from __future__ import annotations

import pytest

from ltcai.engines.llama_server import default_slots, default_threads, server_argv


def _argv(**options: object) -> list[str]:
    return server_argv("llama-server", model_path="m.gguf", model_id="m", port=1, options=options, profile=None, slots=8)


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


@pytest.mark.parametrize(("cores", "slots"), [(1, 4), (2, 8), (4, 8), (64, 8)])
def test_default_slots_batch_more_sequences_than_cores(cores: int, slots: int) -> None:
    assert default_slots(cores) == slots


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (4, 3), (5, None), (32, None)])
def test_small_machines_leave_a_core_to_the_daemon_and_the_desktop(cores: int, threads: int | None) -> None:
    assert default_threads(cores) == threads


def test_the_threads_setting_wins_over_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert _flag(_argv(), "--threads") == "1"
    assert _flag(_argv(n_threads=6), "--threads") == "6"
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert _flag(_argv(), "--threads") is None  # llama.cpp's own choice: its physical cores


def test_n_ctx_is_per_slot() -> None:
    argv = _argv(n_ctx=2048)
    assert _flag(argv, "--parallel") == "8" and _flag(argv, "--ctx-size") == str(8 * 2048)
