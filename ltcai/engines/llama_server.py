"""llama.cpp's own HTTP server, ``llama-server``: where it is, what it is, how to start it.

Found, in this order (the first that exists wins):

1. ``[engines.llamacpp] server_binary`` in the config — the user said so;
2. ``llama-server`` on PATH — Homebrew's and distributions' llama.cpp packages install it;
3. ltcai's own build under ``engines/llamacpp/<version>-<backend>/`` in the data dir
   (see :mod:`.llama_server_build`).

Why llama-server rather than llama-cpp-python's server: continuous batching over
parallel slots. Measured on a 2-core box with SmolLM2 at 16 clients, it serves about
three times the aggregate tokens per second and a third of the time to first token
(``bench/results.md``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio


__all__ = [
    "LOADING_STATUS",
    "ServerBinary",
    "chat_template_name",
    "default_slots",
    "find_server_binary",
    "probe_version",
    "server_argv",
]

Origin = Literal["config", "PATH", "ltcai build"]

# /health answers 503 with this while the model loads: progress, not a failure.
LOADING_STATUS = 503

# Family templates (compat profile ``template``) → llama-server's built-in chat templates,
# for a GGUF that carries no template of its own (Gemma 3 270M base).
_BUILTIN_TEMPLATES = {
    "gemma": "gemma",
    "chatml": "chatml",
    "llama": "llama3",
    "mistral": "mistral-v7",
    "phi": "phi3",
    "deepseek": "deepseek",
}

_VERSION_RE = re.compile(r"version:\s*(\S+)")
_COMMIT_RE = re.compile(r"commit\s+([0-9a-f]{6,})")


@dataclass(frozen=True)
class ServerBinary:
    path: str
    origin: Origin

    def to_dict(self, version: str | None) -> dict[str, Any]:
        return {"server": "llama-server", "binary": self.path, "origin": self.origin, "server_version": version}


def find_server_binary(options: Mapping[str, Any], built: Path | None) -> ServerBinary | None:
    """The llama-server to run, or None when none is configured, on PATH or ``built``.

    Blocking (PATH walk): call through ``ctx.run_sync``. A configured path that does not
    exist is not silently replaced by another binary: the caller reports it.
    """
    configured = options.get("server_binary")
    if configured:
        return ServerBinary(str(Path(str(configured)).expanduser()), "config")
    on_path = shutil.which("llama-server")
    if on_path:
        return ServerBinary(on_path, "PATH")
    return ServerBinary(str(built), "ltcai build") if built is not None else None


async def probe_version(path: str) -> str | None:
    """``llama-server --version`` → ``"0.5.0-dev (0c1e570)"`` (version and commit), None if
    it will not say.

    The binary prints its version and exits without loading anything (~20 ms).
    """
    try:
        with anyio.fail_after(10):
            result = await anyio.run_process([path, "--version"], check=False)
    except (OSError, TimeoutError):
        return None
    text = (result.stdout + result.stderr).decode(errors="replace")
    match = _VERSION_RE.search(text)
    if match is None:
        return None
    commit = _COMMIT_RE.search(text)
    return f"{match[1]} ({commit[1]})" if commit else match[1]


def default_slots(cores: int | None = None) -> int:
    """Parallel slots when the config names none: 8, or 4 on a single-CPU machine.

    Continuous batching pays off with more sequences than cores (measured at 16 clients
    on 2 cores: 4 slots 73.9 tok/s, 8 slots 94.9, and the 16th client's first token in
    half the time); a client alone gets the same speed from any count. Each slot costs
    its own KV cache (``n_ctx`` tokens), which the memory budget counts.
    """
    cores = cores or os.cpu_count() or 2
    return 8 if cores >= 2 else 4


def chat_template_name(profile: Any) -> str | None:
    """llama-server's built-in template for a GGUF with none of its own, from the profile."""
    if profile is None or getattr(profile, "chat_template", None):
        return None
    return _BUILTIN_TEMPLATES.get(getattr(profile, "template", "") or "")


def server_argv(
    binary: str,
    *,
    model_path: str,
    model_id: str,
    port: int,
    options: Mapping[str, Any],
    profile: Any,
    slots: int,
) -> list[str]:
    """The command line for one model. ``n_ctx`` in ltcai's settings is per slot: the
    server gets ``n_ctx × slots`` and splits it evenly (each slot gets ``n_ctx``)."""
    n_ctx = int(options.get("n_ctx", 4096))
    argv = [
        binary,
        "--model", model_path,
        "--alias", model_id,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--parallel", str(slots),
        "--ctx-size", str(n_ctx * slots),
        "--no-kv-unified",  # each slot keeps its own n_ctx: one long chat cannot starve the rest
        "--jinja",  # the GGUF's own template, and with it the model's tool-call format
        "--metrics",
        "--cache-reuse", str(int(options.get("cache_reuse", 256))),
        "--no-webui",
        "--log-colors", "off",
    ]  # fmt: skip
    template = chat_template_name(profile)
    if template:
        argv += ["--chat-template", template]
    if options.get("n_threads"):
        argv += ["--threads", str(options["n_threads"])]
    if options.get("n_gpu_layers") is not None:
        argv += ["--n-gpu-layers", str(options["n_gpu_layers"])]
    if options.get("embeddings"):
        argv += ["--embeddings"]
        if options.get("pooling"):
            argv += ["--pooling", str(options["pooling"])]
    argv += [str(a) for a in options.get("server_args", [])]
    return argv
