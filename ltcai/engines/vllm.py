"""The vLLM engine: vLLM's OpenAI-compatible server (``vllm serve``), one process per model.

- check: ``vllm`` importable in the engine's Python — ``[engines.vllm] python``, a managed
  venv under ``engines/vllm``, or the daemon's own environment — and a supported
  accelerator on the host (an NVIDIA or AMD GPU; ``allow_cpu = true`` for a CPU build);
- install: ``pip install vllm`` into the managed venv (GPU hosts only);
- download: a Hugging Face snapshot through huggingface_hub (reusing the HF cache), or a
  local model folder as is;
- serve: ``<python> -m vllm.entrypoints.openai.api_server`` (the server ``vllm serve``
  runs) on a free loopback port, ready when ``/health`` answers 200 — vLLM binds its
  port only once the model is loaded, so there is no separate load step.

Options (``[engines.vllm]``), passed to the server as the flags vLLM documents
(https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html):

    dtype                          --dtype
    max_model_len                  --max-model-len
    gpu_memory_utilization         --gpu-memory-utilization
    tensor_parallel_size           --tensor-parallel-size
    pipeline_parallel_size         --pipeline-parallel-size
    distributed_executor_backend   --distributed-executor-backend   ("ray" for multi-node)
    served_model_name              --served-model-name              (default: the model id)
    extra_args = [...]             appended verbatim

and, for ltcai itself: ``python`` (the interpreter that has vllm), ``command`` (a list
that replaces ``<python> -m vllm.entrypoints.openai.api_server``, e.g. ``["vllm", "serve"]``
or a container wrapper), ``env`` (a table of extra environment variables, e.g.
``CUDA_VISIBLE_DEVICES``), ``allow_cpu``, ``package`` (what install pip-installs, default
``vllm``), ``revision`` and ``allow_patterns`` (for the snapshot download).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from ..errors import DownloadError, EngineUnavailable, InvalidRequest, ServerStartError
from ..plugins import hookimpl
from .base import DownloadResult, EngineAdapter, EngineCheck, EngineContext, InstallResult, RequestRules, ServedModel
from .hf_snapshot import download_snapshot
from .local_server import PortTaken, free_port, start_and_wait_ready
from .managed_venv import engine_python, install_and_recheck, run_probe

__all__ = ["NO_ACCELERATOR", "PASSTHROUGH_FLAGS", "VllmEngine", "detect_accelerator"]

log = structlog.get_logger(__name__)

_PACKAGE = "vllm"
_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
_PORT_RETRIES = 3

NO_ACCELERATOR = "no supported accelerator on this host (vLLM needs an NVIDIA/AMD GPU or a CPU build)"

# [engines.vllm] option → vLLM server flag, in the order they are passed.
PASSTHROUGH_FLAGS: tuple[tuple[str, str], ...] = (
    ("dtype", "--dtype"),
    ("max_model_len", "--max-model-len"),
    ("gpu_memory_utilization", "--gpu-memory-utilization"),
    ("tensor_parallel_size", "--tensor-parallel-size"),
    ("pipeline_parallel_size", "--pipeline-parallel-size"),
    ("distributed_executor_backend", "--distributed-executor-backend"),
)

# find_spec only: importing vllm itself takes seconds (torch) and check must be quick.
_CHECK_SCRIPT = (
    "import importlib.metadata as m, importlib.util as u\n"
    "print(m.version('vllm') if u.find_spec('vllm') else '')\n"
)


def detect_accelerator() -> str | None:
    """The GPU vLLM could use on this host, in words, or None."""
    if Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi"):
        return "NVIDIA GPU"
    if Path("/dev/kfd").exists() or shutil.which("rocm-smi") or shutil.which("amd-smi"):
        return "AMD GPU (ROCm)"
    return None


def _string_list(options: dict[str, Any], key: str) -> list[str]:
    value = options.get(key)
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise InvalidRequest(
            f"[engines.vllm] {key} must be a list of strings, got {value!r}",
            hint=f'e.g. {key} = ["--enforce-eager"]',
            code="invalid_config",
        )
    return [str(item) for item in value]


class VllmEngine(EngineAdapter):
    name = "vllm"
    description = "vLLM's OpenAI-compatible server (NVIDIA/AMD GPUs; tensor, pipeline and multi-node parallelism)"
    # vLLM serves OpenAI's whole chat request, less OpenAI's own service fields.
    request_rules = RequestRules(fields=frozenset({
        "tools", "tool_choice", "parallel_tool_calls", "response_format", "n", "logprobs", "top_logprobs",
        "presence_penalty", "frequency_penalty", "logit_bias", "seed", "user", "image_url", "dimensions",
    }))

    def __init__(self, accelerator: Callable[[], str | None] = detect_accelerator) -> None:
        self._accelerator = accelerator

    def _python(self, ctx: EngineContext) -> str:
        return engine_python(self.name, ctx.options, ctx.engines_dir)

    async def check(self, ctx: EngineContext) -> EngineCheck:
        accelerator = self._accelerator()
        allow_cpu = bool(ctx.options.get("allow_cpu", False))
        details: dict[str, Any] = {"accelerator": accelerator, "allow_cpu": allow_cpu}
        usable_host = accelerator is not None or allow_cpu
        command = _string_list(ctx.options, "command")
        if command:
            found = shutil.which(command[0]) is not None
            reason = None if found else f"the configured command {command[0]!r} was not found"
            available, version = found, None
            installable, hint = False, "fix [engines.vllm] command in the config"
            details["command"] = command
        else:
            python = self._python(ctx)
            details["python"] = python
            probed = await run_probe(self.name, python, _CHECK_SCRIPT, details=details)
            if isinstance(probed, EngineCheck):
                return probed
            version = probed.strip() or None
            available = version is not None
            reason = None if available else f"vLLM is not installed for {python}"
            # A Python the user named is theirs: ltcai installs only into its own venv.
            installable = not ctx.options.get("python")
            hint = (
                f'{python} -m pip install "{_PACKAGE}"'
                if ctx.options.get("python")
                else f'pip install "{_PACKAGE}"  (or let `ltcai prepare` install it into a managed venv)'
            )
        if not usable_host:
            return EngineCheck(
                available=False,
                version=version,
                reason=NO_ACCELERATOR,
                install_hint=(
                    "run on a host with an NVIDIA (CUDA) or AMD (ROCm) GPU, or install a CPU build of vLLM "
                    "(https://docs.vllm.ai/en/latest/getting_started/installation/cpu.html) and set "
                    "[engines.vllm] allow_cpu = true"
                ),
                installable=False,
                details=details,
            )
        if not available:
            return EngineCheck(
                available=False, reason=reason, install_hint=hint, installable=installable, details=details
            )
        return EngineCheck(available=True, version=version, details=details)

    async def install(self, ctx: EngineContext, check: EngineCheck) -> InstallResult | None:
        if check.available:
            return None
        if not check.installable:
            raise EngineUnavailable(f"vLLM cannot be installed by ltcai: {check.reason}", hint=check.install_hint)
        package = str(ctx.options.get("package") or _PACKAGE)
        ctx.progress(f"installing {package} into a managed venv (torch and CUDA libraries: several GB)")
        return await install_and_recheck(self, ctx, [package], "vLLM")

    async def download(self, ctx: EngineContext, resolution: Any) -> DownloadResult | None:
        model = resolution.download_id or resolution.resolved_model
        local = Path(model).expanduser().resolve()
        if Path(model).expanduser().is_absolute() or model.startswith(("./", "../", "~")):
            if not local.is_dir():
                raise DownloadError(
                    f"no model folder at {local}",
                    hint="vLLM serves a folder in Hugging Face layout (config.json, weights, tokenizer)",
                    code="model_not_found",
                )
            size = await ctx.run_sync(lambda: sum(f.stat().st_size for f in local.rglob("*") if f.is_file()))
            return DownloadResult(path=str(local), downloaded=False, bytes=size, source="local", message="local folder")
        patterns = _string_list(ctx.options, "allow_patterns") or None
        revision = ctx.options.get("revision")
        return await download_snapshot(ctx, model, allow_patterns=patterns, revision=revision)

    async def serve(self, ctx: EngineContext, resolution: Any, download: DownloadResult | None) -> ServedModel:
        model_path = download.path if download is not None and download.path else resolution.resolved_model
        served_name = str(ctx.options.get("served_model_name") or resolution.resolved_model)
        last_error: ServerStartError | None = None
        for _attempt in range(_PORT_RETRIES):
            port = free_port()
            base_url = f"http://127.0.0.1:{port}/v1"
            try:
                process = await start_and_wait_ready(
                    ctx,
                    self.name,
                    self.argv(ctx, model_path, served_name, port),
                    f"http://127.0.0.1:{port}/health",
                    env=self._env(ctx),
                    what="vLLM",
                )
            except PortTaken as exc:
                last_error = ServerStartError(f"port taken: {exc}")
                ctx.progress("port taken by another program; trying another")
                continue
            log.info("vllm serving", model=served_name, port=port, pid=process.pid)
            return ServedModel(
                engine=self.name, model=served_name, base_url=base_url, process=process, artifact_path=model_path
            )
        assert last_error is not None
        raise last_error

    def argv(self, ctx: EngineContext, model_path: str, served_name: str, port: int) -> list[str]:
        """The server's command line: launcher, model, loopback address, passed-through options."""
        options = ctx.options
        launcher = _string_list(options, "command") or [self._python(ctx), "-m", _SERVER_MODULE]
        argv = [
            *launcher,
            "--model", model_path,
            "--served-model-name", served_name,
            "--host", "127.0.0.1",
            "--port", str(port),
        ]  # fmt: skip
        for key, flag in PASSTHROUGH_FLAGS:
            value = options.get(key)
            if value is not None:
                argv += [flag, str(value)]
        return argv + _string_list(options, "extra_args")

    def _env(self, ctx: EngineContext) -> dict[str, str]:
        extra = ctx.options.get("env") or {}
        if not isinstance(extra, dict):
            raise InvalidRequest(
                f"[engines.vllm] env must be a table of strings, got {extra!r}",
                hint='e.g. env = { CUDA_VISIBLE_DEVICES = "0,1" }',
                code="invalid_config",
            )
        return {**os.environ, "PYTHONUNBUFFERED": "1", **{str(k): str(v) for k, v in extra.items()}}


@hookimpl
def ltcai_register_engines(register: Any) -> None:
    register(VllmEngine())
