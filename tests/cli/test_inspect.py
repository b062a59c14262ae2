"""``ltcai inspect`` on a model folder: layer 2 read from the folder's own config files.

Runs the real command line in this process against an isolated data dir; the folder is
where ``ltcai import`` puts an MLX model (``models/mlx/NAME``), in transformers' layout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ltcai.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engines"))
from test_hf_metadata import GENERATION_CONFIG, MODEL_CONFIG, TEMPLATE, TOKENIZER_CONFIG, write_folder  # noqa: E402


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LTCAI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LTCAI_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("LTCAI_SOCKET", str(tmp_path / "none.sock"))
    return tmp_path / "data"


def test_inspect_an_mlx_folder_shows_layer_2_from_its_configs(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_folder(
        data_dir / "models" / "mlx" / "llama-3.2-1b",
        tokenizer_config__json=TOKENIZER_CONFIG,
        generation_config__json=GENERATION_CONFIG,
        config__json=MODEL_CONFIG,
    )
    assert main(["inspect", str(folder), "--engine", "mlx", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["file"] == str(folder)
    rows = {row["field"]: row for row in data["explain"]}
    assert rows["chat_template"]["value"] == TEMPLATE and rows["chat_template"]["layer"] == "model"
    assert rows["stop"]["layer"] == "model" and "<|eom_id|>" in rows["stop"]["value"]

    assert main(["inspect", str(folder), "--engine", "mlx"]) == 0
    table = capsys.readouterr().out
    assert any(line.split()[:1] == ["chat_template"] and line.split()[-1] == "model" for line in table.splitlines()), table


def test_inspect_a_folder_with_a_broken_config_is_one_error_line(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_folder(data_dir / "models" / "mlx" / "broken", tokenizer_config__json="{not json")
    assert main(["inspect", str(folder), "--engine", "mlx"]) == 1
    err = capsys.readouterr().err
    assert "tokenizer_config.json is not a usable model file" in err and "Traceback" not in err
