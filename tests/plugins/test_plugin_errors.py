"""A broken plugin set-up stops ``ltcai serve`` at start, with a message naming the plugins.

Plugins arrive as a throwaway distribution on disk (a ``*.dist-info`` with
``entry_points.txt``, what pip leaves behind) next to a module of its own; the FAKE engine
plugin (``tests/fakes/ltcai_fake_engine.py``) comes through ``LTCAI_PLUGINS``. Two plugins
registering the engine ``fake``, or an entry point whose module does not import, must make
a real ``ltcai serve`` exit non-zero with a ``PluginError`` (never a request's 400, never a
traceback) before it binds its socket.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltcai.errors import InvalidRequest, PluginError
from ltcai.plugins import build_plugin_host

FAKES = Path(__file__).resolve().parents[1] / "fakes"

CLASHING_MODULE = '''
from ltcai_fake_engine import FakeEngine
from ltcai.plugins import hookimpl

@hookimpl
def ltcai_register_engines(register):
    register(FakeEngine())  # an engine named "fake": the FAKE plugin's name too
'''
BROKEN_MODULE = "import ltcai_module_that_is_not_installed\n"


def _install(site: Path, entry_name: str, module: str, source: str) -> Path:
    """What ``pip install`` of a one-module plugin package would leave in ``site``."""
    info = site / f"{module}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[ltcai]\n{entry_name} = {module}\n")
    (info / "RECORD").write_text("")
    (site / f"{module}.py").write_text(source)
    return site


def _serve(root: Path, site: Path, plugins: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LTCAI_", "NOTIFY_SOCKET"))}
    env.update(
        {
            "LTCAI_DATA_DIR": str(root / "d"),
            "LTCAI_CONFIG_DIR": str(root / "c"),
            "LTCAI_SOCKET": str(root / "s.sock"),
            "LTCAI_PLUGINS": plugins,
            "PYTHONPATH": os.pathsep.join([str(site), str(FAKES)]),
            "HF_HUB_OFFLINE": "1",
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "ltcai", "serve"], env=env, capture_output=True, text=True, timeout=60, cwd=root
    )


def test_a_real_daemon_refuses_to_start_when_two_plugins_register_one_engine(daemon_root: Path) -> None:
    site = _install(daemon_root / "site", "throwaway-clash", "clash_engine", CLASHING_MODULE)
    run = _serve(daemon_root, site, plugins="ltcai_fake_engine")
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert "two plugins register an engine named 'fake'" in output, output
    assert "ltcai_fake_engine" in output and "throwaway-clash" in output, output
    assert "plugin_error" in output, output
    assert "Traceback" not in output, output
    assert not (daemon_root / "s.sock").exists()  # it never got as far as listening


def test_a_real_daemon_refuses_to_start_when_a_plugin_does_not_import(daemon_root: Path) -> None:
    site = _install(daemon_root / "site", "throwaway-broken", "broken_engine", BROKEN_MODULE)
    run = _serve(daemon_root, site, plugins="")
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert "plugin 'throwaway-broken'" in output and "broken_engine 1.0" in output, output
    assert "ltcai_module_that_is_not_installed" in output, output
    assert "Traceback" not in output, output


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(FAKES))
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path


def test_an_engine_name_clash_is_a_plugin_error_naming_both_plugins(site: Path) -> None:
    _install(site, "throwaway-clash", "clash_engine_unit", CLASHING_MODULE)
    with pytest.raises(PluginError) as caught:
        build_plugin_host(extra_modules=["ltcai_fake_engine"])
    error = caught.value
    assert not isinstance(error, InvalidRequest) and error.http_status == 500
    assert error.code == "plugin_error"
    assert error.message == "two plugins register an engine named 'fake': ltcai_fake_engine and throwaway-clash"
    assert error.hint and "LTCAI_DISABLE_PLUGINS" in error.hint
    # Disabling either one is the way out.
    assert "fake" in build_plugin_host(extra_modules=["ltcai_fake_engine"], disabled=["throwaway-clash"]).engines()


def test_a_plugin_module_that_does_not_import_is_a_plugin_error(site: Path) -> None:
    (site / "broken_unit_plugin.py").write_text(BROKEN_MODULE)
    with pytest.raises(PluginError, match="plugin module 'broken_unit_plugin' cannot be imported"):
        build_plugin_host(extra_modules=["broken_unit_plugin"], load_entry_points=False)


def test_one_module_loaded_twice_is_a_plugin_error_naming_both_routes(site: Path) -> None:
    _install(site, "throwaway-again", "ltcai_fake_engine", "")  # an entry point to the same module
    (site / "ltcai_fake_engine.py").unlink()  # the real one, from tests/fakes, is imported
    with pytest.raises(PluginError, match="plugins ltcai_fake_engine and throwaway-again are one module"):
        build_plugin_host(extra_modules=["ltcai_fake_engine"])


def test_a_misspelled_hook_is_a_plugin_error(site: Path) -> None:
    (site / "misspelled_plugin.py").write_text(
        "from ltcai.plugins import hookimpl\n\n@hookimpl\ndef ltcai_register_engine(register):\n    pass\n"
    )
    with pytest.raises(PluginError, match="'misspelled_plugin' is not a valid ltcai plugin"):
        build_plugin_host(extra_modules=["misspelled_plugin"], load_entry_points=False)


def test_a_post_processing_step_clash_stops_the_build_naming_the_plugin(site: Path) -> None:
    (site / "step_clash_plugin.py").write_text(
        "from ltcai.plugins import hookimpl\n\n@hookimpl\ndef ltcai_register_postprocessors(register):\n"
        "    register('strip_role_tokens', str.upper)\n"
    )
    with pytest.raises(
        PluginError,
        match="plugin 'step_clash_plugin' registers a post-processing step named 'strip_role_tokens', which is a built-in step",
    ):
        build_plugin_host(extra_modules=["step_clash_plugin"], load_entry_points=False)
