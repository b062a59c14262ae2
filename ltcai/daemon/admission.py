"""Back-pressure per model: at most ``slots`` requests run, a bounded queue waits behind them.

An engine answers as many requests at once as it has parallel slots (1 for
llama-cpp-python's server, ``-np N`` for llama-server); more only queue inside it, where
nobody can see or bound them. So they queue here: first come, first served, at most
``max_queue`` waiting; past that a request is refused at once with 429 and a
``Retry-After`` from how long requests on this model have been taking. A queued request
whose client went away leaves the queue (its waiter is cancelled). ``max_queue`` is read
at each arrival, so a config reload (SIGHUP) applies to models already loaded; requests
already waiting stay in the queue even when it is now longer than the new bound.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import anyio

from ..errors import ErrorCode, LtcaiError

__all__ = ["Gate", "TooBusy"]

# Weight of the newest request's duration in the running average behind Retry-After.
_DURATION_WEIGHT = 0.3


class TooBusy(LtcaiError):
    """The model's slots are taken and its queue is full: come back after ``retry_after_s``."""

    code = ErrorCode.TOO_BUSY
    http_status = 429

    def __init__(self, message: str, *, retry_after_s: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after_s = retry_after_s


class Gate:
    """The slots and the queue of one served model."""

    def __init__(self, slots: int, max_queue: int | Callable[[], int]) -> None:
        """``max_queue``: the bound, or where to read the current one (the daemon's settings)."""
        self.slots = max(1, slots)
        self._max_queue = max_queue
        self.running = 0
        self._waiting: deque[anyio.Event] = deque()
        self._mean_duration_s = 1.0

    @property
    def max_queue(self) -> int:
        return self._max_queue() if callable(self._max_queue) else self._max_queue

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def retry_after_s(self) -> int:
        """Seconds until a place is likely free: the queue ahead, drained slot by slot."""
        return max(1, math.ceil(self._mean_duration_s * (self.queued + 1) / self.slots))

    async def acquire(self, model: str) -> None:
        """Take a slot, waiting in the queue when all are taken; raise TooBusy when it is full.

        The decision to queue or refuse is made before the first await, so a route can
        still answer 429 before its response starts.
        """
        if self.running < self.slots and not self._waiting:
            self.running += 1
            return
        bound = self.max_queue
        if len(self._waiting) >= bound:
            raise TooBusy(
                f"{model} is busy: {self.running} request(s) running and {len(self._waiting)} waiting"
                f" (max_queue {bound})",
                retry_after_s=self.retry_after_s(),
                hint="retry after the Retry-After seconds, or raise max_queue in the config",
            )
        granted = anyio.Event()
        self._waiting.append(granted)
        try:
            await granted.wait()
        except BaseException:
            if granted.is_set():  # the slot was handed over just as we were cancelled
                self.release(None)
            else:
                self._waiting.remove(granted)
            raise

    def release(self, duration_s: float | None) -> None:
        """Give the slot back (to the first in the queue, if any); ``duration_s``: how long it ran."""
        if duration_s is not None:
            self._mean_duration_s += _DURATION_WEIGHT * (duration_s - self._mean_duration_s)
        if self._waiting:
            self._waiting.popleft().set()  # the slot passes on: running stays the same
        else:
            self.running -= 1
