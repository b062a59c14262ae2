"""Starting an engine's own HTTP server as a supervised child, shared by every local engine.

A free loopback port, the child spawned through ``ctx.spawn`` (own process group,
parent-death signal, output captured), readiness polled fast on a URL while the child's
exit is awaited at the same time — a server that dies while starting fails at once
with its last output, it is not waited out.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio
import httpx

from ..errors import ServerStartError
from .base import EngineContext

if TYPE_CHECKING:
    from ..runtime.process import ProcessHandle

__all__ = ["PortTaken", "free_port", "start_and_wait_ready", "why_it_exited"]

_READY_POLL_S = 0.01  # a refused connect costs ~0.1 ms; a late READY costs the user
_LOADING_REPORT_S = 1.0  # "still loading" progress at most this often


class PortTaken(Exception):
    """The server could not bind its port (another program took it first)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_and_wait_ready(
    ctx: EngineContext,
    engine: str,
    argv: Sequence[str],
    ready_url: str,
    *,
    env: dict[str, str] | None = None,
    what: str | None = None,
    loading_status: int | None = None,
) -> ProcessHandle:
    """Spawn ``argv`` and return once ``ready_url`` answers 200; fail if the child exits first.

    ``loading_status``: the status the server answers while it loads the model (llama-server's
    ``/health`` says 503): reported as progress, so a big model that keeps loading is never
    failed as stalled, and the user sees why it waits.
    """
    process = await ctx.spawn(engine, argv, env=env)
    ctx.progress(f"{what or engine} server starting (pid {process.pid})")
    ready = False
    next_report = 0.0

    async def poll_ready(scope: anyio.CancelScope) -> None:
        nonlocal ready, next_report
        while True:
            try:
                response = await ctx.http.get(ready_url, timeout=2.0)
                if response.status_code == 200:
                    ready = True
                    scope.cancel()
                    return
                if response.status_code == loading_status and anyio.current_time() >= next_report:
                    ctx.progress(f"{what or engine} is loading the model")
                    next_report = anyio.current_time() + _LOADING_REPORT_S
            except httpx.HTTPError:
                pass
            await anyio.sleep(_READY_POLL_S)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(poll_ready, tg.cancel_scope)
            await process.exited.wait()  # returns only if the server died first
            tg.cancel_scope.cancel()
    except BaseException:
        await process.stop()
        raise
    if ready:
        return process
    tail = process.last_lines(15)
    if any(_PORT_TAKEN.search(line) for line in tail):
        raise PortTaken(ready_url)
    output = "its last output:\n" + "\n".join(why_it_exited(process.last_lines(60)))
    server = what or engine
    server = server if server.endswith("server") else f"{server} server"
    if any(_OUT_OF_MEMORY.search(line) for line in process.last_lines(60)):
        raise ServerStartError(
            f"the {server} exited with code {process.returncode} before it was ready:"
            " it ran out of memory loading the model",
            hint="close other programs, pick a smaller quantization (Q4_K_M → Q3_K_S, or a smaller model)"
            " or a shorter context (the engine's n_ctx option); " + output,
            code="not_enough_memory",
        )
    raise ServerStartError(
        f"the {server} exited with code {process.returncode} before it was ready",
        hint=output,
    )


# How servers say their port is taken: uvicorn (Python servers), llama-server.
_PORT_TAKEN = re.compile(r"address already in use|couldn't bind HTTP server socket", re.IGNORECASE)


# How engines say they could not get memory: llama.cpp / ggml, CUDA, Python (numpy), C++.
_OUT_OF_MEMORY = re.compile(
    r"out of memory|cannot allocate memory|unable to allocate|failed to allocate|MemoryError"
    r"|std::bad_alloc|cudaMalloc failed|not enough memory",
    re.IGNORECASE,
)


def why_it_exited(lines: Sequence[str], keep: int = 15) -> list[str]:
    """An engine's last output with Python traceback frames left out.

    Python servers (llama-cpp-python, mlx_lm, vllm) die at start with a long traceback
    whose frames would push the engine's own reason (``llama_model_load: error loading
    model: unknown model architecture``) out of a short tail, and a traceback is never
    shown to a user. The exception line itself is kept: it is the summary.
    """
    kept: list[str] = []
    in_traceback = False
    for line in lines:
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
            continue
        if in_traceback:
            if not line or line[0].isspace():
                continue  # a frame, its source line, or the ^^^ markers
            in_traceback = False
        if line.startswith(("During handling of the above exception", "The above exception was the direct cause")):
            continue
        kept.append(line)
    return [line for line in kept if line.strip()][-keep:]
