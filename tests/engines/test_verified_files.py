"""A model file's hash is checked once, and remembered across daemon restarts until the file changes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from ltcai.engines import gguf_files
from ltcai.engines.base import EngineContext
from ltcai.errors import DownloadError


def _ctx(tmp_path: Path) -> EngineContext:
    return EngineContext(
        options={}, models_dir=tmp_path / "models", engines_dir=tmp_path / "engines", logs_dir=tmp_path / "logs",
        spawn=None,  # type: ignore[arg-type]
        http=None,  # type: ignore[arg-type]
        progress=lambda *a, **k: None, run_sync=anyio.to_thread.run_sync,
    )


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    seen: list[Path] = []
    real = gguf_files.sha256_file

    def counting(path: Path, *args: Any) -> str:
        seen.append(path)
        return real(path, *args)

    monkeypatch.setattr(gguf_files, "sha256_file", counting)
    return seen


@pytest.mark.asyncio
async def test_a_restarted_daemon_does_not_hash_an_unchanged_file_again(tmp_path: Path, hashes: list[Path]) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"x" * 1000)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    ctx = _ctx(tmp_path)
    await gguf_files.verify_file(ctx, model, size=None, sha256=digest, memo=gguf_files.VerifiedFiles())
    await gguf_files.verify_file(ctx, model, size=None, sha256=digest, memo=gguf_files.VerifiedFiles())  # a restart
    assert hashes == [model]
    os.utime(model, ns=(1, 1))  # changed on disk (even to the same bytes): hashed anew
    await gguf_files.verify_file(ctx, model, size=None, sha256=digest, memo=gguf_files.VerifiedFiles())
    assert hashes == [model, model]


@pytest.mark.asyncio
async def test_a_mismatch_is_never_remembered_and_a_broken_memo_is_only_a_memo(tmp_path: Path, hashes: list[Path]) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"y" * 100)
    ctx = _ctx(tmp_path)
    ctx.models_dir.mkdir()
    (ctx.models_dir / ".verified.json").write_text("{not json")
    for _ in range(2):
        with pytest.raises(DownloadError) as failure:
            await gguf_files.verify_file(ctx, model, size=None, sha256="0" * 64, memo=gguf_files.VerifiedFiles())
        assert failure.value.code == "checksum_mismatch"
    assert len(hashes) == 2


@pytest.mark.asyncio
async def test_two_engines_memos_of_one_file_keep_each_others_entries(tmp_path: Path, hashes: list[Path]) -> None:
    ctx = _ctx(tmp_path)
    first, second = tmp_path / "a.gguf", tmp_path / "b.gguf"
    first.write_bytes(b"GGUF-a")
    second.write_bytes(b"GGUF-b")
    llamacpp, mlx = gguf_files.VerifiedFiles(), gguf_files.VerifiedFiles()
    assert not await llamacpp.contains(ctx, "nothing")  # both loaded the (empty) memo first
    assert not await mlx.contains(ctx, "nothing")
    for memo, path in ((llamacpp, first), (mlx, second)):
        await gguf_files.verify_file(ctx, path, size=None, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), memo=memo)
    restarted = gguf_files.VerifiedFiles()
    for path in (first, second):
        await gguf_files.verify_file(ctx, path, size=None, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), memo=restarted)
    assert hashes == [first, second]  # the restart hashed neither
