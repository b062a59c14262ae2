"""How the CLI shows things: live prepare progress, reports, tables. Plain text off a TTY."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from ..config.units import format_bytes

__all__ = ["Renderer", "capability_summary", "report_capabilities"]

_STATE_LABELS = {
    "resolving": "Resolving",
    "engine_check": "Checking engine",
    "engine_install": "Installing engine",
    "downloading": "Downloading",
    "server_starting": "Starting server",
    "model_serving": "Serving",
    "model_loading": "Loading",
    "smoke_test": "Smoke test",
    "ready": "Ready",
    "degraded": "Degraded",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "interrupted": "Interrupted",
}
_STATUS_STYLE = {"ok": "green", "degraded": "yellow", "failed": "red", "cancelled": "yellow", "interrupted": "yellow"}
_CAPABILITY_MARKS = {"ok": "✓", "degraded": "~", "failed": "✗"}  # untested: left out


def capability_summary(capabilities: dict[str, Any]) -> str:
    """The measured capabilities in one cell: ``chat✓ stream✓ tools✗``; untested ones left out."""
    marks = [f"{key}{_CAPABILITY_MARKS[c['status']]}" for key, c in capabilities.items() if c["status"] in _CAPABILITY_MARKS]
    return " ".join(marks) or "untested"


def report_capabilities(report: dict[str, Any]) -> dict[str, Any]:
    """The verdicts a prepare measured, from its smoke test's stage log (empty if none)."""
    for stage in report.get("stage_logs") or ():
        extra = stage.get("extra") or {}
        if stage.get("state") == "smoke_test" and "capabilities" in extra:
            return dict(extra["capabilities"])
    return {}


class Renderer:
    def __init__(self, *, json_output: bool = False) -> None:
        self.json_output = json_output
        self.out = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

    # -- generic --

    def emit_json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    def error(self, message: str, hint: str | None = None) -> None:
        self.err.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
        if hint:
            self.err.print(f"[dim]hint:[/] {escape(hint)}", markup=True, soft_wrap=True)

    def table(self, columns: list[str], rows: Iterable[list[Any]], *, empty: str) -> None:
        rows = list(rows)
        if not rows:
            self.out.print(empty)
            return
        table = Table(*columns, box=None, pad_edge=False, header_style="bold")
        for row in rows:
            # Text, not markup: values such as "[INST]" are data, never style tags.
            table.add_row(*(Text("" if v is None else str(v)) for v in row))
        self.out.print(table)

    # -- engines --

    def engines(self, engines: list[dict[str, Any]]) -> None:
        """One row per engine (local ones first), then how to make each missing one available."""
        if not engines:
            self.out.print("no engines registered")
            return
        ordered = sorted(engines, key=lambda e: (e.get("kind") == "remote", e["name"]))
        rows = [
            [
                e["name"],
                e.get("kind") or "",
                "available" if e["available"] else "not available",
                e.get("version") or "",
                _engine_details(e) if e["available"] else e.get("reason") or "",
            ]
            for e in ordered
        ]
        self.table(["ENGINE", "KIND", "STATUS", "VERSION", "DETAILS / WHY NOT"], rows, empty="")
        ready = [e["name"] for e in ordered if e["available"]]
        self.out.print(f"\n{len(ready)} of {len(ordered)} engines available" + (f": {', '.join(ready)}" if ready else ""), markup=False)
        hints = [(e["name"], e["install_hint"]) for e in ordered if not e["available"] and e.get("install_hint")]
        if hints:
            self.out.print("\nTo make one available:", markup=False)
            width = max(len(name) for name, _ in hints)
            for name, hint in hints:
                self.out.print(Text(f"  {name:<{width}}  {hint}"), soft_wrap=True)

    # -- models --

    def models(self, listing: dict[str, Any]) -> None:
        """``ltcai ps``: one row per served model, then the memory budget."""
        now = time.time()
        rows = [
            [
                m["model"],
                m["engine"],
                m["status"],
                m["pid"] or "",
                _memory(m.get("memory") or {}),
                f"{m.get('busy', 0)}/{m.get('slots', 1)}" + (f" +{m['queued']}" if m.get("queued") else ""),
                _ago(now, m.get("last_used")),
                "pinned" if m.get("pinned") else _until(now, m.get("unloads_at"), m.get("in_flight")),
            ]
            for m in listing["models"]
        ]
        self.table(
            ["MODEL", "ENGINE", "STATUS", "PID", "MEMORY (EST / RSS)", "SLOTS", "LAST USE", "UNLOADS"],
            rows,
            empty="no models served; start one with `ltcai prepare MODEL`",
        )
        budget = listing.get("memory_budget")
        if budget:
            used = _size(listing.get("memory_used_estimated") or 0)
            limit = listing.get("max_loaded_models")
            cap = f"; at most {limit} loaded" if limit else ""
            self.out.print(f"\nmemory: {used} estimated of {_size(budget)} ({listing['memory_budget_setting']}){cap}", markup=False)
        gpu_budget = listing.get("gpu_memory_budget")
        if gpu_budget:  # an NVIDIA GPU: offloaded layers count here, not in RAM
            used = _size(listing.get("gpu_memory_used_estimated") or 0)
            measured = f"; {_size(listing['gpu_memory_used'])} in use (nvidia-smi)" if listing.get("gpu_memory_used") is not None else ""
            self.out.print(f"GPU memory: {used} estimated of {_size(gpu_budget)} ({listing['gpu_memory_budget_setting']}){measured}", markup=False)

    # -- prepare --

    def follow_prepare(self, events: Iterator[dict[str, Any]]) -> dict[str, Any] | None:
        """Show a prepare's events live; return the final report."""
        if self.json_output:
            report = None
            for event in events:
                sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
                sys.stdout.flush()
                if event.get("type") == "report":
                    report = event["report"]
            return report
        live = _LiveProgress(self.err)
        report = None
        with live.progress:
            for event in events:
                kind = event.get("type")
                if kind == "state":
                    live.end_bar()
                    finished = event.get("from")
                    if finished:
                        label = _STATE_LABELS.get(finished, finished)
                        mark = "[red]✗[/]" if event["state"] == "failed" else "[green]✓[/]"
                        message = escape(event.get("message", ""))
                        self.err.print(f"{mark} [bold]{label:<18}[/] {message}", markup=True, soft_wrap=True)
                elif kind == "progress":
                    live.show(event)
                elif kind == "report":
                    report = event["report"]
        if report is not None:
            self.prepare_report(report)
        return report

    def follow_install(self, events: Iterator[dict[str, Any]]) -> dict[str, Any] | None:
        """Show an engine install's events live; return its last event, ``installed``.
        (An ``error`` event raises in the client: the CLI shows it like any error.)"""
        last = None
        if self.json_output:
            for event in events:
                sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
                sys.stdout.flush()
                last = event
            return last
        live = _LiveProgress(self.err)
        with live.progress:
            for event in events:
                last = event
                if event.get("type") == "progress":
                    live.show(event)
        if last is None or last.get("type") != "installed":
            self.error("the daemon ended the install without a word", "see `ltcai logs`")
        else:
            check = last.get("check") or {}
            verb = "already available" if last.get("already") else "installed"
            where = _engine_details(check)
            self.out.print(f"[bold green]{verb}[/]: {escape(check.get('version') or '')} {escape(where)}".rstrip(), markup=True, soft_wrap=True)
        return last

    def prepare_report(self, report: dict[str, Any]) -> None:
        status = report.get("status", "failed")
        style = _STATUS_STYLE.get(status, "white")
        duration = report.get("duration_s")
        took = f" in {duration:.1f} s" if isinstance(duration, (int, float)) else ""
        label = _STATE_LABELS.get(report.get("state"), status)
        self.out.print(f"[bold {style}]{label}[/]{took}: {escape(report.get('message', ''))}", markup=True, soft_wrap=True)
        smoke = report.get("smoke_test")
        if smoke:
            smoke_style = _STATUS_STYLE.get(smoke["status"], "white")
            reason = escape(smoke["reason"])
            self.out.print(f"  smoke test: [{smoke_style}]{smoke['status']}[/] ({reason}, {smoke['seconds']:.2f} s)", markup=True)
            self.out.print(f"  prompt:     {smoke['prompt']}", markup=False)
            self.out.print(f"  answer:     {smoke['answer']!r}", markup=False)
        for key, verdict in report_capabilities(report).items():
            style = _STATUS_STYLE.get(verdict["status"], "white")
            self.out.print(f"  {key + ':':<12}[{style}]{verdict['status']}[/] ({escape(verdict['reason'])})", markup=True, soft_wrap=True)
        error = report.get("error")
        if error and status == "failed":
            self.error(f"{error['message']} [{error['code']} in {error['state']}]", error.get("hint"))


