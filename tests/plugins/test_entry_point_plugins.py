"""Third-party engines arrive through the ``ltcai`` entry-point group, like any pip package.

A throwaway distribution is written to disk (``*.dist-info`` with ``entry_points.txt``,
what pip leaves behind) whose entry point is the FAKE engine plugin
(``tests/fakes/ltcai_fake_engine.py``). Nothing else names the plugin: no
``LTCAI_PLUGINS``. A real ``ltcai serve`` with that folder on its
path must find it, list its engine and prepare a model on it; blocking the entry point
by name must keep it out.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ltcai.plugins import build_plugin_host

FAKES = Path(__file__).resolve().parents[1] / "fakes"
ENTRY_NAME = "throwaway-fake-engine"


def _install_throwaway_distribution(site: Path) -> Path:
    """What ``pip install throwaway`` would leave: its dist-info, whose entry point names
    the fake engine module (importable from ``tests/fakes``, where it finds its server)."""
    info = site / "throwaway_ltcai_engine-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: throwaway-ltcai-engine\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[ltcai]\n{ENTRY_NAME} = ltcai_fake_engine\n")
    (info / "RECORD").write_text("")
    return site


@pytest.fixture
def throwaway_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = _install_throwaway_distribution(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    return site


def test_an_installed_entry_point_registers_its_engine(throwaway_site: Path) -> None:
    host = build_plugin_host()
    assert ENTRY_NAME in host.plugin_names
    assert "fake" in host.engines()


def test_an_entry_point_is_blocked_by_its_name(throwaway_site: Path) -> None:
    host = build_plugin_host(disabled=[ENTRY_NAME])
    assert ENTRY_NAME not in host.plugin_names
    assert "fake" not in host.engines()


def test_a_real_daemon_loads_the_entry_point_and_prepares_on_its_engine(tmp_path: Path, start_daemon) -> None:
    site = _install_throwaway_distribution(tmp_path / "site")
    daemon = start_daemon(
        extra_env={
            "LTCAI_PLUGINS": "",  # the entry point is the only way in
            "PYTHONPATH": os.pathsep.join([str(site), str(FAKES)]),
        }
    )
    engines = {e["name"]: e for e in daemon.client.get("/engines").json()["engines"]}
    assert engines["fake"]["available"] is True
    report = daemon.report("entry-point-model")
    assert report["status"] == "ok" and report["ready_to_chat"] is True
