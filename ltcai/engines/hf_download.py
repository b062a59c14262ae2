"""GGUF files from the Hugging Face hub: pick one, reuse a copy, else fetch it resumably.

``download_gguf(ctx, "hf.co/org/repo:Q4_K_M")`` lists the repository through
huggingface_hub (endpoint, token, file sizes and LFS sha256 all come from there), picks
the GGUF (``pick_gguf``), and then, in order:

1. ltcai's own copy at ``models/hf/<org>/<repo>/main/<file>``, when its size and sha256
   match the hub's (a ``.verified`` stamp saves hashing it again on every prepare);
2. the user's Hugging Face cache (``try_to_load_from_cache``), size-checked, and with a
   blob named by another sha256 rejected — source ``hf_cache``, nothing downloaded;
3. a resumable download (``resumable.fetch``) from the commit the listing named, verified
   before it is renamed into place.

huggingface_hub's own ``hf_hub_download`` is not used for the transfer: it writes to a
per-process temp file that it deletes on failure (no resume across a daemon restart) and
renames before a caller could verify. Offline (``HF_HUB_OFFLINE``) or with the hub
unreachable, a copy already on disk (ours or the HF cache) is used without checking it
against the hub.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import httpx
from huggingface_hub import HfApi, constants, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import (
    DisabledRepoError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import build_hf_headers

from .. import __version__
from ..compat import parse_hf_reference
from ..config.paths import hf_hub_cache
from ..errors import DownloadError
from . import gguf_files, resumable
from .base import DownloadResult, EngineContext

__all__ = ["download_gguf", "pick_gguf"]

try:  # the HTTP client of huggingface_hub 2.x; 1.x used httpx, 0.x requests (an OSError)
    from httpx2 import TransportError as _Httpx2TransportError
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    _Httpx2TransportError = httpx.TransportError

_NETWORK_ERRORS: tuple[type[BaseException], ...] = (OSError, httpx.TransportError, _Httpx2TransportError)
_REVISION = "main"
_LIST_TIMEOUT_S = 30.0
_SPLIT = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)
_QUANT = re.compile(r"^(?:I?Q\d(?:_[A-Z0-9]+)*|TQ\d_\d|B?F16|F32|MXFP4(?:_MOE)?)$", re.IGNORECASE)
# Without a selector, the usual default of GGUF repos; then the smallest common quant.
_PREFERRED_QUANTS = ("Q4_K_M", "Q4_0")
_MAX_CHOICES = 12


@dataclass(frozen=True)
class _HubFile:
    name: str  # path inside the repo
    size: int | None
    sha256: str | None  # LFS files only


@dataclass(frozen=True)
class _Hub:
    endpoint: str
    cache_dir: str
    offline: bool
    headers: dict[str, str] = field(repr=False)  # user agent and, when logged in, the token


def _hub_from_env() -> _Hub:
    """huggingface_hub reads its environment once, at import; read it again per download."""
    env = os.environ
    offline_env = env.get("HF_HUB_OFFLINE")
    offline = offline_env.strip().upper() in constants.ENV_VARS_TRUE_VALUES if offline_env else constants.HF_HUB_OFFLINE
    headers = {} if offline else build_hf_headers(library_name="ltcai", library_version=__version__)
    return _Hub(
        endpoint=(env.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/"),
        cache_dir=str(hf_hub_cache(env)),
        offline=offline,
        headers=headers,
    )


async def download_gguf(ctx: EngineContext, model: str) -> DownloadResult:
    """The GGUF file that ``model`` (``org/repo[:quant|:file.gguf]``) names, on local disk."""
    ref = parse_hf_reference(model)
    if ref is None:
        raise DownloadError(
            f"{model!r} is not a Hugging Face model reference",
            hint="use org/repo, org/repo:Q4_K_M or hf.co/org/repo:file.gguf",
            code="invalid_reference",
        )
    hub: _Hub = await ctx.run_sync(_hub_from_env)
    if hub.offline:
        return await _use_local(ctx, ref.repo_id, ref.selector, hub, DownloadError(
            f"{ref.repo_id} is not on this machine and HF_HUB_OFFLINE is set",
            hint="unset HF_HUB_OFFLINE to download it, or prepare a model that is already here",
            code="offline",
        ))
    ctx.progress(f"listing the files of {ref.repo_id} on {hub.endpoint}")
    try:
        commit, files = await ctx.run_sync(_list_files, hub, ref.repo_id)
    except _Unreachable as exc:
        return await _use_local(ctx, ref.repo_id, ref.selector, hub, DownloadError(
            f"cannot reach {hub.endpoint} to fetch {ref.repo_id}: {exc}",
            hint="check the network (or HF_ENDPOINT / proxy settings) and prepare again",
            code="network_error",
        ))
    file = files[pick_gguf(ref.repo_id, files, ref.selector)]
    dest = _own_path(ctx, ref.repo_id, file.name)

    if await _own_copy_is_current(ctx, dest, file):
        await gguf_files.check_magic(ctx, dest)
        return DownloadResult(
            path=str(dest), downloaded=False, bytes=file.size, sha256=file.sha256, source="hf",
            message=f"{file.name} from {ref.repo_id}, already downloaded",
        )
    cached = await ctx.run_sync(_find_in_hf_cache, hub, ref.repo_id, file, commit)
    if cached is not None:
        ctx.progress(f"found {file.name} in the Hugging Face cache")
        await gguf_files.check_magic(ctx, cached)
        return DownloadResult(
            path=str(cached), downloaded=False, bytes=file.size, sha256=file.sha256, source="hf_cache",
            message=f"{file.name} from {ref.repo_id}, reused from the Hugging Face cache",
        )

    url = hf_hub_url(ref.repo_id, file.name, revision=commit or _REVISION, endpoint=hub.endpoint)
    got = await resumable.fetch(
        ctx, url, dest, size=file.size, sha256=file.sha256, headers=hub.headers, label=file.name
    )
    await ctx.run_sync(_write_stamp, dest, got.sha256)
    await gguf_files.check_magic(ctx, dest)
    resumed = f", resumed at {resumable.format_bytes(got.resumed_from)}" if got.resumed_from else ""
    return DownloadResult(
        path=str(dest), downloaded=True, bytes=got.size, sha256=got.sha256, source="hf",
        message=f"downloaded {file.name} from {ref.repo_id} ({resumable.format_bytes(got.size)}{resumed})",
    )


# --------------------------------------------------------------------------- choosing the file


def pick_gguf(repo_id: str, names: Iterable[str], selector: str | None) -> str:
    """The one GGUF among a repo's file ``names`` that ``selector`` (quant or file name) means.

    A quant matches a file whose name carries it as a token (``…-Q4_K_M.gguf``,
    ``….q4_k_m.gguf``), case-insensitively. Without a selector: the only model file, else
    Q4_K_M, else Q4_0, else ``ambiguous_file``. Split files (``-00001-of-00003``) are not
    supported yet; vision projectors (``mmproj-…``) are picked only by their file name.
    """
    ggufs = sorted(n for n in names if n.lower().endswith(".gguf"))
    if not ggufs:
        raise DownloadError(
            f"{repo_id} has no GGUF file",
            hint="llama.cpp loads GGUF files; look for a repository with GGUF in its name",
            code="file_not_found",
        )
    by_name = bool(selector and selector.lower().endswith(".gguf"))
    if by_name:
        matches = (
            [n for n in ggufs if n == selector]
            or [n for n in ggufs if PurePosixPath(n).name == selector]
            or [n for n in ggufs if PurePosixPath(n).name.lower() == selector.lower()]
        )
        wanted = f"the file {selector}"
    elif selector:
        matches = [n for n in ggufs if _has_quant(n, selector)]
        wanted = f"the quant {selector}"
    else:
        matches = ggufs
        wanted = "a single-file model"
    whole = [n for n in matches if not _SPLIT.search(n)]
    models = whole if by_name else [n for n in whole if not _is_projector(n)]
    if len(models) == 1:
        return models[0]
    if not selector:
        for quant in _PREFERRED_QUANTS:
            preferred = [n for n in models if _has_quant(n, quant)]
            if len(preferred) == 1:
                return preferred[0]
    if models:
        raise DownloadError(
            f"{repo_id} has {len(models)} GGUF files for {wanted}; say which one",
            hint="choose one of: " + _choices(repo_id, models),
            code="ambiguous_file",
        )
    available = _single_models(ggufs)
    hint = ("choose one of: " + _choices(repo_id, available)) if available else "it has no single-file model GGUF"
    if matches and not whole:
        raise DownloadError(
            f"{repo_id} has {wanted} only as a multi-part GGUF, which ltcai does not download yet",
            hint=hint,
            code="unsupported",
        )
    raise DownloadError(f"{repo_id} has no GGUF file for {wanted}", hint=hint, code="file_not_found")


def _has_quant(name: str, quant: str) -> bool:
    stem = name[: -len(".gguf")]
    return re.search(rf"(?:^|[-._/]){re.escape(quant)}(?=$|[-./])", stem, re.IGNORECASE) is not None


def _quant_of(name: str) -> str | None:
    tokens = re.split(r"[-./]", _SPLIT.sub(".gguf", name)[: -len(".gguf")])
    return next((t for t in reversed(tokens) if _QUANT.match(t)), None)


def _is_projector(name: str) -> bool:
    return PurePosixPath(name).name.lower().startswith("mmproj")


def _single_models(names: list[str]) -> list[str]:
    return [n for n in names if not _SPLIT.search(n) and not _is_projector(n)]


def _choices(repo_id: str, names: list[str]) -> str:
    quants = [_quant_of(n) for n in names]
    upper = [q.upper() for q in quants if q]
    shown = [
        f"{repo_id}:{q}" if q and upper.count(q.upper()) == 1 else f"{repo_id}:{n}"
        for n, q in zip(names, quants, strict=True)
    ]
    more = f" (and {len(shown) - _MAX_CHOICES} more)" if len(shown) > _MAX_CHOICES else ""
    return ", ".join(shown[:_MAX_CHOICES]) + more


# --------------------------------------------------------------------------- the hub


class _Unreachable(Exception):
    """The hub did not answer at all (as opposed to answering "no")."""


def _list_files(hub: _Hub, repo_id: str) -> tuple[str | None, dict[str, _HubFile]]:
    """The commit ``main`` points at and the repo's files with sizes and LFS sha256 (blocking)."""
    api = HfApi(endpoint=hub.endpoint, library_name="ltcai", library_version=__version__)
    try:
        info = api.model_info(repo_id, files_metadata=True, timeout=_LIST_TIMEOUT_S)
    except GatedRepoError as exc:
        raise DownloadError(
            f"{repo_id} is gated: its files need an accepted licence and a login",
            hint=f"accept the terms at {hub.endpoint}/{repo_id}, then `hf auth login` (or set HF_TOKEN)",
            code="auth_failed",
        ) from exc
    except (RepositoryNotFoundError, DisabledRepoError) as exc:
        raise DownloadError(
            f"no model repository {repo_id} on {hub.endpoint}",
            hint="check the name (org/repo); a private repository needs `hf auth login` or HF_TOKEN",
            code="repo_not_found",
        ) from exc
    except RevisionNotFoundError as exc:
        raise DownloadError(
            f"{repo_id} has no {_REVISION} branch", hint="name a file of another branch", code="repo_not_found"
        ) from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise DownloadError(
            f"{hub.endpoint} answered HTTP {status} when listing {repo_id}",
            hint="the hub may be busy or down; prepare again later",
            code="network_error",
        ) from exc
    except _NETWORK_ERRORS as exc:
        raise _Unreachable(str(exc) or type(exc).__name__) from exc
    files = {}
    for sibling in info.siblings or []:
        lfs = sibling.lfs
        files[sibling.rfilename] = _HubFile(
            name=sibling.rfilename,
            size=lfs.size if lfs is not None else sibling.size,
            sha256=lfs.sha256.lower() if lfs is not None else None,
        )
    return info.sha, files


