"""The MLX engine: mlx-lm's OpenAI-compatible server (``python -m mlx_lm.server``).

- check: ``mlx_lm`` importable and ``mlx.core`` loadable in the engine's Python —
  ``[engines.mlx] python``, a managed venv under ``engines/mlx``, or the daemon's own
  environment. ``mlx.core`` is imported, not only found: off macOS the ``mlx`` wheel has
  no backend of its own and fails to load without ``mlx[cpu]`` (or ``mlx[cuda]``);
- install: ``pip install mlx-lm`` (+ ``"mlx[cpu]"`` off macOS) into the managed venv;
- download: an MLX repository from the Hugging Face hub (``org/repo``, a snapshot that
  reuses the HF cache), a local MLX model folder as is, or a GGUF — the bundled SmolLM2
  or a local ``.gguf`` — imported into MLX format by :mod:`.mlx_import` under
  ``models/mlx/<name>``, again only when the source file changed;
- serve: ``python -m mlx_lm.server --model <folder>`` on a free loopback port, ready when
  ``/v1/models`` answers. The server binds before the model is in memory (a background
  thread loads it), so
- load: one single-token request, which waits for that load.

Requests name the model by its resolved folder path: that is the id ``/v1/models``
lists, and any other name (but ``default_model``) makes mlx_lm.server try to fetch a
model of that name from the hub.

Options (``[engines.mlx]``): ``python``, ``packages`` (what install pip-installs),
``revision`` (for hub snapshots), ``extra_args`` (appended to the server's argv verbatim).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import structlog

from ..config.paths import hf_hub_cache
from ..errors import ChatError, DownloadError, EngineUnavailable, InvalidRequest, ServerStartError
from ..plugins import hookimpl
from . import gguf_files, mlx_import
from .base import DownloadResult, EngineAdapter, EngineCheck, EngineContext, InstallResult, LoadResult, RequestRules, ServedModel
from .bundled import BUNDLED_MODELS, DEFAULT_MODEL_ALIAS, locate_bundled
from .hf_snapshot import download_snapshot
from .local_server import PortTaken, free_port, start_and_wait_ready
from .managed_venv import engine_python, install_and_recheck, run_probe

__all__ = ["MlxEngine", "imported_dir", "install_packages", "run_import"]

log = structlog.get_logger(__name__)

_PORT_RETRIES = 3
# The files mlx_lm itself fetches for a model (mlx_lm.utils.DEFAULT_ALLOW_PATTERNS):
# a repo's PyTorch or GGUF copies of the same weights are never downloaded.
_ALLOW_PATTERNS = [
    "*.json", "model*.safetensors", "*.py", "tokenizer.model", "*.tiktoken", "tiktoken.model", "*.txt", "*.jsonl", "*.jinja",
]  # fmt: skip

_CHECK_SCRIPT = """\
import importlib.metadata as m, importlib.util as u, json
if u.find_spec("mlx_lm") is None:
    print(json.dumps({"missing": "mlx-lm"}))
else:
    try:
        import mlx.core as mx
        device = str(mx.default_device())
    except Exception as exc:
        print(json.dumps({"broken": f"{type(exc).__name__}: {exc}"}))
    else:
        print(json.dumps({"version": m.version("mlx-lm"), "mlx": m.version("mlx"), "device": device}))
