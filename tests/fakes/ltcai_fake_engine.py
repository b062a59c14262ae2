"""A FAKE engine plugin for the daemon's tests: an engine named ``fake`` told what to do
by the model id, so one daemon serves every scenario at once.

Load it into a daemon with ``PYTHONPATH=tests/fakes LTCAI_PLUGINS=ltcai_fake_engine`` and
prepare e.g. ``fake-hang-load`` with engine ``fake``. The id is split on ``-``; a leading
``fake`` is ignored and so is any word that is not a behaviour (use one as a tag to make
ids unique: ``fake-slow-download-a3``). Behaviours:

    ok                  everything works (also what an id without behaviours does)
    fail-<phase>        the phase fails with the ltcai error a real engine would raise
    hang-<phase>        the phase never returns (stall timeouts, cancellation)
    slow-<phase>        the phase takes ~0.3 s, reporting progress all along
    crawl-<phase>       the phase takes ~1.5 s, reporting progress every 0.05 s
    bug-<phase>         the phase raises a plain RuntimeError (an adapter bug)
    needs-install       check says "missing but installable", install succeeds
    degraded            the server answers without the expected result (smoke: degraded)
    failed-smoke        the server answers nothing (smoke: failed, empty response)
    leak                the server ignores stops and leaks ``<|im_end|>`` (smoke: failed)
    think               the server ignores stops and answers with a ``<think>`` block first
    crash-chat          the server process exits on the first chat after the smoke test
    slow-stream         streamed chats send a chunk every 0.1 s
    stall-stream        streamed chats send one chunk, then nothing ever again
    helper              the server starts a child left in its process group (reaping)
    no-embed            the server has no embeddings (as llama-server without --embeddings)
    no-tools            the server answers text to a chat with tools (tools probe: failed)
    no-schema           the server ignores response_format (json_schema probe: failed)
    one-slot            the served model has 1 slot (default 16: the server is threaded),
                        so a second request queues in the daemon
    weights             the download leaves a real file, ``<models_dir>/fake/<id>.bin``
                        (kept if there: a test may touch it), and reports its path

An id with a ``/`` (``acme/tiny-GGUF``) is a Hugging Face reference: the download step is
the real one (``ltcai.engines.hf_download``, against ``HF_ENDPOINT``, e.g. the loopback
``fake_hf_hub``); the rest is the fake's.

Phases: ``check`` (ENGINE_CHECK), ``install`` (ENGINE_INSTALL), ``download``
(DOWNLOADING), ``serve`` (SERVER_STARTING: a real server process is spawned through the
daemon's supervisor), ``models`` (MODEL_SERVING: the server's ``/v1/models``), ``load``
(MODEL_LOADING), ``smoke`` (SMOKE_TEST: the server's chat route).

``PHASE_STATE`` maps a phase to its state and ``FAIL_CODE`` to the error code a failure
there reports, so tests assert against the same table the fake acts on.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog

from ltcai.compat import SMOKE_PROMPT
from ltcai.engines import hf_download
from ltcai.engines.base import (
    DownloadResult,
    EngineAdapter,
    EngineCheck,
    EngineContext,
    InstallResult,
    LoadResult,
    RequestRules,
    ServedModel,
)
from ltcai.errors import DownloadError, EngineError, EngineUnavailable, ServerStartError
from ltcai.plugins import hookimpl

__all__ = ["FAIL_CODE", "PHASES", "PHASE_STATE", "Behaviour", "FakeEngine"]

SERVER_SCRIPT = Path(__file__).with_name("fake_openai_server.py")
# What a reasoning model answers (``think``): its thinking first, then the answer.
THINKING_ANSWER = "<think>Two and two make four.</think>\n\n2 + 2 = 4."

PHASE_STATE: dict[str, str] = {
    "check": "engine_check",
    "install": "engine_install",
    "download": "downloading",
    "serve": "server_starting",
    "models": "model_serving",
    "load": "model_loading",
    "smoke": "smoke_test",
}
PHASES: tuple[str, ...] = tuple(PHASE_STATE)
FAIL_CODE: dict[str, str] = {
    "check": "engine_unavailable",
    "install": "engine_install_failed",
    "download": "download_failed",
    "serve": "server_start_failed",
    "models": "engine_unreachable",
    "load": "model_load_failed",
    "smoke": "smoke_test_failed",
}
_MODES = ("fail", "hang", "slow", "crawl", "bug")
_DURATION_S = {"slow": 0.3, "crawl": 1.5}
_TICK_S = 0.05
_FAKE_WEIGHTS_BYTES = 1_000_000
# The fake server answers every request in its own thread: as many slots as tests use at once.
_THREADED_SLOTS = 16


@dataclass(frozen=True)
class Behaviour:
    """What the model id asks of the fake engine and its server."""

    phases: dict[str, str] = field(default_factory=dict)  # phase -> fail/hang/slow/crawl/bug
    flags: frozenset[str] = frozenset()

    @classmethod
    def from_model(cls, model_id: str) -> Behaviour:
        words = model_id.lower().split("-")
        phases: dict[str, str] = {}
        flags: set[str] = set()
        i = 0
        while i < len(words):
            word, following = words[i], words[i + 1] if i + 1 < len(words) else ""
            if word in _MODES and following in PHASES:
                phases[following] = word
                i += 2
                continue
            pair = f"{word}-{following}"
            if pair in ("needs-install", "failed-smoke", "crash-chat", "slow-stream", "stall-stream", "no-embed", "one-slot", "no-tools", "no-schema"):
                flags.add(pair)
                i += 2
                continue
            if word in ("degraded", "leak", "think", "helper", "weights"):
                flags.add(word)
            i += 1
        if "failed-smoke" in flags:
            phases.setdefault("smoke", "fail")
        return cls(phases, frozenset(flags))

    def mode(self, phase: str) -> str | None:
        return self.phases.get(phase)


async def _act(ctx: EngineContext, behaviour: Behaviour, phase: str) -> None:
    """Do what the behaviour says for ``phase`` (anything but failing, which is phase-specific)."""
    mode = behaviour.mode(phase)
    if mode == "hang":
        ctx.progress(f"fake engine hangs in {phase}")
        await anyio.sleep_forever()
    if mode == "bug":
        raise RuntimeError(f"fake engine bug in {phase}")
    if mode in _DURATION_S:
        total = _DURATION_S[mode]
        steps = max(1, round(total / _TICK_S))
        for step in range(1, steps + 1):
            await anyio.sleep(_TICK_S)
            if phase == "download":
                done = _FAKE_WEIGHTS_BYTES * step // steps
                ctx.progress("fake weights", done=done, total=_FAKE_WEIGHTS_BYTES, unit="B")
            else:
                ctx.progress(f"fake {phase} {step}/{steps}")


class FakeEngine(EngineAdapter):
    """The FAKE engine: real server processes, canned answers, behaviour from the model id."""

    name = "fake"
    description = "FAKE engine for tests: behaviour chosen by the model id"
    # Tools through the model's template, as llama-server: a profile whose chat_template has
    # no tools gets ltcai's emulation (the fakes' profiles have no template: native).
    request_rules = RequestRules(template_tools=True)

    async def check(self, ctx: EngineContext) -> EngineCheck:
        behaviour = Behaviour.from_model(_model_of(ctx))
        await _act(ctx, behaviour, "check")
        if behaviour.mode("check") == "fail":
            return EngineCheck(
                available=False,
                reason="the fake engine was told to fail its check",
                install_hint="pick a model id without fail-check",
                installable=False,
            )
        if behaviour.mode("install") is not None or "needs-install" in behaviour.flags:
            return EngineCheck(available=False, reason="fake engine not installed", installable=True)
        return EngineCheck(available=True, version="0.0-fake")

    async def install(self, ctx: EngineContext, check: EngineCheck) -> InstallResult | None:
        behaviour = Behaviour.from_model(_model_of(ctx))
        await _act(ctx, behaviour, "install")
        if behaviour.mode("install") == "fail":
            raise EngineUnavailable(
                "installing the fake engine failed (told to)",
                hint="pick a model id without fail-install",
                code=FAIL_CODE["install"],
            )
        if check.available:
            return None
        return InstallResult(installed=True, message="fake engine installed", version="0.0-fake")

    async def download(self, ctx: EngineContext, resolution: Any) -> DownloadResult | None:
        if "/" in resolution.resolved_model:  # the real HF download (fault tests)
            return await hf_download.download_gguf(ctx, resolution.resolved_model)
        behaviour = Behaviour.from_model(resolution.resolved_model)
        await _act(ctx, behaviour, "download")
        if behaviour.mode("download") == "fail":
            raise DownloadError(
                f"fake download of {resolution.resolved_model} failed (told to)",
                hint="pick a model id without fail-download",
            )
        path = None
        if "weights" in behaviour.flags:
            path = str(await ctx.run_sync(_weights_file, ctx.models_dir / "fake" / f"{resolution.resolved_model}.bin"))
        return DownloadResult(
            path=path, downloaded=True, bytes=_FAKE_WEIGHTS_BYTES, source="fake", message="fake weights"
        )

    async def serve(self, ctx: EngineContext, resolution: Any, download: DownloadResult | None) -> ServedModel:
        model = resolution.resolved_model
        behaviour = Behaviour.from_model(model)
        mode = behaviour.mode("serve")
        if mode in _DURATION_S or mode == "bug":
            await _act(ctx, behaviour, "serve")
        process = await ctx.spawn(self.name, _server_argv(model, behaviour))
        try:
            port = await _await_listening(ctx, process)
            if mode == "hang":
                await _act(ctx, behaviour, "serve")
        except BaseException:
            # Whatever ends this step early (failure, cancel, stall) must not leak the server.
            await process.stop()
            raise
        slots = 1 if "one-slot" in behaviour.flags else _THREADED_SLOTS
        return ServedModel(
            engine=self.name, model=model, base_url=f"http://127.0.0.1:{port}/v1", process=process, slots=slots
        )

    async def load(self, ctx: EngineContext, served: ServedModel) -> LoadResult | None:
        behaviour = Behaviour.from_model(served.model)
        await _act(ctx, behaviour, "load")
        if behaviour.mode("load") == "fail":
            raise EngineError(
                f"the fake engine could not load {served.model} (told to)",
                hint="pick a model id without fail-load",
                code=FAIL_CODE["load"],
            )
        return LoadResult(loaded=True, message=f"fake engine loaded {served.model}")


def _weights_file(path: Path) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * _FAKE_WEIGHTS_BYTES)
    return path


def _model_of(ctx: EngineContext) -> str:
    # check/install are not told the model (a real engine's check does not depend on it);
    # the job manager binds the job's model in structlog's contextvars for every step.
    return str(structlog.contextvars.get_contextvars().get("model", ""))


def _server_argv(model: str, behaviour: Behaviour) -> list[str]:
    argv = [sys.executable, str(SERVER_SCRIPT), "--model", model, "--smoke-prompt", SMOKE_PROMPT]
    if behaviour.mode("serve") == "fail":
        argv += ["--exit-at-start", "3"]
    models = behaviour.mode("models")
    if models in ("fail", "hang"):
        argv += ["--models", models]
    if behaviour.mode("smoke") == "hang":
        argv += ["--hang-chat"]
    if behaviour.mode("smoke") == "fail":
        argv += ["--answer", ""]
    elif "degraded" in behaviour.flags:
        argv += ["--answer", "The answer is five."]
    elif "leak" in behaviour.flags:
        argv += ["--answer", "2 + 2 = 4.<|im_end|>", "--ignore-stop"]
    elif "think" in behaviour.flags:
        argv += ["--answer", THINKING_ANSWER, "--ignore-stop"]
    if "crash-chat" in behaviour.flags:
        argv += ["--crash-on-chat"]
    if "slow-stream" in behaviour.flags:
        argv += ["--answer", "Two plus two makes four, and that is all there is to it.", "--stream-delay", "0.1"]
    if "stall-stream" in behaviour.flags:
        argv += ["--stall-stream"]
    if "helper" in behaviour.flags:
        argv += ["--helper"]
    if "no-embed" in behaviour.flags:
        argv += ["--no-embed"]
    if "no-tools" in behaviour.flags:
        argv += ["--ignore-tools"]
    if "no-schema" in behaviour.flags:
        argv += ["--ignore-format"]
    return argv


async def _await_listening(ctx: EngineContext, process: Any) -> int:
    """The port the server printed; a server that exits first is a ServerStartError."""
    ctx.progress(f"fake server started (pid {process.pid})")
    while True:
        for line in process.last_lines(10):
            if line.startswith("LISTENING "):
                return int(line.split()[1])
        if process.exited.is_set():
            raise ServerStartError(
                f"the fake server exited with code {process.returncode} before listening",
                hint="its last output:\n" + "\n".join(process.last_lines(10)),
            )
        ctx.progress("waiting for the fake server to listen")  # feeds the stall timer
        await anyio.sleep(0.01)


@hookimpl
def ltcai_register_engines(register: Any) -> None:
    register(FakeEngine())
