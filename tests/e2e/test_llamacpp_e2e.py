"""End to end, for real: ``ltcai serve`` → llama.cpp server → SmolLM2 / Gemma 3 270M.

No fakes: a real daemon subprocess on a real Unix socket, the real llama-server (or,
where a test runs ``any_server_daemon``, llama-cpp-python's server too) as its child,
the real model files from their PyPI packages. Assertions are on what the classifier
says of the real answers, never on tuned prompts.
"""

from __future__ import annotations

import concurrent.futures

import json
import os
import signal
import time
from pathlib import Path

import pytest

from ltcai.cli._client import RemoteError
from ltcai.compat import BAD_MARKERS, classify_answer

from .conftest import PYTHON_SERVER, RunningDaemon, engine_pids, pid_alive, start_daemon

pytestmark = pytest.mark.e2e


def test_prepare_smollm2_reaches_ready_and_reports_every_state(any_server_daemon: RunningDaemon) -> None:
    events = list(any_server_daemon.client().stream("POST", "/prepare", {"model": "smollm2"}))
    states = [e["state"] for e in events if e["type"] == "state"]
    assert states == [
        "resolving", "engine_check", "engine_install", "downloading", "server_starting",
        "model_serving", "model_loading", "smoke_test", "ready",
    ]  # fmt: skip
    report = events[-1]["report"]
    assert report["status"] == "ok" and report["state"] == "ready"
    assert report["ready_to_chat"] is True
    assert report["resolution"]["resolved_model"] == "smollm2-135m-instruct-q4_1"
    assert report["resolution"]["engine"] == "llamacpp"
    assert report["download_result"]["source"] == "bundled"
    smoke = report["smoke_test"]
    # The classifier's verdict on the real answer is what the report says.
    assert classify_answer(smoke["answer"]).status == smoke["status"] == "ok"
    assert "4" in smoke["answer"]


def test_smollm2_profile_comes_from_its_own_gguf(e2e_daemon: RunningDaemon) -> None:
    e2e_daemon.prepare("smollm2")
    shown = e2e_daemon.client().get("/profiles/llamacpp:smollm2-135m-instruct-q4_1")
    layers = {row["field"]: row["layer"] for row in shown["explain"]}
    profile = shown["profile"]
    assert profile["template"] == "chatml" and layers["template"] == "model"
    assert "<|im_end|>" in profile["stop"]
    assert profile["quality_status"] == "ok" and profile["validated_at"]


def test_chat_through_the_daemon_is_clean_streamed_or_not(any_server_daemon: RunningDaemon) -> None:
    any_server_daemon.prepare("smollm2")
    client = any_server_daemon.client()
    body = {"model": "smollm2", "prompt": "What is 2+2?", "max_tokens": 48}
    whole = client.post("/chat", body)
    assert whole["content"].strip()
    assert not any(marker in whole["content"] for marker in BAD_MARKERS)
    chunks = [e for e in client.stream("POST", "/chat", {**body, "stream": True}) if "content" in e]
    streamed = "".join(e["content"] for e in chunks)
    assert streamed.strip() and len(chunks) > 1  # token by token, not one coalesced blob
    assert not any(marker in streamed for marker in BAD_MARKERS)


def test_concurrent_streams_each_get_the_whole_answer(any_server_daemon: RunningDaemon) -> None:
    """llama_cpp.server cuts a running stream short when another request arrives, unless
    started with ``--interrupt_requests false``; llama-server batches them in parallel
    slots: two clients streaming at once must each get the same answer one client alone
    gets (temperature 0, fixed seed)."""
    e2e_daemon = any_server_daemon
    e2e_daemon.prepare("smollm2")
    body = {"model": "smollm2", "prompt": "Count from one to twenty in words.", "max_tokens": 64, "temperature": 0, "seed": 1}
    alone = e2e_daemon.client().post("/chat", body)["content"]
    assert len(alone) >= 20, alone  # long enough that a stream cut short would show

    def stream() -> str:
        events = list(e2e_daemon.client().stream("POST", "/chat", {**body, "stream": True}))
        assert events[-1].get("finish_reason"), events[-1]
        return "".join(e.get("content", "") for e in events)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        answers = [f.result(timeout=180) for f in [pool.submit(stream), pool.submit(stream)]]
    assert answers == [alone, alone]


def test_cli_prepare_and_chat(e2e_daemon: RunningDaemon) -> None:
    prepared = e2e_daemon.cli("prepare", "smollm2")
    assert prepared.returncode == 0, prepared.stderr
    assert "Ready" in prepared.stdout and "2 + 2" in prepared.stdout or "4" in prepared.stdout
    answer = e2e_daemon.cli("chat", "smollm2", "What is 2+2?")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() and "Traceback" not in answer.stderr
    as_json = e2e_daemon.cli("chat", "smollm2", "Say hi.", "--json")
    assert json.loads(as_json.stdout)["content"].strip()


def test_second_prepare_of_a_ready_model_joins_the_finished_job(e2e_daemon: RunningDaemon) -> None:
    first = e2e_daemon.prepare("smollm2")
    pids = engine_pids(e2e_daemon)
    second = e2e_daemon.prepare("smollm2")
    assert second["job_id"] == first["job_id"]
    assert engine_pids(e2e_daemon) == pids  # no second server


