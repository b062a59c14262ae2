"""``POST /engines/{name}/install``: an engine's install step ahead of any prepare.

What ``ltcai engines install NAME`` drives: the adapter's own check and install, the
same code a prepare's ENGINE_INSTALL runs (and so the same single-flight: a prepare
that needs the engine meanwhile waits for this build, it does not start another).
Progress streams as NDJSON events, like a prepare's; the last event is ``installed``
(or ``error``). A client that goes away cancels the install, which then leaves
nothing half-done (a build runs in a temporary folder).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio

from ..errors import EngineUnavailable, LtcaiError
from .services import Services

__all__ = ["install_events"]


async def install_events(services: Services, name: str) -> AsyncIterator[dict[str, Any]]:
    """Events of one engine install: ``progress``…, then ``installed`` or ``error``."""
    adapter = services.engine(name)
    send, receive = anyio.create_memory_object_stream[dict[str, Any]](math.inf)

    def progress(message: str, *, done: float | None = None, total: float | None = None, unit: str | None = None) -> None:
        event: dict[str, Any] = {"type": "progress", "message": message, "time": time.time()}
        if done is not None or total is not None:
            event["progress"] = {"done": done, "total": total, "unit": unit}
        send.send_nowait(event)

    ctx = services.engine_context(name, progress)

    async def work() -> None:
        async with send:
            try:
                check = await adapter.check(ctx)
                if check.available:
                    send.send_nowait({"type": "installed", "already": True, "check": check.to_dict()})
                    return
                if not check.installable:
                    raise EngineUnavailable(f"{name} is not available: {check.reason}", hint=check.install_hint)
                result = await adapter.install(ctx, check)
                after = await adapter.check(ctx)
                send.send_nowait(
                    {
                        "type": "installed",
                        "already": False,
                        "result": result.to_dict() if result else None,
                        "check": after.to_dict(),
                    }
                )
            except LtcaiError as exc:
                send.send_nowait({"type": "error", "error": exc.to_dict()})

    async with anyio.create_task_group() as tg:
        tg.start_soon(work)
        async with receive:
            async for event in receive:
                yield event
