"""Whole-repository downloads from the Hugging Face hub (MLX and vLLM models).

huggingface_hub's ``snapshot_download`` does the work (and reuses the user's HF cache:
a repo already there is not fetched again); its progress bars are turned into our byte
progress events. Blocking, so it runs in a worker thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread

from .._lazy import import_off_loop
from ..errors import DownloadError
from .base import DownloadResult, EngineContext

__all__ = ["download_snapshot"]


def _progress_class(ctx: EngineContext) -> type:
    from tqdm.auto import tqdm

    class _Progress(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)

        def display(self, *args: Any, **kwargs: Any) -> None:  # no terminal output
            if self.unit == "B" and self.total:
                done, total, label = self.n, self.total, self.desc or "downloading"
                anyio.from_thread.run_sync(lambda: ctx.progress(label, done=done, total=total, unit="B"))

    return _Progress


async def download_snapshot(
    ctx: EngineContext, repo_id: str, *, allow_patterns: list[str] | None = None, revision: str | None = None
) -> DownloadResult:
    hub = await import_off_loop("huggingface_hub")  # see ltcai._lazy
    errors = await import_off_loop("huggingface_hub.errors")
    snapshot_download = hub.snapshot_download
    HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError = (  # noqa: N806
        errors.HfHubHTTPError, errors.LocalEntryNotFoundError, errors.RepositoryNotFoundError
    )

    def fetch() -> str:
        return snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=allow_patterns,
            tqdm_class=_progress_class(ctx),
            endpoint=os.environ.get("HF_ENDPOINT") or None,
        )

    try:
        path = await anyio.to_thread.run_sync(fetch)
    except RepositoryNotFoundError as exc:
        raise DownloadError(f"no repository {repo_id} on the Hugging Face hub", hint="check the id (org/repo)", code="repo_not_found") from exc
    except LocalEntryNotFoundError as exc:
        raise DownloadError(f"{repo_id} is not in the local cache and the hub cannot be reached", hint="connect to the network or unset HF_HUB_OFFLINE", code="offline") from exc
    except HfHubHTTPError as exc:
        raise DownloadError(f"downloading {repo_id} failed: {exc}", code="network_error") from exc
    except OSError as exc:
        raise DownloadError(f"downloading {repo_id} failed: {exc}", code="disk_full" if exc.errno == 28 else "download_failed") from exc
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    return DownloadResult(path=path, downloaded=True, bytes=size, source="hf", message=f"{repo_id} snapshot")