@pytest.mark.parametrize("server", ["llama-server", "python"])
def test_gemma_base_model_uses_the_family_template_and_is_judged_honestly(
    request: pytest.FixtureRequest, server: str, daemon_root: Path, gemma_file: Path
) -> None:
    request.getfixturevalue("python_server_installed" if server == "python" else "llamacpp_installed")
    engine = PYTHON_SERVER if server == "python" else ""
    daemon = start_daemon(daemon_root, config=f'model_dirs = ["{gemma_file.parent}"]\n{engine}')
    try:
        report = daemon.prepare(str(gemma_file))
        profile = daemon.client().get(f"/profiles/llamacpp:{gemma_file}")
    finally:
        assert daemon.stop() == 0
    layers = {row["field"]: row["layer"] for row in profile["explain"]}
    assert profile["profile"]["family"] == "gemma"
    assert profile["profile"]["template"] == "gemma" and layers["template"] == "family"
    assert profile["profile"]["chat_template"] is None  # the base GGUF carries none
    smoke = report["smoke_test"]
    assert smoke is not None, report
    # A base model rambles, and what it says depends on the build and the machine: whatever
    # it said, the report is the classifier's verdict on it (SPEC §4). The raw text is what
    # is judged; a leaked marker that post-processing removed from the shown answer fails it.
    verdict = classify_answer(smoke["answer"])
    leaked = "leakage" in smoke["reason"]
    assert (smoke["status"], smoke["reason"]) == (verdict.status, verdict.reason) or (leaked and smoke["status"] == "failed"), smoke
    assert report["status"] == smoke["status"]
    assert report["ready_to_chat"] is (report["status"] != "failed")


def test_engine_killed_mid_chat_gives_a_clear_error_and_prepare_recovers(e2e_daemon: RunningDaemon) -> None:
    e2e_daemon.prepare("smollm2")
    (pid,) = engine_pids(e2e_daemon)
    client = e2e_daemon.client()
    stream = client.stream("POST", "/chat", {"model": "smollm2", "prompt": "Count to fifty.", "stream": True, "max_tokens": 400})
    next(stream)  # the answer has started
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(RemoteError) as failure:
        for _event in stream:
            pass
    assert failure.value.code in ("engine_unreachable", "chat_failed")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        models = client.get("/models")["models"]
        if models and models[0]["status"] == "stopped":
            break
        time.sleep(0.05)
    assert models[0]["status"] == "stopped"
    with pytest.raises(RemoteError) as not_ready:
        client.post("/chat", {"model": "smollm2", "prompt": "hi"})
    assert not_ready.value.code == "model_not_ready"
    assert "prepare" in (not_ready.value.hint or "")
    report = e2e_daemon.prepare("smollm2")
    assert report["status"] == "ok"
    (new_pid,) = engine_pids(e2e_daemon)
    assert new_pid != pid and pid_alive(new_pid)


def test_sigterm_stops_the_engine_and_removes_the_socket(llamacpp_installed: None, daemon_root: Path) -> None:
    daemon = start_daemon(daemon_root)
    daemon.prepare("smollm2")
    (pid,) = engine_pids(daemon)
    assert daemon.stop(signal.SIGTERM) == 0
    assert not pid_alive(pid)
    assert not daemon.socket.exists()


def test_sigkilled_daemon_leaves_no_engine_behind(llamacpp_installed: None, daemon_root: Path) -> None:
    daemon = start_daemon(daemon_root)
    daemon.prepare("smollm2")
    (pid,) = engine_pids(daemon)
    daemon.stop(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(pid), "the parent-death signal should have killed the engine"
    restarted = start_daemon(daemon_root)
    try:
        jobs = restarted.client().get("/jobs")["jobs"]
        assert [j["status"] for j in jobs] == ["ok"]
        assert restarted.client().get("/models")["models"] == []
    finally:
        assert restarted.stop() == 0


def test_prepare_with_probe_measures_every_capability_of_smollm2(e2e_daemon: RunningDaemon) -> None:
    """``--probe`` on the real engine: every capability gets a measured verdict (vision:
    SmolLM2 claims none), chat is the smoke test's, context is llama.cpp's n_ctx per slot."""
    report = e2e_daemon.prepare("smollm2", probe=True)
    assert report["status"] == "ok", report
    smoke = next(s for s in report["stage_logs"] if s["state"] == "smoke_test")
    found = smoke["extra"]["capabilities"]
    assert found["chat"]["status"] == "ok"
    assert found["context"]["status"] == "ok"
    assert found["context"]["reason"].startswith("4096 tokens per slot"), found["context"]  # the engine's default n_ctx
    assert found["vision"]["status"] == "untested" and found["vision"]["reason"] == "the model does not claim vision"
    for key in ("chat", "stream", "tools", "json_schema", "embeddings", "context"):
        assert found[key]["status"] != "untested" and found[key]["measured_at"], (key, found[key])
    # What the profile keeps is what the report said.
    shown = e2e_daemon.client().get("/profiles/llamacpp:smollm2-135m-instruct-q4_1")["profile"]
    assert shown["capabilities"] == found
    print(json.dumps(found, indent=1))  # the verdicts, for the record (-s)
