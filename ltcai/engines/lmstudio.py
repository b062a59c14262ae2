"""The LM Studio engine: the ``lms`` CLI and LM Studio's local server.

- check: LM Studio's server answering ``GET /v1/models`` at ``LMSTUDIO_HOST`` (default
  ``localhost:1234``), or the ``lms`` CLI — on PATH, or in ``~/.lmstudio/bin`` where LM
  Studio puts it; LM Studio is never installed by ltcai, the check says how;
- download: ``lms get <model> --yes``, its progress bar read as byte progress (percent
  where it shows no sizes); skipped when ``lms ls --json`` already lists the model;
- serve: the server that answers, else ``lms server start --port <port>``; the server is
  LM Studio's, so ``ServedModel.process`` is None and ltcai never stops it;
- load: ``lms load <model> --identifier <id> --yes``, then the identifier LM Studio
  reports for the new instance (``lms ps --json``, else the server's ``/api/v0/models``)
  is the current id (SPEC §5 "after load"): it may differ from the one asked for
  (``<id>:2``). An instance already loaded under ltcai's identifier is reused;
- unload: ``lms unload <identifier>``;
- chat: the OpenAI-compatible ``/v1/chat/completions``, the identifier as ``model``.

Every ``lms`` call is a subprocess awaited through anyio (never blocking the loop); a
missing ``lms`` is ``engine_unavailable``. Options (``[engines.lmstudio]``): ``host``
(wins over ``LMSTUDIO_HOST``), ``lms`` (the CLI's path), ``ttl`` (seconds an idle
instance stays loaded), ``context_length``, ``gpu`` (``off``, ``max`` or 0–1).

CLI: https://lmstudio.ai/docs/cli — REST: https://lmstudio.ai/docs/app/api/endpoints/rest
and https://lmstudio.ai/docs/app/api/endpoints/openai
"""

from __future__ import annotations

import codecs
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import structlog

from ..errors import DownloadError, EngineError, EngineUnavailable, ServerStartError
from ..plugins import hookimpl
from .base import DownloadResult, EngineAdapter, EngineCheck, EngineContext, LoadResult, RequestRules, ServedModel
from .ollama import host_url

__all__ = ["DEFAULT_HOST", "INSTALL_HINT", "LMStudioEngine"]

log = structlog.get_logger(__name__)

DEFAULT_HOST = "localhost:1234"
_DEFAULT_PORT = 1234
INSTALL_HINT = (
    "install LM Studio from https://lmstudio.ai/download and open it once "
    "(it puts the `lms` CLI in ~/.lmstudio/bin; `npx lmstudio install-cli` adds it to PATH)"
)
_NOT_RUNNING_HINT = "open LM Studio (or run `lms daemon up` for the headless service) and try again"
_CATALOG_HINT = (
    "check the name with `lms get` or at https://lmstudio.ai/models "
    "(a Hugging Face repo works as owner/repo or its huggingface.co URL)"
)
_QUICK_TIMEOUT_S = 60.0
_READY_TIMEOUT_S = 30.0
_READY_POLL_S = 0.1
_PROBE_TIMEOUT = httpx.Timeout(2.0)
# Where a terminal starts a line afresh: line ends, and the erase-line / cursor-to-column
# escapes lms's progress bar ends with (``clearLine`` + ``cursorTo(0)``) before its next message.
_LINE_END_RE = re.compile(r"\r\n|\r|\n|\x1b\[2K|\x1b\[\d*G")
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
_SIZE = r"(\d+(?:\.\d+)?)\s*([kKMGT]?B)\b"
_BYTES_RE = re.compile(_SIZE + r"\s*/\s*" + _SIZE)
_PERCENT_RE = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_UNIT_BYTES = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}  # lms prints SI sizes
_IDENTIFIER_RE = re.compile(r'identifier\s+"([^"]+)"')
_GET_KEY_RE = re.compile(r"lms load\s+(\S+)")
_VERSION_RE = re.compile(r"v?(\d+\.\d+\.\d+[\w.+-]*)")
_COMMIT_RE = re.compile(r"commit:?\s*([0-9a-f]{6,40})", re.IGNORECASE)
# chalk (lms's colours) honours these; ANSI left over is stripped anyway.
_CLI_ENV = {"NO_COLOR": "1", "FORCE_COLOR": "0"}


