"""``ltcai._lazy.import_off_loop``: heavy imports in a worker thread, safe when raced."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from ltcai._lazy import import_off_loop


@pytest.mark.asyncio
async def test_two_tasks_racing_for_a_slow_import_both_get_the_whole_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warm-up task and the first chat both ask for aiohttp at start-up: the one that
    comes second must wait for the import, not take the half-initialised module that
    already sits in sys.modules (a prepare failed that way under load)."""
    (tmp_path / "ltcai_slow_module.py").write_text("import time\ntime.sleep(0.3)\nVALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ltcai_slow_module", raising=False)
    got = []

    async def ask() -> None:
        module = await import_off_loop("ltcai_slow_module")
        got.append(module.VALUE)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ask)
        await anyio.sleep(0.05)  # the first import is under way
        tg.start_soon(ask)
    assert got == [42, 42]
    sys.modules.pop("ltcai_slow_module", None)
