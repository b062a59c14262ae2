"""Fixtures of the fault suite: a loopback fake HF hub, real GGUF files, hub-pointed daemons.

Everything here is loopback and bounded: the hub listens on 127.0.0.1 only, and every
daemon is a private ``ltcai serve`` subprocess from ``start_daemon`` (tests/conftest.py),
stopped (or found already killed) at teardown with no engine process left behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import pytest
from fake_hf_hub import SlowHub

MiB = 1 << 20


def make_gguf(path: Path, tensor_bytes: int, seed: int) -> bytes:
    """A real GGUF (header, metadata, one tensor of incompressible random floats)."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(f"Fault Test {seed}")
    writer.add_tensor("w", np.random.default_rng(seed).standard_normal(tensor_bytes // 4).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.fixture(scope="session")
def gguf_4mib(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """~4 MiB: a download spanning four 1 MiB chunks."""
    return make_gguf(tmp_path_factory.mktemp("faults-gguf") / "tiny.gguf", 4 * MiB, seed=7)


@pytest.fixture
def slow_hub() -> Iterator[SlowHub]:
    hub = SlowHub().start()
    yield hub
    hub.stop()
