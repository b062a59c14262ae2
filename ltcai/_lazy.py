"""Heavy optional imports, done off the event loop the first time they are needed.

huggingface_hub, gguf (with numpy) and aiohttp together cost the daemon ~600 ms of
start-up (bench/results.md, section 1) and nothing on most runs: they load when a
download, a GGUF header read or the first chat needs them, in a worker thread so the
loop keeps answering meanwhile. A later call costs one worker-thread round trip.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import anyio

__all__ = ["import_off_loop"]


async def import_off_loop(name: str) -> ModuleType:
    # Always through import_module in the thread, never a peek at sys.modules: a module
    # another thread is still importing is already there, half initialised, and
    # import_module is what waits for it to finish.
    return await anyio.to_thread.run_sync(importlib.import_module, name)
