"""llama-server as the llamacpp engine's server, for real: the flags users of llama-server
expect, parallel slots that really serve at once, and its failures in its own words.

A real daemon, the real llama-server found on PATH (ltcai's own build in CI), SmolLM2.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .conftest import RunningDaemon, engine_pids, serving

pytestmark = pytest.mark.e2e


def _engine_url(daemon: RunningDaemon, path: str) -> str:
    (model,) = daemon.client().get("/models")["models"]
    return model["base_url"].removesuffix("/v1") + path


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_engines_names_the_llama_server_its_version_and_where_it_came_from(e2e_daemon: RunningDaemon) -> None:
    engines = {e["name"]: e for e in e2e_daemon.client().get("/engines")["engines"]}
    llamacpp = engines["llamacpp"]
    assert llamacpp["available"], llamacpp
    details = llamacpp["details"]
    assert details["server"] == "llama-server" and details["origin"] == "PATH"
    assert Path(details["binary"]).name == "llama-server"
    assert llamacpp["version"] and llamacpp["version"] == details["server_version"]
    shown = e2e_daemon.cli("engines")
    assert "llama-server" in shown.stdout and "PATH" in shown.stdout  # the table says which and whence


def test_the_server_runs_with_slots_a_per_slot_context_jinja_and_metrics(
    llamacpp_installed: None, daemon_root: Path
) -> None:
    config = "[engines.llamacpp]\nparallel = 3\nn_ctx = 1024\n"
    with serving(daemon_root, config=config) as daemon:
        report = daemon.prepare("smollm2")
        assert report["status"] == "ok", report
        (pid,) = engine_pids(daemon)
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        props = _get_json(_engine_url(daemon, "/props"))
        with urllib.request.urlopen(_engine_url(daemon, "/metrics"), timeout=10) as response:
            metrics = response.read().decode()
    assert Path(argv[0].decode()).name == "llama-server"
    assert b"--jinja" in argv
    # n_ctx is per slot in ltcai's settings: the server got 3 × 1024 and gives each slot 1024.
    assert argv[argv.index(b"--ctx-size") + 1] == b"3072"
    assert props["total_slots"] == 3
    assert props["default_generation_settings"]["n_ctx"] == 1024
    assert "llamacpp:" in metrics  # Prometheus metrics are on


def test_parallel_slots_serve_streams_at_the_same_time(e2e_daemon: RunningDaemon) -> None:
    """Four streams at once are generated together (llama-server's /slots shows several
    slots busy at one moment), not one after another as llama_cpp.server would."""
    e2e_daemon.prepare("smollm2")
    slots_url = _engine_url(e2e_daemon, "/slots")
    busy_seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            busy_seen.append(sum(1 for slot in _get_json(slots_url) if slot.get("is_processing")))
            time.sleep(0.02)

    body = {"model": "smollm2", "prompt": "Count from one to forty in words.", "max_tokens": 96, "stream": True}

    def stream() -> str:
        events = list(e2e_daemon.client().stream("POST", "/chat", body))
        assert events[-1].get("finish_reason"), events[-1]
        return "".join(e.get("content", "") for e in events)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            answers = [f.result(timeout=300) for f in [pool.submit(stream) for _ in range(4)]]
    finally:
        done.set()
        watcher.join()
    assert all(a.strip() for a in answers)
    assert max(busy_seen) >= 2, f"slots busy over time: {busy_seen}"


def test_a_model_llama_server_cannot_load_fails_with_its_own_last_lines(
    llamacpp_installed: None, daemon_root: Path
) -> None:
    import gguf  # ltcai's own dependency: writes a well-formed GGUF of an architecture nobody has

    models = daemon_root / "models"
    models.mkdir()
    bad = models / "unknown-arch.gguf"
    writer = gguf.GGUFWriter(str(bad), arch="nosucharch")
    writer.add_name("a model of an architecture llama.cpp does not know")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with serving(daemon_root, config=f'model_dirs = ["{models}"]\n') as daemon:
        report = daemon.prepare(str(bad))
        assert daemon.client().get("/models")["models"] == []
    assert report["status"] == "failed"
    error = report["error"]
    assert error["state"] == "server_starting" and error["code"] == "server_start_failed"
    assert "llama-server" in error["message"]
    assert "nosucharch" in (error["hint"] or "")  # llama.cpp's own words: unknown model architecture
