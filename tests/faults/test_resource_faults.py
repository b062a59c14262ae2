"""Resource faults: the disk filling up under a real daemon's download; too little memory.

A real ``ltcai serve`` whose whole data dir (state, models, logs) is a 6 MiB tmpfs; the
FAKE engine plugin's download step is the real ``hf_download`` against a LOOPBACK fake
hub. Another program takes the space after ltcai's free-space check, so the download
runs into ENOSPC mid-way — and so do the daemon's own state writes after it.

Proven elsewhere, at the download layer: a disk too small fails before a byte is fetched
(tests/engines/test_hf_download.py::test_disk_too_small_fails_before_downloading).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_hf_hub import SlowHub, hf_model_path

from ltcai.engines.resumable import CHUNK_SIZE, partial_path

MiB = 1 << 20
REPO = "acme/tiny-GGUF"
FILE = "tiny-Q4_K_M.gguf"


@pytest.fixture
def small_data_dir(daemon_root: Path) -> Iterator[Path]:
    """The daemon's data dir as a 6 MiB tmpfs (needs root and mount rights; else skip)."""
    where = daemon_root / "d"
    where.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small filesystem for the disk-full test")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): disk-full test skipped")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_disk_full_mid_download_fails_clearly_keeps_the_partial_and_resumes(
    small_data_dir, start_daemon, daemon_root, slow_hub: SlowHub, gguf_4mib: bytes
):
    slow_hub.add(REPO, {FILE: gguf_4mib})
    filler = small_data_dir / "filler"

    def another_program_takes_the_space() -> None:
        free = shutil.disk_usage(small_data_dir).free
        with filler.open("wb") as fh:
            fh.write(b"\0" * (free - int(1.5 * MiB)))

    slow_hub.before_body = another_program_takes_the_space
    daemon = start_daemon(slow_hub.env(daemon_root))
    dest = hf_model_path(daemon.data_dir, REPO, FILE)
    partial = partial_path(dest)

    report = daemon.report(REPO)
    error = report["error"]
    assert (report["state"], error["state"], error["code"]) == ("failed", "downloading", "disk_full")
    assert "disk filled up" in error["message"] and FILE in error["message"]
    assert "free" in error["hint"] and "resumes" in error["hint"]
    assert not dest.exists(), "a partial download reached the final path"
    kept = partial.stat().st_size
    assert kept >= CHUNK_SIZE and partial.read_bytes() == gguf_4mib[:kept], "the partial is kept, a prefix"
    # The daemon's own state writes hit the full disk too: it still answers, lists the job.
    assert daemon.client.get("/status").status_code == 200
    assert report["job_id"] in {j["job_id"] for j in daemon.client.get("/jobs").json()["jobs"]}
    unsaved = [e for e in daemon.log_events() if e.get("event") == "could not save state"]
    assert unsaved and all(e["level"] == "error" and "free space" in e["hint"] for e in unsaved)

    filler.unlink()
    again = daemon.report(REPO)
    assert again["state"] == "ready", again["error"]
    assert slow_hub.bodies[-1].start == kept, "the second prepare did not resume"
    assert dest.read_bytes() == gguf_4mib and not partial.exists()


@pytest.mark.parametrize("server", ["llama-server", "python"])
def test_not_enough_memory_to_load_fails_with_a_memory_hint(start_daemon, daemon_root, server):
    """REAL llama.cpp (bundled SmolLM2), its server started under ``ulimit -v`` ~1 GB (a
    wrapper set as the engine's python, or as its llama-server): loading with a context
    too long for that (4096 tokens for llama-cpp-python; 4 slots × 32768 for llama-server)
    runs out of address space. The user is told it is memory, and what to do."""
    if server == "python":
        found = importlib.util.find_spec("llama_cpp") is not None
        target, only_for, option = sys.executable, "*llama_cpp.server*", "python"
        settings = 'server = "python"\nn_ctx = 4096\n'
    else:
        found = shutil.which("llama-server") is not None
        target, only_for, option = shutil.which("llama-server"), "*--model*", "server_binary"
        settings = 'server = "llama-server"\nn_ctx = 32768\nparallel = 4\n'
    if not found:
        if os.environ.get("LTCAI_REQUIRE_E2E"):
            pytest.fail(f"{server} (llama.cpp) is missing in CI")
        pytest.skip(f"needs {server} (scripts/test sets it up)")
    wrapper = daemon_root / f"{server}-1g"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case "$*" in {only_for}) ulimit -v 1000000 ;; esac\n'  # only the server, not the check
        f'exec {target} "$@"\n'
    )
    wrapper.chmod(0o700)
    daemon = start_daemon(config=f'[engines.llamacpp]\n{option} = "{wrapper}"\n{settings}n_threads = 2\n')
    report = daemon.report("smollm2", engine="llamacpp")
    error = report["error"]
    assert (report["state"], error["state"], error["code"]) == ("failed", "server_starting", "not_enough_memory")
    assert "ran out of memory" in error["message"]
    assert "smaller quantization" in error["hint"] and "n_ctx" in error["hint"]
    assert "allocate" in error["hint"].lower()  # the engine's own line is there too
    assert daemon.engine_processes() == []
