"""A FAKE ``lms`` (LM Studio's CLI), for contract tests. Stdlib only; placed on PATH as ``lms``.

Follows the CLI as documented (https://lmstudio.ai/docs/cli) and as its source prints
(https://github.com/lmstudio-ai/lms: ``get.ts``, ``load.ts``, ``ProgressBar.ts``):

    lms version                      the banner line with the CLI version
    lms server start [--port N]      starts the fake REST server (fake_lmstudio_server.py),
                                     DETACHED like LM Studio's, and says "Success! Server is
                                     now running on port N"
    lms get <model> --yes            "Searching…", the progress bar (``\\r⠋ [███▏  ] 12.50% |
                                     50.00 MB / 400.00 MB | 10.00 MB/s | ETA 00:35`` with the
                                     cursor save/restore and hide/show escapes), then
                                     "Download completed. You can load the model with: lms load
                                     <key>" — or "You already have this model"
    lms ls --json                    the downloaded models (``modelKey``, ``path``, ``sizeBytes``…)
    lms load <model> --identifier <id> --yes [--ttl S] [--context-length N] [--gpu R]
                                     an instance named <id>, or <id>:2, <id>:3… when another
                                     instance holds <id>; prints "To use the model in the
                                     API/SDK, use the identifier "<id>"."
    lms ps --json                    the loaded instances (``identifier``, ``modelKey``…)
    lms unload <identifier>

State (downloadable catalog, downloaded, loaded, the server, every call made) is the JSON
file named by ``FAKE_LMS_STATE``; see :func:`new_state`. Knobs in the state's ``fail``:
``{"get": "network"}`` (the download dies halfway), ``{"server_start": true}``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SERVER = Path(__file__).with_name("fake_lmstudio_server.py")
CLI_VERSION = "0.0.47"
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_BLOCKS = 22


def new_state(catalog: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A fresh state: ``catalog`` maps what ``lms get`` finds to ``{modelKey, path, sizeBytes}``."""
    return {"catalog": catalog or {}, "downloaded": [], "loaded": [], "server": {}, "calls": [], "fail": {}}


def _state_path() -> Path:
    return Path(os.environ["FAKE_LMS_STATE"])


def load_state(path: Path | None = None) -> dict[str, Any]:
    return json.loads((path or _state_path()).read_text())


def save_state(state: dict[str, Any], path: Path | None = None) -> None:
    target = path or _state_path()
    temp = target.with_suffix(".tmp")
    temp.write_text(json.dumps(state, indent=1))
    os.replace(temp, target)


def server_running(state: dict[str, Any]) -> bool:
    pid = state.get("server", {}).get("pid")
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _size(n: float) -> str:  # formatSizeBytes1000
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.2f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.2f} TB"


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else None


def _positional(argv: list[str]) -> str | None:
    takes_value = {"--identifier", "--ttl", "--context-length", "-c", "--gpu", "--port"}
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in takes_value:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# ----------------------------------------------------------------------------- commands


def cmd_version(state: dict[str, Any], argv: list[str]) -> int:
    _out("   __   __  ___  ______          ___        _______   ____\n")
    _out("  / /  /  |/  / / __/ /___ _____/ (_)__    / ___/ /  /  _/\n\n")
    _out(f"lms - LM Studio CLI - v{CLI_VERSION}\nGitHub: https://github.com/lmstudio-ai/lms\n")
    return 0


def cmd_server(state: dict[str, Any], argv: list[str]) -> int:
    if argv[:1] != ["start"]:
        print(f"fake lms: unsupported: server {argv}", file=sys.stderr)
        return 2
    port = int(_flag(argv, "--port") or 1234)
    if state["fail"].get("server_start"):
        print(f"Error: Failed to start the server on port {port}: EADDRINUSE (fake)", file=sys.stderr)
        return 1
    if server_running(state) and state["server"].get("port") == port:
        _out(f"The server is already running on port {port}.\n")
        return 0
    process = subprocess.Popen(
        [sys.executable, str(SERVER), "--port", str(port), "--state", str(_state_path())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # LM Studio's server outlives whoever started it
    )
    state["server"] = {"port": port, "pid": process.pid}
    save_state(state)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.02)
    print(f"Success! Server is now running on port {port}", file=sys.stderr)
    return 0