@dataclass(frozen=True)
class _Run:
    """One finished ``lms`` command."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return _clean("\n".join(part for part in (self.stdout, self.stderr) if part))

    def tail(self, n: int = 12) -> str:
        lines = [line for line in self.output.splitlines() if line.strip()]
        return "\n".join(lines[-n:])

    @property
    def command(self) -> str:
        return "lms " + " ".join(self.argv[1:3])


def _clean(text: str) -> str:
    return _ANSI_RE.sub("", text).replace("\r", "\n")


class LMStudioEngine(EngineAdapter):
    name = "lmstudio"
    description = "LM Studio: the lms CLI and LM Studio's local OpenAI-compatible server (:1234)"
    # LM Studio's OpenAI-compatible endpoints (its docs' supported payload parameters).
    request_rules = RequestRules(fields=frozenset({
        "tools", "response_format", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "image_url",
    }))

    # ------------------------------------------------------------------ where it is

    def _url(self, ctx: EngineContext) -> str:
        value = ctx.options.get("host") or os.environ.get("LMSTUDIO_HOST") or DEFAULT_HOST
        return host_url(str(value), default_port=_DEFAULT_PORT, default_host="localhost")

    def _lms(self, ctx: EngineContext) -> str | None:
        configured = ctx.options.get("lms")
        if configured:
            return str(configured) if os.access(str(configured), os.X_OK) else None
        found = shutil.which("lms")
        if found:
            return found
        bundled = Path.home() / ".lmstudio" / "bin" / "lms"
        return str(bundled) if bundled.is_file() and os.access(bundled, os.X_OK) else None

    def _require_lms(self, ctx: EngineContext) -> str:
        lms = self._lms(ctx)
        if lms is None:
            raise EngineUnavailable(
                "the LM Studio CLI `lms` is not on PATH (nor in ~/.lmstudio/bin)", hint=INSTALL_HINT
            )
        return lms

    async def _answers(self, ctx: EngineContext, url: str) -> bool:
        try:
            response = await ctx.http.get(url + "/v1/models", timeout=_PROBE_TIMEOUT)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    # ------------------------------------------------------------------ running lms

    async def _run(self, argv: list[str], *, timeout: float = _QUICK_TIMEOUT_S) -> _Run:
        try:
            with anyio.fail_after(timeout):
                result = await anyio.run_process(argv, check=False, env={**os.environ, **_CLI_ENV})
        except OSError as exc:
            raise EngineUnavailable(f"cannot run the LM Studio CLI {argv[0]}: {exc}", hint=INSTALL_HINT) from exc
        except TimeoutError:
            raise EngineError(
                f"`lms {' '.join(argv[1:3])}` did not finish within {timeout:g} s",
                hint=_NOT_RUNNING_HINT,
                code="lms_timeout",
            ) from None
        return _Run(argv, result.returncode or 0, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace"))

    async def _stream(self, argv: list[str], on_line: Any) -> _Run:
        """Run a long ``lms`` command, handing each output line (``\\r`` ends one too) to ``on_line``.

        No timeout of its own: every line is progress, which is what the prepare runner's
        stall timer watches.
        """
        try:
            process = await anyio.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, **_CLI_ENV},
            )
        except OSError as exc:
            raise EngineUnavailable(f"cannot run the LM Studio CLI {argv[0]}: {exc}", hint=INSTALL_HINT) from exc
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        seen: list[str] = []
        pending = ""

        def emit(raw: str) -> None:
            line = _clean(raw).strip()
            if line:
                seen.append(line)
                on_line(line)

        try:
            assert process.stdout is not None
            async for chunk in process.stdout:
                # Split the raw text first and clean whole lines: an escape sequence may be cut
                # across two reads (the progress bar's cursor save/restore), never across a line.
                *lines, pending = _LINE_END_RE.split(pending + decoder.decode(chunk))
                for raw in lines:
                    emit(raw)
            emit(pending + decoder.decode(b"", final=True))
            await process.wait()
        finally:
            if process.returncode is None:  # cancelled (job cancel, stall): no orphan lms
                process.kill()
                with anyio.CancelScope(shield=True):
                    await process.wait()
            await process.aclose()
        return _Run(argv, process.returncode or 0, "\n".join(seen), "")

    async def _version(self, lms: str) -> str | None:
        try:
            run = await self._run([lms, "version"], timeout=15.0)
        except EngineError:
            return None
        text = run.output
        found = _VERSION_RE.search(text)
        if found:
            return found.group(1)
        commit = _COMMIT_RE.search(text)
        return f"commit {commit.group(1)}" if commit else None

    # ----------------------------------------------------------------- the phases

    async def check(self, ctx: EngineContext) -> EngineCheck:
        url = self._url(ctx)
        server_up = await self._answers(ctx, url)
        lms = self._lms(ctx)
        version = await self._version(lms) if lms else None
        if server_up:
            return EngineCheck(available=True, version=version, details={"server": url, "lms": lms})
        if lms is not None:
            return EngineCheck(
                available=True,
                version=version,
                details={"lms": lms, "server": f"none answers at {url}; ltcai runs `lms server start`"},
            )
        return EngineCheck(
            available=False,
            reason=f"no LM Studio server answers at {url} and the `lms` CLI is not on PATH (nor in ~/.lmstudio/bin)",
            install_hint=INSTALL_HINT,
            installable=False,
            details={"server": url},
        )

    async def download(self, ctx: EngineContext, resolution: Any) -> DownloadResult | None:
        model = resolution.download_id
        lms = self._require_lms(ctx)
        listed = await self._run([lms, "ls", "--json"])
        if listed.returncode == 0:
            key = _downloaded_key(_json_list(listed.stdout), model)
            if key is not None:
                return DownloadResult(
                    path=key, downloaded=False, source="lmstudio", message=f"{model} is already in LM Studio ({key})"
                )
        progress = _GetProgress(ctx, model)
        ctx.progress(f"lms get {model}")
        run = await self._stream([lms, "get", model, "--yes"], progress)
        if run.returncode != 0:
            raise _get_error(model, run)
        output = run.output
        found = _GET_KEY_RE.findall(output)
        key = found[-1] if found else model
        if "already have this model" in output.lower():
            return DownloadResult(path=key, downloaded=False, source="lmstudio", message=f"{model} is already in LM Studio")
        progress.finish()
        return DownloadResult(
            path=key, downloaded=True, bytes=progress.total_bytes, source="lmstudio", message=f"downloaded {model} ({key})"
        )

    async def serve(self, ctx: EngineContext, resolution: Any, download: DownloadResult | None) -> ServedModel:
        url = self._url(ctx)
        if not await self._answers(ctx, url):
            lms = self._require_lms(ctx)
            port = urlsplit(url).port or _DEFAULT_PORT
            ctx.progress(f"starting LM Studio's server on port {port} (lms server start)")
            run = await self._run([lms, "server", "start", "--port", str(port)])
            if run.returncode != 0:
                raise ServerStartError(
                    f"`lms server start` failed (exit {run.returncode})",
                    hint=f"{_NOT_RUNNING_HINT}; lms said:\n{run.tail()}",
                )
            await self._wait_ready(ctx, url)
        return ServedModel(
            engine=self.name,
            model=resolution.resolved_model,
            base_url=url + "/v1",
            artifact_path=download.path if download is not None else None,
        )

    async def _wait_ready(self, ctx: EngineContext, url: str) -> None:
        # The server is LM Studio's, not our child: there is no exit to await, only a port.
        with anyio.move_on_after(_READY_TIMEOUT_S):
            while not await self._answers(ctx, url):
                await anyio.sleep(_READY_POLL_S)
            return
        raise ServerStartError(
            f"`lms server start` succeeded but nothing answers at {url}/v1/models after {_READY_TIMEOUT_S:g} s",
            hint=f"check the port in LM Studio's Developer tab matches {url} (set LMSTUDIO_HOST if not)",
        )

    async def load(self, ctx: EngineContext, served: ServedModel) -> LoadResult | None:
        lms = self._require_lms(ctx)
        url = _api_url(served)
        wanted = served.model  # the identifier ltcai asks for: the model's resolved id
        model = served.artifact_path or served.model  # LM Studio's key for it, when known
        before = await self._instances(ctx, lms, url)
        existing = _reusable(before, wanted, model)
        if existing is not None:
            served.model = existing
            return LoadResult(loaded=True, message=f"already loaded in LM Studio as {existing}", current_id=existing)
        argv = [lms, "load", model, "--identifier", wanted, "--yes"]
        for option, flag in (("ttl", "--ttl"), ("context_length", "--context-length"), ("gpu", "--gpu")):
            if ctx.options.get(option) is not None:
                argv += [flag, str(ctx.options[option])]
        ctx.progress(f"lms load {model} --identifier {wanted}")
        run = await self._stream(argv, lambda line: ctx.progress(f"lms load: {line}"))
        if run.returncode != 0:
            raise EngineError(
                f"`lms load {model}` failed (exit {run.returncode})",
                hint=f"lms said:\n{run.tail()}",
                code="model_not_found" if "model not found" in run.output.lower() else "model_load_failed",
            )
        said = _IDENTIFIER_RE.findall(run.output)
        after = await self._instances(ctx, lms, url)
        current = _new_instance(before, after, wanted, said[-1] if said else None)
        if current is None:
            raise EngineError(
                f"`lms load {model}` finished but LM Studio lists no instance for it",
                hint=f"loaded instances: {', '.join(i['identifier'] for i in after) or 'none'}",
                code="model_load_failed",
            )
        served.model = current
        return LoadResult(loaded=True, message=f"loaded {model} in LM Studio as {current}", current_id=current)

    async def _instances(self, ctx: EngineContext, lms: str, url: str) -> list[dict[str, str]]:
        """Loaded instances as ``{identifier, model}``: ``lms ps --json``, else the REST listing."""
        run = await self._run([lms, "ps", "--json"])
        listed = _json_list(run.stdout) if run.returncode == 0 else None
        if listed is not None:
            return [
                {"identifier": str(m["identifier"]), "model": str(m.get("modelKey") or m.get("path") or "")}
                for m in listed
                if isinstance(m, dict) and m.get("identifier")
            ]
        try:
            response = await ctx.http.get(url + "/api/v0/models", timeout=httpx.Timeout(10.0))
            response.raise_for_status()
            data = response.json().get("data") or []
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise EngineError(
                f"cannot list LM Studio's loaded models: `lms ps --json` failed ({run.tail(3)}) and "
                f"{url}/api/v0/models did not answer ({exc})",
                hint=_NOT_RUNNING_HINT,
                code="model_load_failed",
            ) from exc
        # The REST listing names loaded models by id only: which model an id holds is unknown.
        return [
            {"identifier": str(m["id"]), "model": ""}
            for m in data
            if isinstance(m, dict) and m.get("id") and m.get("state") == "loaded"
        ]

    async def unload(self, ctx: EngineContext, served: ServedModel) -> None:
        lms = self._require_lms(ctx)
        run = await self._run([lms, "unload", served.model])
        if run.returncode == 0:
            return
        lowered = run.output.lower()
        if "cannot find" in lowered or "not found" in lowered or "no model" in lowered:
            return  # already gone (a TTL expired, or the user unloaded it)
        raise EngineError(
            f"`lms unload {served.model}` failed (exit {run.returncode})",
            hint=f"lms said:\n{run.tail()}",
            code="unload_failed",
        )


class _GetProgress:
    """``lms get`` output lines to progress: bytes when sizes show, else percent. Never goes back."""

    def __init__(self, ctx: EngineContext, model: str) -> None:
        self.ctx = ctx
        self.model = model
        self.done = 0.0
        self.total_bytes: int | None = None
        self.unit: str | None = None

    def __call__(self, line: str) -> None:
        sizes = _BYTES_RE.search(line)
        if sizes:
            done = float(sizes.group(1)) * _UNIT_BYTES[sizes.group(2).upper()]
            total = float(sizes.group(3)) * _UNIT_BYTES[sizes.group(4).upper()]
            self._report(done, total, "B")
            return
        percent = _PERCENT_RE.search(line)
        if percent and self.unit != "B":
            self._report(float(percent.group(1)), 100.0, "%")
            return
        self.ctx.progress(f"lms get {self.model}: {line[:200]}")

    def _report(self, done: float, total: float, unit: str) -> None:
        if unit != self.unit:
            self.unit, self.done = unit, 0.0
        if unit == "B":
            self.total_bytes = int(total)
        self.done = min(max(self.done, done), total)
        self.ctx.progress(f"downloading {self.model}", done=self.done, total=total, unit=unit)

    def finish(self) -> None:
        if self.unit == "B" and self.total_bytes:
            self.ctx.progress(f"downloaded {self.model}", done=self.total_bytes, total=self.total_bytes, unit="B")
        elif self.unit == "%":
            self.ctx.progress(f"downloaded {self.model}", done=100.0, total=100.0, unit="%")


def _api_url(served: ServedModel) -> str:
    return served.base_url.removesuffix("/").removesuffix("/v1")


def _json_list(text: str) -> list[Any] | None:
    """The JSON array an ``lms … --json`` command printed (log lines around it tolerated)."""
    candidates = [text.strip()] + [line.strip() for line in text.splitlines() if line.strip().startswith("[")]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, list):
            return value
    return None


def _downloaded_key(models: list[Any] | None, wanted: str) -> str | None:
    """The ``modelKey`` of a downloaded model that is ``wanted`` (by key, path or repo)."""
    target = wanted.lower().removeprefix("https://huggingface.co/").strip("/")
    for model in models or ():
        if not isinstance(model, dict):
            continue
        key = str(model.get("modelKey") or "")
        path = str(model.get("path") or "").lower()
        if target in (key.lower(), path) or path.startswith(target + "/"):
            return key or str(model.get("path"))
    return None


def _reusable(instances: list[dict[str, str]], wanted: str, model: str) -> str | None:
    """An instance of ``model`` loaded earlier: named ``wanted``, or ``wanted:<n>`` by LM Studio.

    The name alone is not enough: another model may hold it (loaded by hand in LM Studio),
    and chatting with that one would be a wrong answer, not an error. An instance whose
    model is unknown (the REST listing names only the identifier) goes by its name.
    """
    pattern = re.compile(re.escape(wanted) + r"(:\d+)?", re.IGNORECASE)
    for instance in instances:
        if pattern.fullmatch(instance["identifier"]) and _same_model(instance["model"], model):
            return instance["identifier"]
    return None


def _same_model(listed: str, model: str) -> bool:
    """Whether an instance's ``modelKey`` (or path) is ``model``, as ``lms load`` matched it."""
    if not listed:
        return True
    listed, model = listed.lower(), model.lower().removeprefix("https://huggingface.co/").strip("/")
    return listed == model or listed.startswith(model + "/") or model in listed.split("/")