def _find_in_hf_cache(hub: _Hub, repo_id: str, file: _HubFile, commit: str | None) -> Path | None:
    """The file in the user's HF cache if it is this version of it (blocking; never raises)."""
    for revision in dict.fromkeys([commit, _REVISION]):
        if revision is None:
            continue
        try:
            found = try_to_load_from_cache(repo_id, file.name, cache_dir=hub.cache_dir, revision=revision)
            if not isinstance(found, str):
                continue
            blob = Path(found).resolve(strict=True)
            size = blob.stat().st_size
        except (OSError, ValueError):
            continue
        if file.size is not None and size != file.size:
            continue
        # Blobs are named by their etag, which is the sha256 for LFS files.
        if file.sha256 and re.fullmatch(r"[0-9a-f]{64}", blob.name) and blob.name != file.sha256:
            continue
        return Path(found)
    return None


# --------------------------------------------------------------------------- ltcai's own copies


def _own_path(ctx: EngineContext, repo_id: str, name: str) -> Path:
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or any(p in ("", ".", "..") or "\0" in p for p in parts):
        raise DownloadError(f"the hub listed an unsafe file name {name!r} in {repo_id}", code="invalid_file_name")
    return ctx.models_dir.joinpath("hf", *repo_id.split("/"), _REVISION, *parts)


