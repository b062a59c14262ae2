"""A config reload (SIGHUP) changes ``max_queue`` for models already loaded, on a real
``ltcai serve`` with the FAKE engine; requests already queued are never dropped."""

from __future__ import annotations

import signal
from typing import Any

import anyio
import httpx
import pytest

from tests.daemon.test_lifecycle import _hold_stream  # one stream held open, as the lifecycle tests hold it


@pytest.mark.asyncio
async def test_a_reloaded_max_queue_applies_to_a_loaded_model_and_keeps_its_queue(start_daemon, async_client_for, wait_until):
    daemon = start_daemon(config="max_queue = 0\n")
    model = "fake-stall-stream-one-slot-reload"
    assert daemon.report(model)["ready_to_chat"]

    def queued() -> int:
        return {m["model"]: m for m in daemon.client.get("/models").json()["models"]}[model]["queued"]

    def reload(config: str) -> None:
        reloads = sum(e.get("event") == "config reloaded" for e in daemon.log_events())
        (daemon.config_dir / "config.toml").write_text(config)
        daemon.send(signal.SIGHUP)
        wait_until(lambda: sum(e.get("event") == "config reloaded" for e in daemon.log_events()) > reloads)

    async with async_client_for(daemon.socket_path, timeout=None) as client:
        answers: list[httpx.Response] = []

        async def ask() -> Any:
            answer = await client.post("/chat", json={"model": model, "engine": "fake", "prompt": "hi"})
            answers.append(answer)
            return answer

        opened, release = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_hold_stream, client, model, opened, release)  # takes the one slot
            with anyio.fail_after(10):
                await opened.wait()
            assert (await ask()).status_code == 429  # max_queue 0: no waiting

            await anyio.to_thread.run_sync(reload, "max_queue = 1\n")
            tg.start_soon(ask)  # the loaded model's queue now has a place
            await anyio.to_thread.run_sync(lambda: wait_until(lambda: queued() == 1))

            await anyio.to_thread.run_sync(reload, "max_queue = 0\n")
            refused = await ask()  # the new bound refuses newcomers…
            assert refused.status_code == 429 and "max_queue 0" in refused.json()["error"]["message"]
            assert queued() == 1  # …and the request already waiting stays
            release.set()
    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[-1].json()["content"] == "2 + 2 = 4."