def _new_instance(
    before: list[dict[str, str]], after: list[dict[str, str]], wanted: str, said: str | None
) -> str | None:
    """Which identifier LM Studio gave the instance just loaded.

    What ``lms load`` printed, confirmed by the listing; else the one new instance named
    after ``wanted``; else the only new instance; else what it printed.
    """
    known = {i["identifier"] for i in before}
    listed = [i["identifier"] for i in after]
    new = [i for i in listed if i not in known]
    if said is not None and said in listed:
        return said
    named = [i for i in new if i.lower() == wanted.lower() or i.lower().startswith(wanted.lower() + ":")]
    if named:
        return named[0]
    if len(new) == 1:
        return new[0]
    return said


def _get_error(model: str, run: _Run) -> DownloadError:
    lowered = run.output.lower()
    tail = run.tail()
    if "no models found" in lowered or "not found" in lowered or "does not exist" in lowered:
        return DownloadError(f"LM Studio found no model {model} to download", hint=f"{_CATALOG_HINT}\nlms said:\n{tail}", code="model_not_found")
    if any(word in lowered for word in ("network", "socket", "econnreset", "etimedout", "enotfound", "fetch failed")):
        return DownloadError(
            f"`lms get {model}` lost the network (exit {run.returncode})",
            hint=f"check the network and prepare again; lms said:\n{tail}",
            code="network_error",
        )
    return DownloadError(f"`lms get {model}` failed (exit {run.returncode})", hint=f"lms said:\n{tail}")


@hookimpl
def ltcai_register_engines(register: Any) -> None:
    register(LMStudioEngine())