def _engine_details(engine: dict[str, Any]) -> str:
    """An available engine's check details in a line: where its server or interpreter is."""
    details = engine.get("details") or {}
    return ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in details.items() if isinstance(value, str) and value)


def _size(count: float | None) -> str:
    return "?" if count is None else format_bytes(count)


def _memory(memory: dict[str, Any]) -> str:
    estimated = memory.get("estimated")
    return f"{_size(estimated['total']) if estimated else '?'} / {_size(memory.get('rss'))}"


def _ago(now: float, when: float | None) -> str:
    if not when:
        return ""
    seconds = max(0.0, now - when)
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def _until(now: float, when: float | None, in_flight: int | None) -> str:
    if in_flight:
        return "in use"
    if when is None:
        return "never"
    seconds = max(0.0, when - now)
    return f"in {seconds:.0f} s" if seconds < 120 else f"in {seconds / 60:.0f} min"


class _AmountColumn(ProgressColumn):
    """Bytes and speed for a download, ``n/m`` for a build's steps."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes, self._speed, self._steps = DownloadColumn(), TransferSpeedColumn(), MofNCompleteColumn()

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") == "B":
            return Text.assemble(self._bytes.render(task), " ", self._speed.render(task))
        return self._steps.render(task)


class _LiveProgress:
    """Progress events on a terminal: a bar for bytes (downloads) or steps (a build), a
    dim line for anything else. While a steps bar runs, the lines between its steps
    (compiler chatter) only relabel the bar instead of scrolling hundreds of lines."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            _AmountColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._console = console
        self._bar: TaskID | None = None
        self._unit: str | None = None

    def show(self, event: dict[str, Any]) -> None:
        data = event.get("progress") or {}
        unit, total, message = data.get("unit"), data.get("total"), event.get("message", "")
        if unit in ("B", "steps") and total:
            if self._bar is None or self._unit != unit:
                self.end_bar()
                self._bar, self._unit = self.progress.add_task(message[:40], total=total, unit=unit), unit
            self.progress.update(self._bar, completed=data.get("done") or 0, total=total)
        elif self._unit == "steps" and self._bar is not None:
            self.progress.update(self._bar, description=message[:40])
        elif message:
            self._console.print(f"  [dim]{escape(message)}[/]", markup=True, soft_wrap=True)

    def end_bar(self) -> None:
        if self._bar is not None:
            self.progress.remove_task(self._bar)
            self._bar = self._unit = None
