"""Crash safety: ``kill -9`` at the worst moments, with real processes and signals.

* a daemon SIGKILLed mid-download (real ``ltcai serve``, FAKE engine plugin whose download
  step is the real ``hf_download`` against a LOOPBACK fake hub) resumes from the partial
  file after a restart, fetching at most one chunk twice, and ends with a verified file;
* a process writing state through ``ltcai.daemon.store`` SIGKILLed hundreds of times at
  random moments always leaves a readable document — and the same harness, run against a
  naive write (truncate, then write), does see torn files, so it is not blind;
* a daemon SIGKILLed with engines serving leaves none of them running (parent-death
  signal), and the next daemon reaps what they left in their process groups.

Also proven elsewhere: a job running at SIGKILL comes back INTERRUPTED
(tests/daemon/test_daemon_persistence.py), the real llama.cpp engine dies with a
SIGKILLed daemon (tests/e2e/test_llamacpp_e2e.py).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from fake_hf_hub import SlowHub, hf_model_path

from ltcai.daemon.store import StateStore
from ltcai.engines.resumable import CHUNK_SIZE, partial_path

MiB = 1 << 20
REPO = "acme/tiny-GGUF"
FILE = "tiny-Q4_K_M.gguf"


# ------------------------------------------------------------------ kill -9 mid-download


def test_daemon_killed_mid_download_resumes_from_the_partial_file(
    start_daemon, daemon_root, slow_hub: SlowHub, gguf_4mib: bytes, wait_until
):
    slow_hub.add(REPO, {FILE: gguf_4mib})
    held_at = int(2.5 * MiB)  # the hub sends this much, then holds the connection open
    slow_hub.hold_at = held_at
    env = slow_hub.env(daemon_root)
    first = start_daemon(env)
    dest = hf_model_path(first.data_dir, REPO, FILE)
    partial = partial_path(dest)
    job_id = first.start_job(REPO)
    # Every whole chunk that arrived is on disk; the last half chunk is still in memory.
    wait_until(lambda: slow_hub.served() == held_at and partial.exists() and partial.stat().st_size >= 2 * MiB)
    first.kill()

    kept = partial.stat().st_size
    assert not dest.exists(), "a half download reached the final path"
    assert partial.read_bytes() == gguf_4mib[:kept], "the partial file is not a prefix of the file"
    first_served = slow_hub.served()
    slow_hub.release()

    second = start_daemon(env)
    assert second.client.get(f"/jobs/{job_id}").json()["state"] == "interrupted"
    report = second.report(REPO)
    assert report["state"] == "ready", report["error"]
    resumed = slow_hub.bodies[-1]
    assert resumed.start == kept, "the restarted daemon did not resume from the partial file"
    refetched = first_served - kept
    assert 0 <= refetched <= CHUNK_SIZE, f"{refetched} bytes were fetched twice"
    assert first_served + resumed.sent - refetched == len(gguf_4mib)
    assert dest.read_bytes() == gguf_4mib
    assert not partial.exists() and not dest.with_name(dest.name + ".partial.json").exists()
    result = report["download_result"]
    assert result["sha256"] and "resumed" in result["message"], result


# -------------------------------------------------------------- kill -9 during state writes


def _doc(seq: int) -> dict[str, Any]:
    # Sizes from 4 KiB to ~1.5 MiB: a write spans many pages, so a kill lands inside one.
    size = 4096 + (seq * 7919) % (1536 * 1024)
    return {"seq": seq, "size": size, "pad": "x" * size}


def _atomic_write(store: StateStore, seq: int) -> None:
    store.write_sync("jobs/torture", _doc(seq))


def _naive_write(store: StateStore, seq: int) -> None:
    (store.root / "jobs" / "torture.json").write_text(json.dumps(_doc(seq)))


def _kill_while_writing(
    root: Path, write: Callable[[StateStore, int], None], iterations: int, *, stop_at_first_torn: bool
) -> tuple[int, int]:
    """Fork a writer looping ``write``, SIGKILL it at a random moment, read; (kills, torn)."""
    store = StateStore(root)
    store.prepare()
    path = root / "jobs" / "torture.json"
    rng = random.Random(1234)
    torn = kills = 0
    seq = 0
    for _ in range(iterations):
        pid = os.fork()
        if pid == 0:  # the writer: loops until killed, never returns into pytest
            try:
                n = seq
                while True:
                    write(store, n)
                    n += 1
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.0, 0.015))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        kills += 1
        seq += 1000
        try:
            document = json.loads(path.read_bytes())
            assert document["size"] == len(document["pad"]) == _doc(document["seq"])["size"]
        except FileNotFoundError:
            continue  # killed before the first write landed: "old" (nothing) is allowed
        except (ValueError, KeyError, AssertionError):
            torn += 1
            if stop_at_first_torn:
                break
    return kills, torn


def test_state_stays_readable_when_the_writer_is_killed_hundreds_of_times(tmp_path):
    kills, torn = _kill_while_writing(tmp_path / "state", _atomic_write, 300, stop_at_first_torn=False)
    assert (kills, torn) == (300, 0)
    # What a restarting daemon does: temp files of killed writes are swept, the document
    # reads back whole, nothing is set aside as corrupt.
    store = StateStore(tmp_path / "state")
    store.prepare()
    assert list((tmp_path / "state").rglob(".*.tmp")) == []
    assert store.read_sync("jobs/torture") is not None
    assert list((tmp_path / "state").rglob("*.corrupt-*")) == []


def test_the_kill_harness_does_catch_a_non_atomic_write(tmp_path):
    """The control: the same kills against truncate-then-write tear the file."""
    _kills, torn = _kill_while_writing(tmp_path / "state", _naive_write, 300, stop_at_first_torn=True)
    assert torn >= 1, "the harness never caught a torn write: it proves nothing"


# --------------------------------------------------------- kill -9 with engines serving


def test_daemon_killed_with_engines_serving_leaves_none_and_the_next_reaps_leftovers(
    start_daemon, pid_alive, wait_until
):
    first = start_daemon()
    models = ["fake-ok-k1", "fake-ok-k2", "fake-helper-k3"]
    for model in models:
        assert first.report(model)["state"] == "ready"
    servers = {model: first.engine_pid(model) for model in models}
    helper = int(first.engine_line(servers["fake-helper-k3"], "HELPER ").split()[1])
    first.kill()

    wait_until(lambda: not any(pid_alive(pid) for pid in servers.values()), timeout=10)
    assert pid_alive(helper), "the helper is the leftover the next daemon must reap"
    records = json.loads((first.state_dir / "engines.json").read_text())
    assert {r["pid"] for r in records} == set(servers.values())

    second = start_daemon()
    wait_until(lambda: not pid_alive(helper), timeout=10)
    reaped = [e["pgid"] for e in second.log_events() if e.get("event") == "reaping engine left by a previous daemon"]
    assert reaped == [servers["fake-helper-k3"]]
    assert second.client.get("/models").json()["models"] == []
    assert json.loads((second.state_dir / "engines.json").read_text()) == []


# ------------------------------------------------- a daemon SIGKILLed while it writes state


def test_a_daemon_killed_while_jobs_write_their_records_always_restarts_with_readable_state(
    start_daemon, daemon_root, async_client_for
):
    """Twice: 20 FAKE prepares in flight (each writes its record at every state up
    to a download that hangs), SIGKILL, restart. Every record reads back; none is set
    aside as corrupt."""
    seen_jobs: set[str] = set()
    for cycle in range(2):
        daemon = start_daemon()
        listed = {j["job_id"] for j in daemon.client.get("/jobs").json()["jobs"]}
        assert seen_jobs <= listed, "a job record was lost to a SIGKILL"

        async def burst() -> None:
            async with async_client_for(daemon.socket_path) as client:
                async def one(i: int) -> None:
                    response = await client.post(
                        "/prepare", json={"model": f"fake-hang-download-c{cycle}-{i}", "engine": "fake", "stream": False}
                    )
                    seen_jobs.add(response.json()["job_id"])

                async with anyio.create_task_group() as tg:
                    for i in range(20):
                        tg.start_soon(one, i)
                await anyio.sleep(0.03 * cycle)  # while their records are being written

        anyio.run(burst)
        daemon.kill()
    final = start_daemon()
    listed = {j["job_id"]: j for j in final.client.get("/jobs").json()["jobs"]}
    assert seen_jobs <= set(listed)
    assert {listed[j]["state"] for j in seen_jobs} == {"interrupted"}
    assert list((daemon_root / "d" / "state").rglob("*.corrupt-*")) == []
    assert list((daemon_root / "d" / "state").rglob(".*.tmp")) == []
