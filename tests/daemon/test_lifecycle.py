"""Model lifecycle on a real ``ltcai serve`` subprocess with the FAKE engine (real server processes).

Idle unload (keep_alive: global, per model, per request), max_loaded_models and the memory
budget (LRU eviction of idle, unpinned models; a refusal with numbers when nothing can
go), pins, the per-model queue (429 with Retry-After, a client that leaves the queue),
``ltcai ps`` / ``ltcai stop``. The fake's memory estimate is its 1 MB of weights plus the
default engine overhead; tests read it from ``/models`` rather than assume it.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest


def _models(daemon) -> dict[str, dict[str, Any]]:
    return {m["model"]: m for m in daemon.client.get("/models").json()["models"]}


def _chat(daemon, model: str, **body: Any) -> httpx.Response:
    return daemon.client.post("/chat", json={"model": model, "engine": "fake", "prompt": "What is 2+2?", **body})


def _ready(daemon, model: str) -> dict[str, Any]:
    report = daemon.report(model)
    assert report["ready_to_chat"], report
    return report


def test_an_idle_model_unloads_after_keep_alive_and_comes_back_just_in_time(start_daemon, pid_alive, wait_until):
    daemon = start_daemon({"LTCAI_KEEP_ALIVE": "1s"})
    model = "fake-ok-idle"
    _ready(daemon, model)
    ready_at = time.monotonic()
    pid = daemon.engine_pid(model)
    listed = _models(daemon)[model]
    assert listed["keep_alive_s"] == 1.0
    assert listed["unloads_at"] == pytest.approx(time.time() + 1.0, abs=0.8)

    wait_until(lambda: not pid_alive(pid), timeout=10)
    assert time.monotonic() - ready_at >= 0.9  # not before its keep_alive ran out
    assert model not in _models(daemon)
    events = [e for e in daemon.log_events() if e.get("event") == "model unloaded"]
    assert [(e["model"], e["cause"]) for e in events] == [(model, "idle")]

    # The next chat prepares it again (the /v1 route does it in the daemon: tests/e2e).
    chatted = daemon.cli("chat", model, "2+2?", "--engine", "fake")
    assert chatted.returncode == 0, chatted.stderr
    assert chatted.stdout.splitlines()[-1] == "2 + 2 = 4."
    assert daemon.engine_pid(model) != pid


def test_keep_alive_per_model_in_the_config_and_per_request(start_daemon, pid_alive, wait_until):
    config = '[models."fake-ok-short"]\nkeep_alive = "1s"\n'
    daemon = start_daemon(config=config)  # global keep_alive: the default 5 minutes
    short, once, kept = "fake-ok-short", "fake-ok-once", "fake-ok-short-kept"
    for model in (short, once):
        _ready(daemon, model)
    short_pid, once_pid = daemon.engine_pid(short), daemon.engine_pid(once)
    assert _models(daemon)[once]["keep_alive_s"] == 300.0

    # keep_alive 0 on a request: unloaded as soon as that request is answered.
    assert _chat(daemon, once, keep_alive=0).json()["content"] == "2 + 2 = 4."
    wait_until(lambda: not pid_alive(once_pid), timeout=5)
    wait_until(lambda: not pid_alive(short_pid), timeout=5)  # its own 1 s from the config
    assert _models(daemon) == {}

    # keep_alive -1 on a request: kept past the config's 1 s, until unloaded by hand.
    _ready(daemon, short)
    assert _chat(daemon, short, keep_alive=-1).status_code == 200
    listed = _models(daemon)[short]
    assert listed["keep_alive_s"] is None and listed["unloads_at"] is None
    time.sleep(1.5)
    assert short in _models(daemon)

    # The config's key matched by id only: another id is not affected.
    _ready(daemon, kept)
    assert _models(daemon)[kept]["keep_alive_s"] == 300.0

    bad = _chat(daemon, short, keep_alive="soon")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_field"
    assert "5m" in bad.json()["error"]["hint"]


def test_a_stream_in_flight_is_never_cut_by_keep_alive(start_daemon, pid_alive, wait_until):
    """keep_alive 0 runs out while the stream (13 chunks 0.1 s apart) is still going."""
    daemon = start_daemon()
    model = "fake-slow-stream-ttl"
    _ready(daemon, model)
    pid = daemon.engine_pid(model)
    body = {"model": model, "engine": "fake", "prompt": "hi", "stream": True, "keep_alive": "0s"}
    deltas = list(daemon.events("POST", "/chat", body))
    assert "".join(d.get("content", "") for d in deltas) == "Two plus two makes four, and that is all there is to it."
    assert deltas[-1] == {"finish_reason": "stop"}
    wait_until(lambda: not pid_alive(pid), timeout=5)  # and then, idle at once, it goes


async def _hold_stream(client: httpx.AsyncClient, model: str, opened: anyio.Event, release: anyio.Event) -> None:
    """A stream from a stall-stream model: one chunk, then open until ``release``."""
    body = {"model": model, "engine": "fake", "prompt": "hi", "stream": True}
    async with client.stream("POST", "/chat", json=body) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()  # held: a dropped line iterator would close the stream
        while not (await lines.__anext__()).strip():
            pass
        opened.set()
        await release.wait()


@contextlib.asynccontextmanager
async def _stream_open(client: httpx.AsyncClient, model: str) -> AsyncIterator[None]:
    """Inside: a stream from a stall-stream model is open, so the model is busy."""
    opened, release = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_hold_stream, client, model, opened, release)
        with anyio.fail_after(10):
            await opened.wait()
        try:
            yield
        finally:
            release.set()


def test_max_loaded_models_evicts_the_least_recently_used_idle_model(start_daemon, pid_alive):
    daemon = start_daemon({"LTCAI_MAX_LOADED_MODELS": "2"})
    a, b, c = "fake-ok-lru-a", "fake-ok-lru-b", "fake-ok-lru-c"
    _ready(daemon, a)
    _ready(daemon, b)
    pids = {m: daemon.engine_pid(m) for m in (a, b)}
    assert _chat(daemon, a).status_code == 200  # a is now the more recently used
    _ready(daemon, c)
    assert set(_models(daemon)) == {a, c}
    assert not pid_alive(pids[b]) and pid_alive(pids[a])
    evicted = [e for e in daemon.log_events() if e.get("event") == "model unloaded"]
    assert [(e["model"], e["cause"]) for e in evicted] == [(b, "evicted")]


@pytest.mark.asyncio
async def test_busy_and_pinned_models_are_never_evicted_and_the_refusal_says_why(start_daemon, async_client_for, pid_alive):
    daemon = start_daemon({"LTCAI_MAX_LOADED_MODELS": "1"})
    busy, other, third = "fake-stall-stream-busy", "fake-ok-other", "fake-ok-third"
    _ready(daemon, busy)
    busy_pid = daemon.engine_pid(busy)
    async with async_client_for(daemon.socket_path, timeout=None) as client, _stream_open(client, busy):
        report = await anyio.to_thread.run_sync(daemon.report, other)
        assert report["state"] == "failed"
        assert report["error"]["code"] == "not_enough_memory"
        assert report["error"]["state"] == "server_starting"
        assert "max_loaded_models is 1" in report["error"]["message"] and "1 busy" in report["error"]["message"]
        assert "ltcai unload" in report["error"]["hint"]
        assert other not in _models(daemon) and pid_alive(busy_pid)
    # The stream is over: now the busy model is idle and goes.
    assert daemon.report(other)["state"] == "ready"
    assert not pid_alive(busy_pid)

    pinned = daemon.client.post("/models/pin", json={"model": other, "engine": "fake"})
    assert pinned.status_code == 200 and pinned.json()["model"]["pinned"] is True
    refused = daemon.report(third)
    assert refused["error"]["code"] == "not_enough_memory" and "1 pinned" in refused["error"]["message"]
    assert daemon.client.post("/models/unpin", json={"model": other, "engine": "fake"}).json()["model"]["pinned"] is False
    assert daemon.report(third)["state"] == "ready"
    assert set(_models(daemon)) == {third}


@pytest.mark.asyncio
async def test_a_memory_budget_for_one_model_evicts_the_idle_one_and_refuses_while_it_is_busy(start_daemon, async_client_for):
    daemon = start_daemon({"LTCAI_MEMORY_BUDGET": "100MB"})  # one fake (~66 MiB) fits, two do not
    first, second = "fake-stall-stream-mem-a", "fake-ok-mem-b"
    _ready(daemon, first)
    listing = daemon.client.get("/models").json()
    need = listing["models"][0]["memory"]["estimated"]["total"]
    assert listing["memory_budget"] == 100_000_000 and listing["memory_used_estimated"] == need
    assert need < 100_000_000 < 2 * need

    async with async_client_for(daemon.socket_path, timeout=None) as client, _stream_open(client, first):
        report = await anyio.to_thread.run_sync(daemon.report, second)
        message = report["error"]["message"]
        assert report["error"]["code"] == "not_enough_memory", report
        assert re.search(r"needs \d+\.\d MiB; \d+\.\d MiB free of the 95\.4 MiB memory budget after unloading 0 idle models; 1 busy", message), message
    assert daemon.report(second)["state"] == "ready"
    assert set(_models(daemon)) == {second}


@pytest.mark.asyncio
async def test_the_queue_answers_429_past_max_queue_and_a_client_that_leaves_frees_its_place(start_daemon, async_client_for, wait_until):
    daemon = start_daemon({"LTCAI_MAX_QUEUE": "1"})
    model = "fake-stall-stream-one-slot-q"
    _ready(daemon, model)

    def queued() -> int:
        return _models(daemon)[model]["queued"]

    async with async_client_for(daemon.socket_path, timeout=None) as client:
        answers: list[httpx.Response] = []

        async def ask() -> None:
            answers.append(await client.post("/chat", json={"model": model, "engine": "fake", "prompt": "hi"}))

        async with anyio.create_task_group() as tg, _stream_open(client, model):  # takes the one slot
            leaver = anyio.CancelScope()
            tg.start_soon(_run_in, leaver, ask)  # waits in the queue
            await anyio.to_thread.run_sync(lambda: wait_until(lambda: queued() == 1))
            full = await client.post("/chat", json={"model": model, "engine": "fake", "prompt": "hi"})
            assert full.status_code == 429, full.text
            assert full.json()["error"]["code"] == "too_busy"
            assert int(full.headers["retry-after"]) >= 1
            leaver.cancel()  # its client hangs up: it leaves the queue
            await anyio.to_thread.run_sync(lambda: wait_until(lambda: queued() == 0))
            tg.start_soon(ask)  # there is a place again
            await anyio.to_thread.run_sync(lambda: wait_until(lambda: queued() == 1))
            assert _models(daemon)[model]["busy"] == 1
        # the stream ended (leaving _stream_open); the queued request ran
        assert [a.status_code for a in answers] == [200]
        assert answers[0].json()["content"] == "2 + 2 = 4."
    assert _models(daemon)[model]["busy"] == 0 and queued() == 0


async def _run_in(scope: anyio.CancelScope, work: Any) -> None:
    with scope:
        await work()


def test_ps_shows_memory_slots_and_unload_time_and_pin_keeps_a_model(start_daemon, pid_alive, wait_until):
    daemon = start_daemon({"LTCAI_KEEP_ALIVE": "1s"})
    model = "fake-ok-ps"
    _ready(daemon, model)
    pinned = daemon.cli("pin", model, "--engine", "fake")
    assert pinned.returncode == 0 and "pinned" in pinned.stdout, pinned.stderr
    pid = daemon.engine_pid(model)
    time.sleep(1.5)
    listed = json.loads(daemon.cli("ps", "--json").stdout)
    (entry,) = listed
    assert entry["model"] == model and entry["pinned"] is True and entry["unloads_at"] is None
    assert entry["memory"]["estimated"]["total"] > entry["memory"]["estimated"]["weights"] == 1_000_000
    assert entry["memory"]["rss"] > 1_000_000  # the fake server's resident memory, measured
    assert (entry["slots"], entry["busy"], entry["queued"], entry["in_flight"]) == (16, 0, 0, 0)
    assert entry["last_used"] <= time.time()
    table = daemon.cli("ps").stdout
    assert model in table and "pinned" in table and "MEMORY (EST / RSS)" in table
    assert "memory:" in table and "80% of memory" in table

    assert daemon.cli("unpin", model, "--engine", "fake").returncode == 0
    wait_until(lambda: not pid_alive(pid), timeout=5)
    assert "no models served" in daemon.cli("ps").stdout


def test_ltcai_stop_stops_the_daemon_and_its_engines(start_daemon, pid_alive):
    daemon = start_daemon()
    model = "fake-ok-stop"
    _ready(daemon, model)
    pid = daemon.engine_pid(model)
    stopped = daemon.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert f"pid {daemon.process.pid}" in stopped.stdout
    assert daemon.process.wait(timeout=5) == 0
    assert not pid_alive(pid)
    assert any(e.get("event") == "stopping" and e.get("reason") == "ltcai stop" for e in daemon.log_events())


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by (name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_move_with_traffic_on_the_socket_and_behind_the_token_on_tcp(start_daemon):
    port = _free_port()
    daemon = start_daemon({"LTCAI_HTTP": f"127.0.0.1:{port}", "LTCAI_MEMORY_BUDGET": "1GiB"})
    model = "fake-ok-metrics"
    before = _samples(daemon.client.get("/metrics").text)
    assert before[("ltcai_memory_budget_bytes", ())] == 1 << 30
    assert before[("ltcai_models_loaded", ())] == 0

    _ready(daemon, model)
    labels = (("engine", "fake"), ("model", model))  # sorted, as _samples keys them
    assert _chat(daemon, model).status_code == 200
    deltas = list(daemon.events("POST", "/chat", {"model": model, "engine": "fake", "prompt": "hi", "stream": True,
                                                  "stream_options": {"include_usage": True}}))
    assert deltas[-1].get("usage")
    assert _chat(daemon, "fake-ok-never-prepared-m").status_code == 409
    response = daemon.client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    after = _samples(response.text)

    def at(name: str, **extra: str) -> float:
        return after[(name, tuple(sorted({"engine": "fake", "model": model, **extra}.items())))]

    assert at("ltcai_requests_total", route="/chat", outcome="ok") == 2
    refused = (("engine", "fake"), ("model", "fake-ok-never-prepared-m"), ("outcome", "model_not_ready"), ("route", "/chat"))
    assert after[("ltcai_requests_total", refused)] == 1
    assert at("ltcai_request_duration_seconds_count", route="/chat") == 2
    assert at("ltcai_time_to_first_token_seconds_count", route="/chat") == 1
    # The fake reports usage: one non-streamed answer and one stream that asked for it.
    assert at("ltcai_tokens_total", direction="out") >= 2 and at("ltcai_tokens_total", direction="in") >= 2
    assert after[("ltcai_prepares_total", (("engine", "fake"), ("outcome", "ok")))] == 1
    assert after[("ltcai_prepare_duration_seconds_count", (("engine", "fake"),))] == 1
    assert after[("ltcai_model_loads_total", (("engine", "fake"),))] == 1
    assert after[("ltcai_models_loaded", ())] == 1
    assert at("ltcai_queue_depth") == 0 and at("ltcai_requests_in_flight") == 0
    assert at("ltcai_model_memory_bytes", kind="estimated") == after[("ltcai_memory_used_bytes", ())] > 1_000_000
    assert at("ltcai_model_memory_bytes", kind="rss") > 0

    assert daemon.client.post("/models/unload", json={"model": model, "engine": "fake"}).status_code == 200
    final = _samples(daemon.client.get("/metrics").text)
    assert final[("ltcai_model_unloads_total", (("cause", "requested"), ("engine", "fake")))] == 1
    assert ("ltcai_queue_depth", labels) not in final  # a model gone leaves no stale series

    token = (daemon.config_dir / "token").read_text().strip()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as tcp:
        assert tcp.get("/metrics").status_code == 401
        scraped = tcp.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert scraped.status_code == 200 and "ltcai_requests_total" in scraped.text


def test_a_config_reload_that_shortens_keep_alive_applies_to_a_model_already_idle(start_daemon, pid_alive, wait_until):
    """The reaper sleeps until the next deadline (here 5 minutes away): SIGHUP must wake it."""
    import signal

    daemon = start_daemon()
    model = "fake-ok-reload"
    _ready(daemon, model)
    pid = daemon.engine_pid(model)
    (daemon.config_dir / "config.toml").write_text('keep_alive = "1s"\n')
    daemon.send(signal.SIGHUP)
    wait_until(lambda: not pid_alive(pid), timeout=10)
    assert model not in _models(daemon)
