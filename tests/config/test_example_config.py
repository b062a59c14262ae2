"""``config/ltcai.example.toml``: it loads, documents every setting, and its examples are valid."""

from __future__ import annotations

import dataclasses
import inspect
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from ltcai.compat import build_profile
from ltcai.compat._overrides import OVERRIDE_KEYS
from ltcai.config.settings import Settings, load_settings
from ltcai.engines import llama_server, llama_server_build, llamacpp, managed_venv

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "ltcai.example.toml"
SETTINGS = [f for f in dataclasses.fields(Settings) if f.name != "paths"]
# Options the llamacpp engine reads from [engines.llamacpp]: options.get("x") / options["x"].
_READ = r"options(?:\.get\(|\[)\"(\w+)\""
# What llamacpp reads itself and through its llama-server modules, and ``python``, read
# for it by the shared engine_python rule.
LLAMACPP_OPTIONS = set().union(
    *(
        re.findall(_READ, inspect.getsource(source))
        for source in (llamacpp, llama_server, llama_server_build, managed_venv.engine_python)
    )
)
# "# key = value": an example line to uncomment.
EXAMPLE_LINE = re.compile(r"^# ([a-z_]+ = .+)$", re.MULTILINE)


def part(name: str) -> str:
    """One part of the example, by its divider ("# ----- profiles"), up to the next one."""
    pieces = re.split(r"^# -+ (\w+)$", EXAMPLE.read_text(), flags=re.MULTILINE)
    parts = dict(zip(pieces[1::2], pieces[2::2], strict=True))
    return parts[name]


@pytest.fixture
def example_settings(tmp_path: Path) -> Settings:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    shutil.copy(EXAMPLE, config_dir / "config.toml")
    env = {"LTCAI_CONFIG_DIR": str(config_dir), "LTCAI_DATA_DIR": str(tmp_path / "data")}
    return load_settings(env)


def test_the_example_loads_as_a_config_file(example_settings: Settings) -> None:
    assert example_settings.paths.config_file.read_text() == EXAMPLE.read_text()


def test_every_active_setting_in_the_example_is_its_default(example_settings: Settings) -> None:
    """Copying the example as it is changes nothing (beyond example-only aliases/profiles)."""
    defaults = Settings(paths=example_settings.paths)
    for f in SETTINGS:
        if f.name not in ("aliases", "profiles", "engines"):
            assert getattr(example_settings, f.name) == getattr(defaults, f.name), f.name
    assert example_settings.engines == {"llamacpp": {"server": "auto", "n_ctx": 4096}}  # the engine's own defaults


@pytest.mark.parametrize("name", [f.name for f in SETTINGS])
def test_every_setting_is_documented(name: str) -> None:
    text = EXAMPLE.read_text()
    as_key = re.search(rf"^(# )?{name} = ", text, re.MULTILINE)
    as_table = re.search(rf"^\[{name}[.\]]", text, re.MULTILINE)
    assert as_key or as_table, f"{name} is not in {EXAMPLE.name}"


@pytest.mark.parametrize("key", OVERRIDE_KEYS)
def test_every_profile_field_is_documented(key: str) -> None:
    assert re.search(rf"^#\s+{key}\s", part("profiles"), re.MULTILINE), f"profile field {key} is not described"


def test_every_commented_example_line_is_valid_toml() -> None:
    lines = EXAMPLE_LINE.findall(EXAMPLE.read_text())
    assert len(lines) >= 10
    for line in lines:
        tomllib.loads(line)  # raises on a broken example


def test_the_profile_examples_pass_profile_validation(example_settings: Settings) -> None:
    assert example_settings.profiles
    for overrides in example_settings.profiles.values():
        build_profile("example/model", "llamacpp", user_overrides=overrides)
    # The commented fields too: uncomment them all into one override table.
    commented = tomllib.loads("\n".join(EXAMPLE_LINE.findall(part("profiles"))))
    assert set(commented) <= set(OVERRIDE_KEYS)
    build_profile("example/model", "llamacpp", user_overrides=commented)


def test_the_engine_options_are_ones_the_engine_reads() -> None:
    engines = part("engines")
    active = tomllib.loads(engines)["engines"]["llamacpp"]
    documented = set(active) | set(tomllib.loads("\n".join(EXAMPLE_LINE.findall(engines))))
    assert LLAMACPP_OPTIONS >= {"python", "n_ctx"}  # the pattern still finds them
    assert documented == LLAMACPP_OPTIONS
