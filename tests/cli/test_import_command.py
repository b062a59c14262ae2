"""``ltcai import``, run as users run it: the real CLI in a subprocess, no daemon, real mlx."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gguf import GGUFWriter


def _run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LTCAI_DATA_DIR": str(root / "data"), "LTCAI_CONFIG_DIR": str(root / "config"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "ltcai", "import", *args], env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture
def with_mlx() -> None:
    if importlib.util.find_spec("mlx_lm") is None:
        if os.environ.get("LTCAI_REQUIRE_E2E"):
            pytest.fail("mlx-lm is missing in CI (scripts/setup-env --test installs it)")
        pytest.skip("mlx-lm is not installed (run scripts/setup-env --test)")


def test_import_smollm2_prints_progress_and_the_folder_then_knows_it_is_done(with_mlx: None, tmp_path: Path) -> None:
    first = _run(tmp_path, "smollm2")
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "data" / "models" / "mlx" / "smollm2-135m-instruct-q4_1"
    assert f"into {folder} in " in first.stdout
    assert f"ltcai prepare {folder} --engine mlx" in first.stdout
    assert "llama: 30 layers, hidden 576, 9/3 heads, vocab 49152" in first.stderr
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()

    again = _run(tmp_path, "smollm2", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"path": str(folder), "imported": False}


def test_an_unsupported_architecture_is_one_error_line_and_no_folder(tmp_path: Path) -> None:
    gguf = tmp_path / "phi.gguf"
    writer = GGUFWriter(str(gguf), "phi3")  # a header is all the refusal needs to read
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result = _run(tmp_path, str(gguf), "--name", "phi")
    assert result.returncode == 1
    assert "error: the 'phi3' architecture cannot be imported yet (only 'llama')" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "models" / "mlx" / "phi").exists()


def test_bad_names_missing_files_and_foreign_folders_are_refused(tmp_path: Path) -> None:
    bad_name = _run(tmp_path, "smollm2", "--name", "a/b")
    assert bad_name.returncode == 1 and "cannot name an imported model" in bad_name.stderr
    missing = _run(tmp_path, str(tmp_path / "nope.gguf"))
    assert missing.returncode == 1 and "no GGUF file at" in missing.stderr
    foreign = tmp_path / "data" / "models" / "mlx" / "mine"
    foreign.mkdir(parents=True)
    taken = _run(tmp_path, "smollm2", "--name", "mine")
    assert taken.returncode == 1 and "already exists" in taken.stderr and "--force" in taken.stderr
    assert list(foreign.iterdir()) == []
