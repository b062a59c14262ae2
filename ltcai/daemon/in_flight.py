"""A request's hold on its model, carried across the HTTP layer (see ``lifecycle.Use``).

Routes call ``Lifecycle.begin`` as soon as they know the model, ``enter_while_connected``
once it is ready (the queue, left when the client hangs up), and end the use when the
answer is out: at once for a JSON answer, or — for a stream — when the streaming
response is over, however it ends (finished, client gone, daemon stopping):
``ending_use`` wraps the response so that no path can leak a model's in-flight count,
which would keep it loaded forever.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request

from ..config.units import parse_keep_alive
from ..errors import ErrorCode, InvalidRequest, LtcaiError
from .lifecycle import Use
from .models import LoadedModel

if TYPE_CHECKING:
    from .jobs import Job

__all__ = [
    "PREPARE_JOB_HEADER", "ClientGone", "ending_use", "enter_while_connected", "prepare_comments", "prepare_progress",
    "take_keep_alive",
]

# The response header that names the prepare job a request started or joined (just in time).
PREPARE_JOB_HEADER = "X-Ltcai-Prepare-Job"
# A stream waiting on a prepare says something at least this often: proxies and clients
# with read timeouts see a live connection, not a hang (a long download has quiet spells).
_KEEPALIVE_S = 5.0


class ClientGone(LtcaiError):
    """The client hung up while its request waited in the queue (nobody reads this answer)."""

    code = ErrorCode.CLIENT_GONE
    http_status = 499


def take_keep_alive(body: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """The body without ``keep_alive``, and its value (Ollama's format) in seconds, or None.

    ``keep_alive`` is the daemon's, not the engine's: taken out before the body is checked
    as a chat request, whose fields all go to the engine.
    """
    if "keep_alive" not in body:
        return body, None
    rest = {k: v for k, v in body.items() if k != "keep_alive"}
    value = body["keep_alive"]
    if value is None:
        return rest, None
    try:
        return rest, parse_keep_alive(value, "keep_alive")
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, hint=exc.hint, code=ErrorCode.INVALID_FIELD) from None


async def _until_disconnected(request: Request) -> None:
    # The body was read already: what arrives next is the client's disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def enter_while_connected(use: Use, loaded: LoadedModel, request: Request) -> None:
    """``use.enter(loaded)``, leaving the queue if the client goes away (``ClientGone``)."""
    refused: LtcaiError | None = None
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            await _until_disconnected(request)
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            await use.enter(loaded)
        except LtcaiError as exc:  # TooBusy: raised outside the task group, not as a group
            refused = exc
        tg.cancel_scope.cancel()
    if refused is not None:
        raise refused
    if not use.entered:
        raise ClientGone("the client went away while its request was queued")


async def prepare_progress(job: Job) -> AsyncIterator[str]:
    """What a request waiting on ``job`` tells its client until the job is done, one line
    per state change and progress report, and one every few seconds of silence (proxies
    and clients with read timeouts see a live connection). Each API wraps the lines in
    what its clients skip: SSE comments on ``/v1``, empty chunks on ``/api``."""
    seen, last = 0, "starting"
    while not job.done.is_set():
        with anyio.move_on_after(_KEEPALIVE_S):
            await job.wait_changed()
        news = [e for e in job.events[seen:] if e.get("type") in ("state", "progress")]
        seen = len(job.events)
        for event in news:
            last = f"{event.get('state')}: {event.get('message', '')}"
            yield " ".join(f"preparing {job.machine.model} ({job.id}) {last}".split())
        if not news and not job.done.is_set():
            yield " ".join(f"preparing {job.machine.model} ({job.id}) still {last}".split())


async def prepare_comments(job: Job) -> AsyncIterator[bytes]:
    """``prepare_progress`` as SSE comments (``: …``): clients ignore them; the connection lives."""
    async for line in prepare_progress(job):
        yield _comment(line)


def _comment(text: str) -> bytes:
    return b": " + " ".join(text.split()).encode() + b"\n\n"


class _EndingUse:
    """An ASGI response that ends ``use`` once the wrapped response is over, however."""

    def __init__(self, response: Any, use: Use) -> None:
        self.response = response
        self.use = use

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.response(scope, receive, send)
        finally:
            self.use.end()


def ending_use(response: Any, use: Use) -> Any:
    return _EndingUse(response, use)