def _stamp_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified")


def _write_stamp(dest: Path, sha256: str) -> None:
    """Record that ``dest`` as it is now (size, mtime) has been hashed to ``sha256``."""
    stat = dest.stat()
    stamp = _stamp_path(dest)
    tmp = stamp.with_name(stamp.name + ".tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:  # private, as the file
        fh.write(json.dumps({"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))
    os.replace(tmp, stamp)


def _read_stamp(dest: Path) -> str | None:
    """The sha256 the stamp vouches for, if ``dest`` has not changed since; else None."""
    try:
        stamp = json.loads(_stamp_path(dest).read_text())
        stat = dest.stat()
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or (stamp.get("size"), stamp.get("mtime_ns")) != (stat.st_size, stat.st_mtime_ns):
        return None
    return stamp.get("sha256")


async def _own_copy_is_current(ctx: EngineContext, dest: Path, file: _HubFile) -> bool:
    """Whether our finished copy is the hub's current file; a stale one is replaced later."""
    try:
        size = dest.stat().st_size
    except FileNotFoundError:
        return False
    if file.size is not None and size != file.size:
        ctx.progress(f"{file.name} changed on the hub; downloading the new version")
        return False
    stamped = await ctx.run_sync(_read_stamp, dest)
    if file.sha256 is None or stamped == file.sha256:
        return True
    ctx.progress(f"verifying {file.name}", done=0, total=size, unit="B")
    try:
        await gguf_files.verify_file(ctx, dest, size=file.size, sha256=file.sha256)
    except DownloadError as exc:
        if exc.code != "checksum_mismatch":
            raise
        ctx.progress(f"{file.name} differs from the hub's; downloading it again")
        return False
    await ctx.run_sync(_write_stamp, dest, file.sha256)
    return True


async def _use_local(
    ctx: EngineContext, repo_id: str, selector: str | None, hub: _Hub, unavailable: DownloadError
) -> DownloadResult:
    """Without the hub: a GGUF of this repo already on disk (ours first, then the HF cache)."""
    found: dict[str, tuple[Path, str]] = await ctx.run_sync(_local_ggufs, ctx.models_dir, hub, repo_id)
    if not found:
        raise unavailable
    name = pick_gguf(repo_id, found, selector)
    path, source = found[name]
    await gguf_files.check_magic(ctx, path)
    return DownloadResult(
        path=str(path), downloaded=False, bytes=path.stat().st_size, sha256=await ctx.run_sync(_read_stamp, path),
        source=source, message=f"{name} from {repo_id}, the copy on disk ({unavailable.message})",
    )


def _local_ggufs(models_dir: Path, hub: _Hub, repo_id: str) -> dict[str, tuple[Path, str]]:
    found: dict[str, tuple[Path, str]] = {}
    try:
        refs = Path(hub.cache_dir, repo_folder_name(repo_id=repo_id, repo_type="model"), "refs", _REVISION)
        snapshot = refs.parent.parent / "snapshots" / refs.read_text().strip()
        for path in snapshot.rglob("*.gguf"):
            if path.is_file():
                found[path.relative_to(snapshot).as_posix()] = (path, "hf_cache")
    except OSError:
        pass
    own = models_dir.joinpath("hf", *repo_id.split("/"), _REVISION)
    for path in own.rglob("*.gguf") if own.is_dir() else ():
        if path.is_file():  # only whole files ever have the .gguf name
            found[path.relative_to(own).as_posix()] = (path, "hf")
    return found
