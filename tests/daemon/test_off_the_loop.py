"""File work the daemon does while it serves runs in worker threads, never on the event loop.

In-process: each blocking call is wrapped to record the thread it runs in, and the test
asserts it was not the event loop's (issue 10, defect 2). The engine output pump's log
writes are proven in ``tests/runtime/test_process.py``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ltcai.config.paths import default_paths
from ltcai.config.settings import load_settings
from ltcai.daemon import app
from ltcai.daemon.jobs import _KEEP_FINISHED_JOBS, JobManager
from ltcai.daemon.prepare_machine import PrepareMachine
from ltcai.daemon.store import StateStore


@pytest.mark.asyncio
async def test_pruning_old_jobs_deletes_their_records_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: ``JobManager._prune`` deleted job files on the loop (this test failed)."""
    store = StateStore(tmp_path / "state")
    store.prepare()
    for i in range(_KEEP_FINISHED_JOBS + 2):
        machine = PrepareMachine(f"job{i:04d}", "fake", "model")
        store.write_sync(f"jobs/job{i:04d}", {"machine": machine.snapshot(), "resolution": None, "created_at": i})
    loop_thread = threading.get_ident()
    deleted_in: dict[str, int] = {}
    real_delete = StateStore.delete_sync

    def recording_delete(self: StateStore, name: str) -> None:
        deleted_in[name] = threading.get_ident()
        real_delete(self, name)

    monkeypatch.setattr(StateStore, "delete_sync", recording_delete)
    jobs = JobManager(store)
    await jobs.restore()  # more finished jobs than kept: the oldest two go
    assert sorted(deleted_in) == ["jobs/job0000", "jobs/job0001"]
    assert loop_thread not in deleted_in.values()
    assert store.names_sync("jobs")[0] == "jobs/job0002" and len(jobs.jobs) == _KEEP_FINISHED_JOBS


@pytest.mark.asyncio
async def test_a_sighup_reload_reads_the_config_in_a_worker_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: SIGHUP's reload parsed the config file on the loop (this test failed)."""
    paths = default_paths({"LTCAI_DATA_DIR": str(tmp_path / "data"), "LTCAI_CONFIG_DIR": str(tmp_path / "config")})
    paths.config_file.parent.mkdir(parents=True)
    paths.config_file.write_text('log_level = "warning"\n')
    loop_thread = threading.get_ident()
    ran_in: dict[str, int] = {}

    def recording(name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            ran_in[name] = threading.get_ident()
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(app, "load_settings", recording("load_settings", load_settings))
    monkeypatch.setattr(app, "configure_logging", recording("configure_logging", lambda *a, **k: None))
    reloaded: list[Any] = []
    services = SimpleNamespace(
        settings=load_settings({}, paths=paths), profiles=SimpleNamespace(reload_user_table=reloaded.append)
    )
    assert services.settings.log_level == "warning"
    paths.config_file.write_text('log_level = "error"\n')
    await app._reload(services)  # type: ignore[arg-type]
    assert services.settings.log_level == "error" and reloaded
    assert set(ran_in) == {"load_settings", "configure_logging"}
    assert loop_thread not in ran_in.values()