def cmd_get(state: dict[str, Any], argv: list[str]) -> int:
    name = _positional(argv) or ""
    _out(f"Searching for models with the term {name}\n")
    entry = state["catalog"].get(name) or next(
        (e for e in state["catalog"].values() if e["modelKey"] == name), None
    )
    if entry is None:
        print("No models found with the specified search criteria.", file=sys.stderr)
        return 1
    key, total = entry["modelKey"], int(entry["sizeBytes"])
    if any(m["modelKey"] == key for m in state["downloaded"]):
        _out(f"You already have this model. You can load it with:\n\n    lms load {key}\n\n")
        return 0
    _out(f"Based on your hardware, choosing the recommended option: {entry['path'].split('/')[-1]}\n")
    _out(f"Downloading {entry['path']}\n")
    failure = state["fail"].get("get")
    steps = 8
    for step in range(1, steps + 1):
        done = total * step // steps
        if failure == "network" and step > steps // 2:
            _out("\x1b[2K\x1b[1G\x1b[?25h")
            print("Error: fetch failed: read ECONNRESET (socket hang up)", file=sys.stderr)
            return 1
        ratio = done / total
        blocks = "█" * int(ratio * _BLOCKS) + ("▏" if ratio < 1 else "")
        bar = (
            f"\x1b[?25l\x1b[s\r{_SPINNER[step % len(_SPINNER)]} [{blocks.ljust(_BLOCKS)}] {ratio * 100:.2f}% | "
            f"{_size(done)} / {_size(total)} | 10.00 MB/s | ETA 00:0{steps - step}          \x1b[u"
        )
        # Escapes split across writes, as a real terminal stream may deliver them.
        half = bar.index("\x1b[s") + 1
        _out(bar[:half])
        time.sleep(0.005)
        _out(bar[half:])
    _out("\x1b[2K\x1b[1G\x1b[?25h")
    _out("Finalizing download...\n")
    state["downloaded"].append(
        {
            "type": "llm",
            "modelKey": key,
            "format": "gguf",
            "displayName": entry.get("displayName", key),
            "path": entry["path"],
            "sizeBytes": total,
            "architecture": entry.get("architecture", "qwen2"),
            "maxContextLength": 32768,
        }
    )
    save_state(state)
    _out(f"Download completed. You can load the model with:\n\n    lms load {key}\n\n")
    return 0


def cmd_ls(state: dict[str, Any], argv: list[str]) -> int:
    if "--json" in argv:
        _out(json.dumps(state["downloaded"]) + "\n")
    else:
        for model in state["downloaded"]:
            _out(f"{model['path']}  {_size(model['sizeBytes'])}\n")
    return 0


def _not_running() -> int:
    print("Error: LM Studio is not running (fake). Start it with `lms server start`.", file=sys.stderr)
    return 1


def cmd_load(state: dict[str, Any], argv: list[str]) -> int:
    if not server_running(state):
        return _not_running()
    wanted = (_positional(argv) or "").lower()
    matches = [m for m in state["downloaded"] if wanted in m["modelKey"].lower() or wanted in m["path"].lower()]
    if not matches:
        print("Model not found", file=sys.stderr)
        print(f'No model found that matches path "{wanted}".', file=sys.stderr)
        print("To see a list of all downloaded models, run:\n\n    lms ls", file=sys.stderr)
        return 1
    model = matches[0]
    identifier = _flag(argv, "--identifier") or model["modelKey"]
    taken = {i["identifier"] for i in state["loaded"]}
    if identifier in taken:  # LM Studio numbers a second instance under a taken name
        n = 2
        while f"{identifier}:{n}" in taken:
            n += 1
        identifier = f"{identifier}:{n}"
    _out(f"Loading {model['path']}\n")
    state["loaded"].append(
        {
            "type": "llm",
            "modelKey": model["modelKey"],
            "format": "gguf",
            "displayName": model["displayName"],
            "path": model["path"],
            "sizeBytes": model["sizeBytes"],
            "identifier": identifier,
            "instanceReference": f"ref-{len(state['loaded']) + 1}",
            "contextLength": int(_flag(argv, "--context-length") or 4096),
            "ttlMs": int(_flag(argv, "--ttl")) * 1000 if _flag(argv, "--ttl") else None,
            "gpu": _flag(argv, "--gpu"),
        }
    )
    save_state(state)
    _out(f"Model loaded successfully in 0.42s. ({_size(model['sizeBytes'])})\n")
    if not state["fail"].get("load_quiet"):
        _out(f'To use the model in the API/SDK, use the identifier "{identifier}".\n')
    return 0


def cmd_ps(state: dict[str, Any], argv: list[str]) -> int:
    if not server_running(state):
        return _not_running()
    if "--json" in argv:
        _out(json.dumps(state["loaded"]) + "\n")
    else:
        for instance in state["loaded"]:
            _out(f"Identifier: {instance['identifier']}\n  • Type: LLM\n  • Path: {instance['path']}\n")
    return 0


def cmd_unload(state: dict[str, Any], argv: list[str]) -> int:
    if not server_running(state):
        return _not_running()
    identifier = _positional(argv)
    if "--all" in argv:
        state["loaded"] = []
    elif not any(i["identifier"] == identifier for i in state["loaded"]):
        print(f'Error: Cannot find a model with the identifier "{identifier}"', file=sys.stderr)
        return 1
    else:
        state["loaded"] = [i for i in state["loaded"] if i["identifier"] != identifier]
    save_state(state)
    _out(f"Model \"{identifier}\" unloaded.\n")
    return 0


COMMANDS = {
    "version": cmd_version,
    "server": cmd_server,
    "get": cmd_get,
    "ls": cmd_ls,
    "load": cmd_load,
    "ps": cmd_ps,
    "unload": cmd_unload,
}


def main(argv: list[str]) -> int:
    state = load_state()
    state["calls"].append(argv)
    save_state(state)
    command = COMMANDS.get(argv[0] if argv else "")
    if command is None:
        print(f"fake lms: unsupported command {argv}", file=sys.stderr)
        return 2
    return command(state, argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
