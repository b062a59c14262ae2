"""GGUF downloads from the Hugging Face hub (placeholder until the resumable downloader lands)."""

from __future__ import annotations

from ..errors import DownloadError
from .base import DownloadResult, EngineContext

__all__ = ["download_gguf"]


async def download_gguf(ctx: EngineContext, model: str) -> DownloadResult:
    raise DownloadError(f"downloading {model} from the Hugging Face hub is not supported yet", code="not_supported")