"""


def install_packages(system: str | None = None) -> list[str]:
    """What install pip-installs: on macOS mlx brings Metal; elsewhere it needs a backend."""
    system = platform.system() if system is None else system
    return ["mlx-lm"] if system == "Darwin" else ["mlx-lm", "mlx[cpu]"]


def imported_dir(models_dir: Path, name: str) -> Path:
    """Where an imported model lives: ``models/mlx/<name>`` (shared by prepare and ``ltcai import``)."""
    if not mlx_import.valid_model_name(name):
        raise InvalidRequest(
            f"{name!r} cannot name an imported model",
            hint="use letters, digits, '.', '_' and '-' (no '/', no leading dot), at most 128 characters",
        )
    return models_dir / "mlx" / name


def _preflight(gguf: Path) -> None:
    """Refuse, from the header alone, a file that is not whole or not a supported model."""
    from .gguf_metadata import read_gguf_metadata  # gguf + numpy: not at daemon start-up

    metadata = read_gguf_metadata(gguf)  # raises for a truncated or non-GGUF file
    try:
        mlx_import.check_architecture(metadata.architecture)
    except mlx_import.GGUFImportError as exc:
        raise DownloadError(exc.message, hint=exc.hint, code=exc.code) from None


async def run_import(
    python: str, gguf: Path, out_dir: Path, *, progress: Callable[[str], None], force: bool = False
) -> dict[str, Any]:
    """Import ``gguf`` into ``out_dir`` by running :mod:`.mlx_import` in the engine's Python.

    Its progress lines (stderr) go to ``progress`` as they come; returns its JSON summary.
    Raises :class:`DownloadError` with the importer's own code, message and hint.
    """
    await anyio.to_thread.run_sync(_preflight, gguf)
    # -I: the script's folder (with this mlx.py in it) must not shadow the mlx package.
    argv = [python, "-I", str(Path(mlx_import.__file__)), str(gguf), str(out_dir), *(["--force"] if force else [])]
    tail: list[str] = []
    try:
        async with await anyio.open_process(argv, stdout=-1, stderr=-1) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            stderr = proc.stderr

            async def relay_progress() -> None:
                pending = b""
                async for data in stderr:
                    *lines, pending = (pending + data).split(b"\n")
                    for raw in lines:
                        line = raw.decode(errors="replace").rstrip()
                        if line:
                            tail[:] = [*tail, line][-15:]
                            progress(line[:200])

            async with anyio.create_task_group() as tg:
                tg.start_soon(relay_progress)
                output = b"".join([chunk async for chunk in proc.stdout])
            code = await proc.wait()
    except OSError as exc:
        raise DownloadError(
            f"the MLX engine's Python {python} cannot run: {exc}",
            hint="set [engines.mlx] python in the config, or run `ltcai prepare smollm2 --engine mlx` to install it",
            code="engine_unavailable",
        ) from exc
    try:
        summary = json.loads(output.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DownloadError(
            f"the importer exited with code {code} and no summary",
            hint="its last output:\n" + "\n".join(tail),
        ) from None
    error = summary.get("error")
    if error:
        hint = error.get("hint")
        if error.get("code") == "engine_unavailable":
            hint = f"{python} lacks MLX: {python} -m pip install {' '.join(map(repr, install_packages()))}"
        raise DownloadError(error["message"], hint=hint, code=error.get("code") or "import_failed")
    return summary


class MlxEngine(EngineAdapter):
    name = "mlx"
    description = "Apple MLX via mlx-lm's OpenAI-compatible server (Apple silicon; CPU on Linux)"
    # What mlx_lm.server reads of a request (its server.py); no response_format, no n,
    # and no /v1/embeddings route.
    request_rules = RequestRules(
        fields=frozenset({
            "tools", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias", "seed", "user",
        }),
        embeddings=False,
    )

    def __init__(self) -> None:
        self._verified = gguf_files.VerifiedFiles()  # bundled files already hashed, kept across restarts

    def _python(self, ctx: EngineContext) -> str:
        return engine_python(self.name, ctx.options, ctx.engines_dir)

    async def check(self, ctx: EngineContext) -> EngineCheck:
        python = self._python(ctx)
        packages = self._packages(ctx)
        hint = f"pip install {' '.join(map(repr, packages))}  (or let `ltcai prepare` install it into a managed venv)"
        if platform.system() == "Darwin" and platform.machine() not in ("arm64", "aarch64"):
            return EngineCheck(available=False, reason="MLX on macOS needs Apple silicon (arm64)", install_hint="use the llamacpp engine")
        probed = await run_probe(self.name, python, _CHECK_SCRIPT)
        if isinstance(probed, EngineCheck):
            return probed
        try:
            found = json.loads(probed.strip().splitlines()[-1])
        except (ValueError, IndexError) as exc:
            return EngineCheck(
                available=False,
                reason=f"the engine's Python {python} cannot run the check: {exc}",
                install_hint="set [engines.mlx] python in the config to a working interpreter",
            )
        # A Python the user named is theirs: ltcai installs only into its own venv.
        installable = not ctx.options.get("python")
        if "missing" in found:
            return EngineCheck(available=False, reason=f"mlx-lm is not installed for {python}", install_hint=hint, installable=installable)
        if "broken" in found:
            return EngineCheck(
                available=False,
                reason=f"mlx is installed for {python} but does not load ({found['broken']})",
                install_hint=hint,
                installable=installable,
            )
        details = {"python": python, "mlx": found["mlx"], "device": found["device"]}
        return EngineCheck(available=True, version=found["version"], details=details)

    def _packages(self, ctx: EngineContext) -> list[str]:
        configured = ctx.options.get("packages")
        return [str(p) for p in configured] if isinstance(configured, list) and configured else install_packages()

    async def install(self, ctx: EngineContext, check: EngineCheck) -> InstallResult | None:
        if check.available:
            return None
        if not check.installable:
            raise EngineUnavailable(f"MLX cannot be installed by ltcai: {check.reason}", hint=check.install_hint)
        return await install_and_recheck(self, ctx, self._packages(ctx), "mlx-lm")

    async def download(self, ctx: EngineContext, resolution: Any) -> DownloadResult | None:
        model = resolution.download_id or resolution.resolved_model
        bundled = BUNDLED_MODELS.get(model)
        if bundled is not None:
            located = locate_bundled(bundled)
            ctx.progress(f"verifying the bundled model {located.path.name}", done=0, total=located.size, unit="B")
            await gguf_files.verify_file(ctx, located.path, size=located.size, sha256=located.sha256, memo=self._verified)
            return await self._import(ctx, located.path, bundled.catalog_id, f"the bundled {bundled.filename}")
        local = Path(model).expanduser()
        if local.is_absolute():
            if local.is_file() and local.suffix == ".gguf":
                return await self._import(ctx, local, local.stem, str(local))
            if not (local / "config.json").is_file():
                raise DownloadError(
                    f"no MLX model folder at {local}",
                    hint="point at a folder with config.json, *.safetensors and the tokenizer, or at a .gguf file to import",
                    code="model_not_found",
                )
            size = await ctx.run_sync(lambda: sum(f.stat().st_size for f in local.rglob("*") if f.is_file()))
            return DownloadResult(path=str(local), downloaded=False, bytes=size, source="local", message="local folder")
        if model.count("/") != 1:
            raise DownloadError(
                f"{model!r} is not an MLX model ltcai can fetch",
                hint="use an MLX repository from the Hugging Face hub (e.g. mlx-community/SmolLM2-135M-Instruct-8bit), "
                "a local MLX folder, a .gguf file, or smollm2",
                code="model_not_found",
            )
        return await download_snapshot(ctx, model, allow_patterns=_ALLOW_PATTERNS, revision=ctx.options.get("revision"))

    async def _import(self, ctx: EngineContext, gguf: Path, name: str, what: str) -> DownloadResult:
        folder = imported_dir(ctx.models_dir, name)
        if await ctx.run_sync(mlx_import.is_imported_from, folder, gguf):
            return DownloadResult(path=str(folder), downloaded=False, source="imported", message=f"imported earlier from {what}")
        ctx.progress(f"importing {what} into MLX format")
        summary = await run_import(self._python(ctx), gguf, folder, progress=ctx.progress, force=True)
        return DownloadResult(
            path=summary["path"],
            downloaded=True,
            bytes=summary["bytes"],
            source="imported",
            message=f"imported from {what} in {summary['seconds']:.1f} s",
        )

    async def serve(self, ctx: EngineContext, resolution: Any, download: DownloadResult | None) -> ServedModel:
        if download is None or download.path is None:
            raise ServerStartError("MLX needs a model folder and none was downloaded")
        folder = str(Path(download.path).resolve())
        # mlx_lm.server's /v1/models scans the HF cache and, when the folder does not exist
        # yet, sends a 200 with an empty body; huggingface_hub creates it on first use anyway.
        await ctx.run_sync(lambda: hf_hub_cache().mkdir(parents=True, exist_ok=True))
        last_error: ServerStartError | None = None
        for _attempt in range(_PORT_RETRIES):
            port = free_port()
            base_url = f"http://127.0.0.1:{port}/v1"
            try:
                process = await start_and_wait_ready(
                    ctx,
                    self.name,
                    self.argv(ctx, folder, port),
                    base_url + "/models",
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    what="mlx_lm",
                )
            except PortTaken as exc:
                last_error = ServerStartError(f"port taken: {exc}")
                ctx.progress("port taken by another program; trying another")
                continue
            log.info("mlx serving", model=folder, port=port, pid=process.pid)
            return ServedModel(engine=self.name, model=folder, base_url=base_url, process=process, artifact_path=folder)
        assert last_error is not None
        raise last_error

    def argv(self, ctx: EngineContext, folder: str, port: int) -> list[str]:
        extra = ctx.options.get("extra_args") or []
        if not isinstance(extra, list):
            raise InvalidRequest(
                f"[engines.mlx] extra_args must be a list of strings, got {extra!r}",
                hint='e.g. extra_args = ["--prompt-cache-size", "4"]',
                code="invalid_config",
            )
        return [self._python(ctx), "-m", "mlx_lm.server", "--model", folder, "--host", "127.0.0.1", "--port", str(port), *map(str, extra)]

    async def load(self, ctx: EngineContext, served: ServedModel) -> LoadResult | None:
        started = time.perf_counter()
        body = {"model": served.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0.0}

        # No ticking progress meanwhile: the step's stall timer is what bounds a server
        # that never finishes loading.
        ctx.progress("loading the model (mlx_lm.server loads it for the first request)")
        try:
            response = await ctx.http.post(served.base_url + "/chat/completions", json=body, timeout=None)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            tail = served.process.last_lines(15) if served.process is not None else []
            raise ChatError(
                f"mlx_lm.server could not load {served.model}: {exc}",
                hint="its last output:\n" + "\n".join(tail),
                code="model_load_failed",
            ) from exc
        return LoadResult(loaded=True, message=f"loaded by a warm-up request in {time.perf_counter() - started:.1f} s")


@hookimpl
def ltcai_register_engines(register: Any) -> None:
    register(MlxEngine())


@hookimpl
def ltcai_resolve_model(model_id: str, engine: str) -> str | None:
    # The embedded default on MLX is the same bundled GGUF, imported: `smollm2` must
    # resolve to it here too (on Apple silicon mlx is the default engine).
    if engine == "mlx" and model_id.casefold() == DEFAULT_MODEL_ALIAS:
        return next(iter(BUNDLED_MODELS))
    return None
