"""The daemon's event loop: uvloop where installed, asyncio's own when asked."""

from __future__ import annotations

import importlib.util

import pytest

from ltcai.daemon.app import _loop_options


def test_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LTCAI_EVENT_LOOP", raising=False)
    assert importlib.util.find_spec("uvloop") is not None  # a dependency off Windows
    assert _loop_options() == {"use_uvloop": True}


def test_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LTCAI_EVENT_LOOP", "asyncio")
    assert _loop_options() == {}
