"""The llama.cpp engine: llama.cpp's own ``llama-server``, one process per model.

- check: a llama-server (config, PATH, or ltcai's own build — see :mod:`.llama_server`);
  with none, whether ltcai can build one here (cmake and a C++ compiler). The fallback,
  ``server = "python"`` or chosen when no llama-server can be found or built: ``llama_cpp``
  with its server extra in the engine's Python (the daemon's own environment, a managed
  venv under ``engines/llamacpp``, or ``[engines.llamacpp] python``);
- install: build llama-server from the pinned llama.cpp source, with progress, once per
  version (:mod:`.llama_server_build`); fallback: ``pip install "llama-cpp-python[server]"``;
- download: the bundled model, a local ``.gguf`` path, or a GGUF from the Hugging Face hub;
- serve: ``llama-server --jinja --parallel N`` (continuous batching over N slots) on a free
  loopback port, ready when ``/health`` says 200 (503 while loading is progress, not a
  stall); fallback ``python -m llama_cpp.server``, ready when ``/v1/models`` answers. The
  model loads at start, so there is no separate load step.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import structlog

from .._lazy import import_off_loop
from ..errors import DownloadError, EngineUnavailable, ServerStartError
from ..plugins import hookimpl
from . import gguf_files
from .base import (
    DownloadResult,
    EngineAdapter,
    EngineCheck,
    EngineContext,
    InstallResult,
    RequestRules,
    ServedModel,
)
from .bundled import BUNDLED_MODELS, locate_bundled
from .local_server import PortTaken, free_port, start_and_wait_ready
from .llama_server import LOADING_STATUS, ServerBinary, default_slots, find_server_binary, probe_version, server_argv
from .llama_server_build import BuildPlan, build_llama_server, install_dir, installed_binary, missing_tools, plan_build
from .managed_venv import engine_python, install_and_recheck, recheck_after_install, run_probe

__all__ = ["LlamaCppEngine"]

log = structlog.get_logger(__name__)

_PACKAGE = "llama-cpp-python[server]"
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "pydantic_settings", "starlette_context")
# Templates the family profile names, mapped to llama-cpp-python's --chat_format, for
# GGUFs that carry no chat template of their own (Gemma 3 base).
_CHAT_FORMATS = {"gemma": "gemma", "chatml": "chatml", "llama": "llama-3", "mistral": "mistral-instruct"}
_PORT_RETRIES = 3
_DEFAULT_N_CTX = 4096  # what the server is started with when [engines.llamacpp] n_ctx is not set
_SERVERS = ("auto", "llama-server", "python")

# Run in the engine's Python (``python -c``), or — when that is the daemon's own — in a
# worker thread here, which answers the same question ~140 ms sooner (no interpreter
# start): one source for both.
_PROBE_SOURCE = (
    "import importlib.metadata as m, importlib.util as u\n"
    "def probe():\n"
    f"    missing = [n for n in {_SERVER_MODULES!r} if u.find_spec(n) is None]\n"
    "    version = m.version('llama_cpp_python') if u.find_spec('llama_cpp') else ''\n"
    "    return version + ' ' + ','.join(missing)\n"
)
_CHECK_SCRIPT = _PROBE_SOURCE + "print(probe())\n"


def _probe_here() -> str:
    namespace: dict[str, Any] = {}
    exec(_PROBE_SOURCE, namespace)  # noqa: S102 — our own constant, see above
    return namespace["probe"]()


@dataclass(frozen=True)
class _Choice:
    """Which server this host runs, as decided by ``_choose``."""

    server: str  # "llama-server" or "python"
    binary: ServerBinary | None = None  # llama-server found
    plan: BuildPlan | None = None  # llama-server to build (binary None)
    build_blocker: str | None = None  # why no llama-server can be built here


class LlamaCppEngine(EngineAdapter):
    name = "llamacpp"
    description = "llama.cpp: llama-server (parallel slots, continuous batching); llama-cpp-python's server as fallback"
    # llama-server's OpenAI API (with --jinja: the GGUF's own template and tool-call format);
    # it answers one choice (no n), and sees images only with a projector (not set up).
    request_rules = RequestRules(fields=frozenset({
        "tools", "tool_choice", "parallel_tool_calls", "response_format", "logprobs", "top_logprobs",
        "presence_penalty", "frequency_penalty", "logit_bias", "seed", "user",
    }), template_tools=True)

    def __init__(self) -> None:
        self._verified = gguf_files.VerifiedFiles()  # files already hashed, kept across restarts
        self._versions: dict[tuple[str, int], str | None] = {}  # (binary, mtime) → --version
        self._build_locks: dict[str, anyio.Lock] = {}  # single-flight per build destination

    def _python(self, ctx: EngineContext) -> str:
        return engine_python(self.name, ctx.options, ctx.engines_dir)

    def _mode(self, ctx: EngineContext) -> str:
        mode = str(ctx.options.get("server", "auto"))
        if mode not in _SERVERS:
            raise EngineUnavailable(
                f"[engines.llamacpp] server = {mode!r} is not one of {', '.join(_SERVERS)}",
                hint='"auto" (the default) runs llama-server, building it if needed, else llama-cpp-python',
                code="invalid_config",
            )
        return mode

    async def _choose(self, ctx: EngineContext) -> _Choice:
        mode = self._mode(ctx)
        if mode == "python":
            return _Choice("python")
        plan = plan_build(ctx.options)

        def look() -> tuple[ServerBinary | None, str | None]:
            binary = find_server_binary(ctx.options, installed_binary(ctx.engines_dir, plan))
            return binary, (None if binary else missing_tools(plan))

        binary, blocker = await ctx.run_sync(look)
        if binary is not None:
            return _Choice("llama-server", binary=binary)
        if blocker is None or mode == "llama-server":
            return _Choice("llama-server", plan=plan, build_blocker=blocker)
        return _Choice("python", build_blocker=blocker)  # auto, and nothing to build with

    async def _version(self, ctx: EngineContext, path: str) -> str | None:
        try:
            mtime = (await ctx.run_sync(os.stat, path)).st_mtime_ns
        except OSError:
            return None
        key = (path, mtime)
        if key not in self._versions:
            self._versions[key] = await probe_version(path)
        return self._versions[key]

    async def check(self, ctx: EngineContext) -> EngineCheck:
        choice = await self._choose(ctx)
        if choice.server == "python":
            check = await self._check_python(ctx)
            if choice.build_blocker:  # say why the faster server is not used
                details = {**check.details, "why_not_llama_server": f"cannot build llama-server: {choice.build_blocker} missing"}
                check = EngineCheck(**{**check.to_dict(), "details": details})
            return check
        if choice.binary is not None:
            version = await self._version(ctx, choice.binary.path)
            details = choice.binary.to_dict(version)
            if version is None:
                return EngineCheck(
                    available=False,
                    reason=f"the llama-server at {choice.binary.path} ({choice.binary.origin}) does not run",
                    install_hint="fix or remove [engines.llamacpp] server_binary, or set server = \"python\"",
                    details=details,
                )
            return EngineCheck(available=True, version=version, details=details)
        assert choice.plan is not None
        folder = install_dir(ctx.engines_dir, choice.plan)
        if choice.build_blocker:
            return EngineCheck(
                available=False,
                reason=f"no llama-server found, and building one needs {choice.build_blocker}",
                install_hint="install llama.cpp (brew install llama.cpp, or your distribution's package), "
                "or cmake and a C++ compiler so ltcai can build it, or set server = \"python\"",
                details={"server": "llama-server"},
            )
        return EngineCheck(
            available=False,
            reason="no llama-server found (config, PATH, or an earlier ltcai build)",
            install_hint=f"`ltcai engines install llamacpp` builds it into {folder} (~10 minutes on 2 cores)",
            installable=True,
            details={"server": "llama-server", "build": str(folder), "backend": choice.plan.backend},
        )

    async def kv_sequences(self, ctx: EngineContext) -> int:
        choice = await self._choose(ctx)
        return self._slots(ctx) if choice.server == "llama-server" else 1

    def _slots(self, ctx: EngineContext) -> int:
        return int(ctx.options.get("parallel") or default_slots())

    async def _check_python(self, ctx: EngineContext) -> EngineCheck:
        python = self._python(ctx)
        if python == sys.executable:
            answer = await ctx.run_sync(_probe_here)
        else:
            probed = await run_probe(self.name, python, _CHECK_SCRIPT)
            if isinstance(probed, EngineCheck):
                return probed
            answer = probed
        version, _, missing = answer.strip().partition(" ")
        hint = f'pip install "{_PACKAGE}"  (or let `ltcai prepare` install it into a managed venv)'
        details = {"server": "python", "python": python}
        if not version:
            return EngineCheck(
                available=False,
                reason=f"llama-cpp-python is not installed for {python}",
                install_hint=hint,
                installable=True,
                details=details,
            )
        if missing:
            return EngineCheck(
                available=False,
                version=version,
                reason=f"llama-cpp-python {version} lacks its server extra (missing: {missing})",
                install_hint=hint,
                installable=True,
                details=details,
            )
        return EngineCheck(available=True, version=version, details=details)

    async def install(self, ctx: EngineContext, check: EngineCheck) -> InstallResult | None:
        if check.available:
            return None
        if check.details.get("server") == "python":
            ctx.progress(f"installing {_PACKAGE} (a source build takes ~10 minutes on 2 cores)")
            return await install_and_recheck(self, ctx, [_PACKAGE], "llama-cpp-python")
        plan = plan_build(ctx.options)
        lock = self._build_locks.setdefault(str(install_dir(ctx.engines_dir, plan)), anyio.Lock())
        if lock.locked():
            ctx.progress("llama-server is being built by another prepare; waiting for it")
        async with lock:
            # A concurrent prepare may have built it while this one waited.
            binary = await ctx.run_sync(installed_binary, ctx.engines_dir, plan)
            built_now = binary is None
            if built_now:
                binary = await build_llama_server(ctx, plan)
        after = await recheck_after_install(self, ctx, f"llama-server ({binary})")
        verb = "built" if built_now else "found (built by a concurrent prepare)"
        return InstallResult(installed=True, message=f"{verb} llama-server {after.version} at {binary}", version=after.version)

    async def download(self, ctx: EngineContext, resolution: Any) -> DownloadResult | None:
        model = resolution.resolved_model
        bundled = BUNDLED_MODELS.get(model)
        if bundled is not None:
            located = locate_bundled(bundled)
            ctx.progress(f"verifying the bundled model {located.path.name}", done=0, total=located.size, unit="B")
            await gguf_files.verify_file(
                ctx, located.path, size=located.size, sha256=located.sha256, memo=self._verified
            )
            return DownloadResult(
                path=str(located.path),
                downloaded=False,
                bytes=located.size,
                sha256=located.sha256,
                source="bundled",
                message=f"bundled with the {bundled.distribution} package",
            )
        local = Path(model).expanduser()
        if local.is_absolute():
            if not local.is_file():
                raise DownloadError(f"no model file at {local}", hint="check the path", code="model_not_found")
            await gguf_files.check_magic(ctx, local)
            return DownloadResult(
                path=str(local), downloaded=False, bytes=local.stat().st_size, source="local", message="local file"
            )
        hf_download = await import_off_loop("ltcai.engines.hf_download")
        return await hf_download.download_gguf(ctx, model)

    async def serve(self, ctx: EngineContext, resolution: Any, download: DownloadResult | None) -> ServedModel:
        if download is None or download.path is None:
            raise ServerStartError("llama.cpp needs a model file and none was downloaded")
        last_error: ServerStartError | None = None
        for _attempt in range(_PORT_RETRIES):
            try:
                return await self._start_server(ctx, resolution, download.path)
            except PortTaken as exc:
                last_error = ServerStartError(str(exc))
                ctx.progress("port taken by another program; trying another")
        assert last_error is not None
        raise last_error

    def _python_argv(self, ctx: EngineContext, model_path: str, model_id: str, port: int) -> list[str]:
        options = ctx.options
        argv = [
            self._python(ctx), "-m", "llama_cpp.server",
            "--model", model_path,
            "--model_alias", model_id,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--n_ctx", str(_context_size(options)),
            # Its default ends a running stream with [DONE] when another request arrives:
            # one client's answer would be cut short by the next. ltcai serves many
            # clients, so requests queue instead.
            "--interrupt_requests", "false",
        ]  # fmt: skip
        if options.get("n_threads"):
            argv += ["--n_threads", str(options["n_threads"])]
        if options.get("n_gpu_layers") is not None:
            argv += ["--n_gpu_layers", str(options["n_gpu_layers"])]
        profile = ctx.profile
        if profile is not None and not profile.chat_template:
            chat_format = _CHAT_FORMATS.get(profile.template)
            if chat_format:
                argv += ["--chat_format", chat_format]
        return argv

    async def _start_server(self, ctx: EngineContext, resolution: Any, model_path: str) -> ServedModel:
        port = free_port()
        model_id = resolution.resolved_model
        base_url = f"http://127.0.0.1:{port}/v1"
        choice = await self._choose(ctx)
        if choice.server == "python":
            process = await start_and_wait_ready(
                ctx,
                self.name,
                self._python_argv(ctx, model_path, model_id, port),
                base_url + "/models",
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                what="llama.cpp (python)",
            )
            return ServedModel(
                engine=self.name, model=model_id, base_url=base_url, process=process, artifact_path=model_path,
                context=_per_request_context(ctx.options),
            )
        if choice.binary is None:
            raise ServerStartError("no llama-server to start", hint="run `ltcai engines install llamacpp`")
        slots = self._slots(ctx)
        argv = server_argv(
            choice.binary.path,
            model_path=model_path,
            model_id=model_id,
            port=port,
            options=ctx.options,
            profile=ctx.profile,
            slots=slots,
        )
        process = await start_and_wait_ready(
            ctx,
            self.name,
            argv,
            f"http://127.0.0.1:{port}/health",
            what="llama-server",
            loading_status=LOADING_STATUS,
        )
        return ServedModel(
            engine=self.name, model=model_id, base_url=base_url, process=process, artifact_path=model_path,
            slots=slots, context=_per_request_context(ctx.options),
        )


def _context_size(options: dict[str, Any]) -> Any:
    return options.get("n_ctx", _DEFAULT_N_CTX)


def _per_request_context(options: dict[str, Any]) -> int | None:
    """The context one request can use: n_ctx (llama_cpp.server answers one at a time;
    llama-server gives each slot n_ctx); None for 0, "the model's own", which only the
    server knows."""
    n_ctx = _context_size(options)
    return n_ctx if isinstance(n_ctx, int) and not isinstance(n_ctx, bool) and n_ctx > 0 else None


@hookimpl
def ltcai_register_engines(register: Any) -> None:
    register(LlamaCppEngine())
