"""What each ``ltcai`` command does."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..config.settings import load_settings
from ..errors import InvalidRequest, LtcaiError
from ._client import DaemonClient, RemoteError
from ._render import Renderer, capability_summary

__all__ = ["run_command"]


def _socket(args: argparse.Namespace) -> Path:
    if getattr(args, "socket", None):
        return Path(args.socket).expanduser()
    return load_settings().paths.socket_path


def _client(args: argparse.Namespace) -> DaemonClient:
    return DaemonClient(_socket(args))


def run_command(args: argparse.Namespace, ui: Renderer) -> int:
    handler = _COMMANDS[args.command]
    return handler(args, ui)


def _serve(args: argparse.Namespace, ui: Renderer) -> int:
    from ..daemon.app import serve  # the daemon's imports stay out of every other command

    return serve(Path(args.socket).expanduser() if args.socket else None, http=args.http, allow_remote=args.allow_remote)


def _token(args: argparse.Namespace, ui: Renderer) -> int:
    from ..config.token import ensure_token

    token = ensure_token(load_settings().paths.token_file)
    ui.emit_json({"token": token}) if ui.json_output else print(token)
    return 0


def _status(args: argparse.Namespace, ui: Renderer) -> int:
    status = _client(args).get("/status")
    if ui.json_output:
        ui.emit_json(status)
        return 0
    ui.out.print(f"ltcai {status['version']} running (pid {status['pid']}, up {status['uptime_s']:.0f} s)")
    ui.out.print(f"  socket:   {status['socket']}")
    ui.out.print(f"  data:     {status['data_dir']}")
    ui.out.print(f"  engines:  {', '.join(status['engines']) or 'none'}")
    ui.out.print(f"  jobs:     {status['jobs_running']} running")
    ui.out.print(f"  models:   {len(status['models'])} served")
    for warning in status.get("warnings", []):
        ui.out.print(f"[yellow]warning:[/] {warning}", markup=True)
    return 0


def _engines(args: argparse.Namespace, ui: Renderer) -> int:
    if args.action == "install":
        if not args.name:
            raise InvalidRequest("name the engine to install", hint="e.g. `ltcai engines install llamacpp`")
        outcome = ui.follow_install(_client(args).stream("POST", f"/engines/{quote(args.name, safe='')}/install"))
        return 0 if outcome and outcome.get("type") == "installed" else 1
    engines = _client(args).get("/engines")["engines"]
    if ui.json_output:
        ui.emit_json(engines)
        return 0
    ui.engines(engines)
    return 0


def _report_exit(report: dict[str, Any] | None) -> int:
    return 0 if report and report.get("ready_to_chat") else 1


def _prepare_and_show(
    client: DaemonClient, ui: Renderer, model: str, engine: str | None, force: bool = False, probe: bool = False,
    just_in_time: bool = False,
) -> int:
    body = {"model": model, "engine": engine, "force": force, "probe": probe, "just_in_time": just_in_time}
    report = ui.follow_prepare(client.stream("POST", "/prepare", body))
    return _report_exit(report)


def _prepare(args: argparse.Namespace, ui: Renderer) -> int:
    client = _client(args)
    if args.no_wait:
        body = {"model": args.model, "engine": args.engine, "force": args.force, "probe": args.probe, "stream": False}
        job = client.post("/prepare", body)
        if ui.json_output:
            ui.emit_json(job)
        else:
            ui.out.print(f"started job {job['job_id']} ({job['model']} on {job['engine']}); follow it with `ltcai jobs {job['job_id']} -f`")
        return 0
    return _prepare_and_show(client, ui, args.model, args.engine, args.force, args.probe)


def _jobs(args: argparse.Namespace, ui: Renderer) -> int:
    client = _client(args)
    if args.job_id:
        if args.follow:
            return _report_exit(ui.follow_prepare(client.stream("GET", f"/jobs/{quote(args.job_id)}/events")))
        job = client.get(f"/jobs/{quote(args.job_id)}")
        if ui.json_output:
            ui.emit_json(job)
        elif job.get("report"):
            ui.prepare_report(job["report"])
        else:
            ui.out.print(f"job {job['job_id']}: {job['state']} — {job['message']}")
        return 0
    jobs = client.get("/jobs")["jobs"]
    if ui.json_output:
        ui.emit_json(jobs)
        return 0
    rows = [
        [j["job_id"], j["engine"], j["model"], j["status"], j["state"], time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j["created_at"]))]
        for j in jobs
    ]
    ui.table(["JOB", "ENGINE", "MODEL", "STATUS", "STATE", "STARTED"], rows, empty="no jobs yet; start one with `ltcai prepare MODEL`")
    return 0


def _cancel(args: argparse.Namespace, ui: Renderer) -> int:
    job = _client(args).post(f"/jobs/{quote(args.job_id)}/cancel")
    if ui.json_output:
        ui.emit_json(job)
    else:
        ui.out.print(f"job {job['job_id']}: {job['status']} ({job['state']})")
    return 0


def _ps(args: argparse.Namespace, ui: Renderer) -> int:
    listing = _client(args).get("/models")
    if ui.json_output:
        ui.emit_json(listing["models"])
        return 0
    ui.models(listing)
    return 0


def _unload(args: argparse.Namespace, ui: Renderer) -> int:
    result = _client(args).post("/models/unload", {"model": args.model, "engine": args.engine})
    if ui.json_output:
        ui.emit_json(result)
    else:
        ui.out.print(f"unloaded {result['unloaded']['model']} ({result['unloaded']['engine']})")
    return 0


def _pin(args: argparse.Namespace, ui: Renderer) -> int:
    result = _client(args).post(f"/models/{args.command}", {"model": args.model, "engine": args.engine})
    if ui.json_output:
        ui.emit_json(result)
    else:
        model = result["model"]
        state = "pinned: it stays loaded" if model["pinned"] else "unpinned: it unloads when idle"
        ui.out.print(f"{model['model']} ({model['engine']}) {state}")
    return 0


def _stop(args: argparse.Namespace, ui: Renderer) -> int:
    """Ask the daemon to stop, then wait until its process is gone (it drains first)."""
    client = _client(args)
    answer = client.post("/shutdown")
    pid = answer["pid"]
    deadline = time.monotonic() + 60
    while _process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # the daemon is another process: nothing to await but its exit
    if _process_alive(pid):
        raise LtcaiError(
            f"the daemon (pid {pid}) is still stopping after 60 s",
            hint=f"see `ltcai logs`; `kill -9 {pid}` ends it at once (its engines get the parent-death signal)",
            code="stop_timeout",
        )
    ui.emit_json({"stopped": True, "pid": pid}) if ui.json_output else ui.out.print(f"ltcai daemon (pid {pid}) stopped")
    return 0


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, its parent has not reaped it yet) is gone for us
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _show_profile(ui: Renderer, data: dict[str, Any]) -> None:
    profile = data["profile"]
    ui.out.print(f"profile {profile.get('model_id')} on {profile.get('engine') or 'any engine'}")
    rows = [[e["field"], _short(e["value"]), e["layer"]] for e in data["explain"]]
    ui.table(["FIELD", "VALUE", "LAYER"], rows, empty="(empty)")
    capabilities = profile.get("capabilities") or {}
    ui.out.print("\ncapabilities, as measured:")
    rows = [[key, c["status"], c.get("measured_at") or "", _short(c["reason"])] for key, c in capabilities.items()]
    ui.table(["CAPABILITY", "STATUS", "MEASURED", "EVIDENCE"], rows, empty="(none recorded)")


def _short(value: Any, limit: int = 70) -> str:
    text = repr(value) if not isinstance(value, str) else value.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _profiles(args: argparse.Namespace, ui: Renderer) -> int:
    client = _client(args)
    if args.key:
        path = f"/profiles/{quote(args.key, safe='')}"
        if args.forget:
            result = client.delete(path)
            ui.emit_json(result) if ui.json_output else ui.out.print(f"forgot {result['forgotten']}")
            return 0
        data = client.get(path)
        ui.emit_json(data) if ui.json_output else _show_profile(ui, data)
        return 0
    profiles = client.get("/profiles")["profiles"]
    if ui.json_output:
        ui.emit_json(profiles)
        return 0
    rows = [
        [p["key"], p["family"], p["template"], p["quality_status"], p.get("validated_at") or "",
         capability_summary(p.get("capabilities") or {})]
        for p in profiles
    ]  # fmt: skip
    ui.table(
        ["KEY", "FAMILY", "TEMPLATE", "QUALITY", "VALIDATED", "CAPABILITIES"], rows,
        empty="no profiles yet; they are made by `ltcai prepare`",
    )  # fmt: skip
    return 0


def _chat_body(args: argparse.Namespace, messages: list[dict[str, str]], stream: bool) -> dict[str, Any]:
    return {
        "model": args.model,
        "engine": args.engine,
        "messages": messages,
        "stream": stream,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
    }


def _ask(client: DaemonClient, ui: Renderer, args: argparse.Namespace, messages: list[dict[str, str]]) -> str:
    """One answer, streamed to stdout as it comes (or at once with --no-stream)."""
    if args.no_stream or ui.json_output:
        answer = client.post("/chat", _chat_body(args, messages, stream=False))
        if ui.json_output:
            ui.emit_json(answer)
        else:
            sys.stdout.write(answer["content"] + "\n")
        return answer["content"]
    parts: list[str] = []
    for event in client.stream("POST", "/chat", _chat_body(args, messages, stream=True)):
        if "content" in event:
            parts.append(event["content"])
            sys.stdout.write(event["content"])
            sys.stdout.flush()
    sys.stdout.write("\n")
    return "".join(parts)


def _ensure_ready_then(client: DaemonClient, ui: Renderer, args: argparse.Namespace, messages: list[dict[str, str]]) -> str:
    try:
        return _ask(client, ui, args, messages)
    except RemoteError as exc:
        if exc.code != "model_not_ready":
            raise
    # Prepared for this chat, as a /v1 request would be: a recent smoke verdict may stand.
    if _prepare_and_show(client, ui, args.model, args.engine, just_in_time=True) != 0:
        raise LtcaiError(f"{args.model} could not be made ready to chat", hint="see the report above", code="prepare_failed")
    return _ask(client, ui, args, messages)


def _chat(args: argparse.Namespace, ui: Renderer) -> int:
    client = DaemonClient(_socket(args), timeout=None)
    messages: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    if args.prompt is not None:
        _ensure_ready_then(client, ui, args, [*messages, {"role": "user", "content": args.prompt}])
        return 0
    ui.err.print(f"chatting with {args.model} — /reset clears the history, /exit or Ctrl-D quits", highlight=False)
    history = list(messages)
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            ui.err.print()
            return 0
        if not line.strip():
            continue
        if line.strip() in ("/exit", "/quit", "/bye"):
            return 0
        if line.strip() == "/reset":
            history = list(messages)
            continue
        history.append({"role": "user", "content": line})
        answer = _ensure_ready_then(client, ui, args, history)
        history.append({"role": "assistant", "content": answer})


def _logs(args: argparse.Namespace, ui: Renderer) -> int:
    if args.engine:
        return _engine_logs(args, ui)
    path = load_settings().paths.daemon_log
    if not path.exists():
        raise LtcaiError(f"no daemon log at {path} yet", hint="start the daemon with `ltcai serve`", code="no_log")
    with path.open(encoding="utf-8", errors="replace") as log_file:
        for line in log_file.readlines()[-args.lines :]:
            sys.stdout.write(line)
        sys.stdout.flush()
        while args.follow:
            line = log_file.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                time.sleep(0.2)  # a CLI following a file: polling is what `tail -f` does too
    return 0


def _engine_logs(args: argparse.Namespace, ui: Renderer) -> int:
    data = _client(args).get(f"/logs?engine={quote(args.engine)}")
    if ui.json_output:
        ui.emit_json(data)
        return 0
    if not data["engines"]:
        ui.out.print(f"no {args.engine} engine process is running")
    for process in data["engines"]:
        ui.out.print(f"== {process['engine']} (pid {process['pid']}) {process['log_path']}", markup=False)
        for line in process["tail"][-args.lines :]:
            ui.out.print(line, markup=False, highlight=False)
    return 0


def _inspect(args: argparse.Namespace, ui: Renderer) -> int:
    from ._inspect import inspect_model

    data = inspect_model(load_settings(), args.model, args.engine)
    if ui.json_output:
        ui.emit_json(data)
        return 0
    r = data["resolution"]
    ui.out.print(f"{r['input_id']} → {r['resolved_model']} on {r['engine']} (via {r['source']})", markup=False)
    ui.out.print(f"  download id: {r['download_id']}\n  load id:     {r['load_id']}\n  current:     {r['expected_current']}", markup=False)
    if data["file"]:
        ui.out.print(f"  file:        {data['file']}", markup=False)
    _show_profile(ui, data)
    return 0


def _import(args: argparse.Namespace, ui: Renderer) -> int:
    from ._import import import_command

    return import_command(load_settings(), args.gguf, args.name, args.force, ui)


def _service(args: argparse.Namespace, ui: Renderer) -> int:
    from ._service import service_command

    return service_command(args.action, ui)


_COMMANDS = {
    "serve": _serve,
    "token": _token,
    "status": _status,
    "engines": _engines,
    "prepare": _prepare,
    "jobs": _jobs,
    "cancel": _cancel,
    "ps": _ps,
    "unload": _unload,
    "pin": _pin,
    "unpin": _pin,
    "stop": _stop,
    "profiles": _profiles,
    "chat": _chat,
    "logs": _logs,
    "inspect": _inspect,
    "import": _import,
    "service": _service,
}
