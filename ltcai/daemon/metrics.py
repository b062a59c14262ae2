"""Prometheus metrics (``GET /metrics``), names under ``ltcai_``, with ``prometheus_client``.

The registry is built per daemon (no import-time global: two daemons in one test process
do not share counters). ``prometheus_client`` costs ~100 ms to import (its exposition
module pulls in http.server and wsgiref), so the daemon loads it in a worker thread just
after it is ready; what happens before that is kept in order and replayed once it is
there. Counters and histograms are fed as things happen; the gauges (queue depth, memory,
loaded models) are read off the lifecycle at each scrape, and the text is rendered in a
worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .._lazy import import_off_loop
from . import memory

if TYPE_CHECKING:
    from .lifecycle import Lifecycle
    from .services import Services

__all__ = ["Metrics", "metrics_route"]

# Seconds: a first token from a warm small model (~50 ms) to a long answer on a CPU (minutes).
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Prepares: a ready model re-joined (ms) to a download of many GB (an hour).
_PREPARE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
_PENDING_LIMIT = 10_000  # before prometheus_client is loaded (well under a second of traffic)


@dataclass
class _Instruments:
    registry: Any
    requests: Any
    request_seconds: Any
    first_token_seconds: Any
    tokens: Any
    prepares: Any
    prepare_seconds: Any
    loads: Any
    unloads: Any
    evictions: Any
    in_flight: Any
    queue_depth: Any
    busy_slots: Any
    model_memory: Any
    memory_used: Any
    memory_budget: Any
    models_loaded: Any


def _build(prometheus_client: Any) -> _Instruments:
    registry = prometheus_client.CollectorRegistry(auto_describe=True)
    c, h, g = prometheus_client.Counter, prometheus_client.Histogram, prometheus_client.Gauge

    def counter(name: str, doc: str, labels: tuple[str, ...]) -> Any:
        return c(name, doc, labels, registry=registry)

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
        return g(name, doc, labels, registry=registry)

    return _Instruments(
        registry=registry,
        requests=counter("ltcai_requests", "Chat/completion/embedding requests by route, model and outcome (ok or an error code).", ("route", "engine", "model", "outcome")),
        request_seconds=h("ltcai_request_duration_seconds", "From a request's arrival (queue and just-in-time prepare included) to its last byte.",
                          ("route", "engine", "model"), buckets=_LATENCY_BUCKETS, registry=registry),
        first_token_seconds=h("ltcai_time_to_first_token_seconds", "Streams: from arrival to the first generated text, reasoning or tool call.",
                              ("route", "engine", "model"), buckets=_LATENCY_BUCKETS, registry=registry),
        tokens=counter("ltcai_tokens", "Tokens as the engine reported them (streams: with stream_options.include_usage); direction in or out.", ("engine", "model", "direction")),
        prepares=counter("ltcai_prepares", "Finished prepare jobs by outcome (ok, degraded, failed, cancelled).", ("engine", "outcome")),
        prepare_seconds=h("ltcai_prepare_duration_seconds", "How long prepare jobs took.", ("engine",), buckets=_PREPARE_BUCKETS, registry=registry),
        loads=counter("ltcai_model_loads", "Models that became ready to chat.", ("engine",)),
        unloads=counter("ltcai_model_unloads", "Models unloaded, by cause: idle (keep_alive), evicted, requested.", ("engine", "cause")),
        evictions=counter("ltcai_evictions", "Idle models evicted to make room, by what was short: memory or max_loaded_models.", ("cause",)),
        in_flight=gauge("ltcai_requests_in_flight", "Requests on a model from arrival to last byte.", ("engine", "model")),
        queue_depth=gauge("ltcai_queue_depth", "Requests waiting for one of a model's slots.", ("engine", "model")),
        busy_slots=gauge("ltcai_busy_slots", "A model's slots answering a request.", ("engine", "model")),
        model_memory=gauge("ltcai_model_memory_bytes", "A loaded model's memory: estimated before start, or rss of its engine process.", ("engine", "model", "kind")),
        memory_used=gauge("ltcai_memory_used_bytes", "Estimated memory of the loaded models and of engines starting."),
        memory_budget=gauge("ltcai_memory_budget_bytes", "The memory budget (memory_budget)."),
        models_loaded=gauge("ltcai_models_loaded", "Models loaded now."),
    )  # fmt: skip


class Metrics:
    """The daemon's metrics; every ``record`` call is cheap and never touches I/O."""

    def __init__(self) -> None:
        self._instruments: _Instruments | None = None
        self._pending: list[Callable[[_Instruments], None]] = []
        self._client: Any = None
        self._scrape_lock = anyio.Lock()  # one scrape sets the gauges and renders at a time
        self._load_lock = anyio.Lock()  # the start-up load and a first scrape: one registry

    async def load(self) -> None:
        """Import prometheus_client off the loop, build the registry, replay what came before."""
        async with self._load_lock:
            if self._instruments is not None:
                return
            client = await import_off_loop("prometheus_client")
            self._client = client
            self._instruments = _build(client)
            pending, self._pending = self._pending, []
            for record in pending:
                record(self._instruments)

    def _record(self, record: Callable[[_Instruments], None]) -> None:
        if self._instruments is not None:
            record(self._instruments)
        elif len(self._pending) < _PENDING_LIMIT:
            self._pending.append(record)

    # -- what the daemon reports

    def request_done(self, route: str, engine: str, model: str, outcome: str, seconds: float) -> None:
        def record(m: _Instruments) -> None:
            m.requests.labels(route, engine, model, outcome).inc()
            m.request_seconds.labels(route, engine, model).observe(seconds)

        self._record(record)

    def first_token(self, route: str, engine: str, model: str, seconds: float) -> None:
        self._record(lambda m: m.first_token_seconds.labels(route, engine, model).observe(seconds))

    def tokens(self, engine: str, model: str, usage: dict[str, Any] | None) -> None:
        if not isinstance(usage, dict):
            return
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")

        def record(m: _Instruments) -> None:
            if isinstance(prompt, int) and prompt >= 0:
                m.tokens.labels(engine, model, "in").inc(prompt)
            if isinstance(completion, int) and completion >= 0:
                m.tokens.labels(engine, model, "out").inc(completion)

        self._record(record)

    def prepare_done(self, report: Any) -> None:
        """A prepare job ended with this report (status ok/degraded/failed/cancelled…)."""
        if report is None:
            return
        engine, outcome, seconds = report.engine, str(report.status), report.duration_s

        def record(m: _Instruments) -> None:
            m.prepares.labels(engine, outcome).inc()
            m.prepare_seconds.labels(engine).observe(seconds)

        self._record(record)

    def loaded(self, engine: str) -> None:
        self._record(lambda m: m.loads.labels(engine).inc())

    def unloaded(self, engine: str, cause: str) -> None:
        self._record(lambda m: m.unloads.labels(engine, cause).inc())

    def evicted(self, cause: str) -> None:
        self._record(lambda m: m.evictions.labels(cause).inc())

    # -- the scrape

    async def render(self, lifecycle: Lifecycle) -> tuple[bytes, str]:
        """The text exposition and its content type, the gauges read now."""
        await self.load()
        async with self._scrape_lock:
            return await self._render(lifecycle)

    async def _render(self, lifecycle: Lifecycle) -> tuple[bytes, str]:
        m = self._instruments
        assert m is not None
        models = lifecycle.services.models.all()
        pids = [x.served.process.pid for x in models if x.served.process is not None]
        rss = await memory.process_rss(pids) if pids else {}
        for gauge in (m.in_flight, m.queue_depth, m.busy_slots, m.model_memory):
            gauge.clear()  # models that went away leave no stale series
        for loaded in models:
            engine, model = loaded.key
            gate = loaded.gate
            m.in_flight.labels(engine, model).set(lifecycle.in_flight(loaded))
            m.queue_depth.labels(engine, model).set(gate.queued if gate else 0)
            m.busy_slots.labels(engine, model).set(gate.running if gate else 0)
            estimate = lifecycle.estimate(loaded)
            if estimate is not None:
                m.model_memory.labels(engine, model, "estimated").set(estimate.total)
            if loaded.served.process is not None and rss.get(loaded.served.process.pid) is not None:
                m.model_memory.labels(engine, model, "rss").set(rss[loaded.served.process.pid])
        m.memory_used.set(lifecycle.used_bytes())
        budget = lifecycle.budget_bytes()
        if budget is not None:
            m.memory_budget.set(budget)
        m.models_loaded.set(len(models))
        text = await anyio.to_thread.run_sync(self._client.generate_latest, m.registry)
        return text, self._client.CONTENT_TYPE_LATEST


def metrics_route(services: Services) -> Route:
    """``GET /metrics``: Prometheus' text format (on the socket, and on TCP behind the token)."""

    async def metrics(request: Request) -> Response:
        text, content_type = await services.metrics.render(services.lifecycle)
        return Response(text, media_type=content_type)

    return Route("/metrics", metrics)
