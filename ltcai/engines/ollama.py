"""The Ollama engine: the user's Ollama server (or one ltcai starts), spoken to over its API.

- check: a server answering ``GET /api/version`` at ``OLLAMA_HOST`` (default
  ``127.0.0.1:11434``; ``host:port`` without a scheme works, as it does for Ollama), else
  the ``ollama`` binary on PATH; Ollama is never installed silently — the check says how;
- download: ``POST /api/pull``, its NDJSON layer progress summed into byte progress;
  skipped when ``POST /api/show`` finds the model already in Ollama's store;
- serve: the server that answers; if none does, ``ollama serve`` on a free loopback port,
  supervised and shared by every Ollama model until the daemon stops;
- load: ``POST /api/generate`` with an empty prompt and ``keep_alive``, confirmed by
  ``GET /api/ps``, whose name for the model becomes the current id; unload:
  ``keep_alive: 0``;
- chat: Ollama's OpenAI-compatible ``/v1/chat/completions`` (the shared client).

Context: left to itself, Ollama runs a model with its default context (2048–4096 tokens)
and silently drops the start of longer conversations (ollama#4447, #6286). So the load
asks for ``options.num_ctx`` = ``[engines.ollama] n_ctx`` (default ``DEFAULT_N_CTX``),
capped at the model's trained context (see :mod:`.ollama_context`), and an ``ollama
serve`` that ltcai starts gets the same as ``OLLAMA_CONTEXT_LENGTH``: its OpenAI route,
which takes no ``num_ctx``, then runs at that context too. A user's own server keeps its
own default for ``/v1`` requests (and reloads the model at it); the context probe reports
what ``/api/ps`` says Ollama really uses, so that shows.

Model ids (``gpt-oss:20b``, ``llama3.2:1b``, ``hf.co/<user>/<repo>:Q4_K_M``) go to Ollama
untouched. The server is never ours to stop per model: ``ServedModel.process`` is None
even when ltcai started ``ollama serve`` (the supervisor stops it with the daemon), so a
failed prepare or an unload never takes down a server other models use.

Options (``[engines.ollama]``): ``host`` (wins over ``OLLAMA_HOST``), ``binary`` (the
``ollama`` executable), ``keep_alive`` (how long a loaded model stays, default ``30m``),
``n_ctx`` (the context to ask for, default ``DEFAULT_N_CTX``).
API: https://github.com/ollama/ollama/blob/main/docs/api.md
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import httpx
import structlog

from ..errors import DownloadError, EngineError, EngineUnavailable, ServerStartError
from ..plugins import hookimpl
from .base import DownloadResult, EngineAdapter, EngineCheck, EngineContext, LoadResult, RequestRules, ServedModel
from .local_server import PortTaken, free_port, start_and_wait_ready
from .ollama_context import DEFAULT_N_CTX, context_for, find_running, n_ctx
from .resumable import format_bytes

if TYPE_CHECKING:
    from ..runtime.process import ProcessHandle

__all__ = ["DEFAULT_HOST", "DEFAULT_N_CTX", "INSTALL_HINT", "OllamaEngine", "host_url"]

log = structlog.get_logger(__name__)

DEFAULT_HOST = "127.0.0.1:11434"
_DEFAULT_PORT = 11434
INSTALL_HINT = (
    "install Ollama from https://ollama.com/download "
    "(on Linux: curl -fsSL https://ollama.com/install.sh | sh), "
    "then start it with `ollama serve` or let ltcai start it"
)
_LIBRARY_HINT = (
    "check the name and tag at https://ollama.com/library "
    "(a Hugging Face GGUF is hf.co/<user>/<repo>:<quantization>)"
)
_RESUME_HINT = (
    "check the network; Ollama keeps the layers it already has, so `ltcai prepare` "
    "again resumes the pull where it stopped"
)
_PROBE_TIMEOUT = httpx.Timeout(2.0)
_API_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# A pull may be silent for minutes while Ollama verifies a big layer, and a load while it
# reads one: no read timeout there. The prepare runner's stall timer bounds both.
_LONG_TIMEOUT = httpx.Timeout(30.0, connect=5.0, read=None)
_VERSION_TIMEOUT_S = 10.0
_PORT_RETRIES = 3
_VERSION_RE = re.compile(r"\d+\.\d+\.\d+[\w.+-]*")
# Errors Ollama streams when the registry cannot be reached (Go's net/http wording).
_NETWORK_WORDS = (
    "no such host", "connection refused", "connection reset", "i/o timeout", "timeout",
    "tls handshake", "network is unreachable", "unexpected eof", "max retries exceeded",
)  # fmt: skip


def host_url(value: str | None, *, default_port: int, default_host: str = "127.0.0.1") -> str:
    """``OLLAMA_HOST``-style text to a base URL a client can reach.

    Follows Ollama's own reading (``envconfig.Host``): no scheme means ``http`` and the
    engine's port; an explicit ``http://``/``https://`` without a port means 80/443; a
    bare host keeps the default port. A bind-all address (``0.0.0.0``, ``::``) is what a
    server listens on, not where a client connects: it becomes loopback.
    """
    text = (value or "").strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest, port_default = "http", text, default_port
    else:
        scheme = scheme.lower()
        port_default = 443 if scheme == "https" else 80
    hostport, _, path = rest.partition("/")
    parts = urlsplit("//" + hostport)
    try:
        port = parts.port or port_default
    except ValueError:  # not a number, or out of range: Ollama falls back the same way
        port = port_default
    host = parts.hostname or default_host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    if ":" in host:
        host = f"[{host}]"
    suffix = "/" + path.rstrip("/") if path.strip("/") else ""
    return f"{scheme}://{host}:{port}{suffix}"


@dataclass
class _Server:
    url: str  # without /v1
    version: str | None
    process: ProcessHandle | None = None  # set when ltcai started it


class OllamaEngine(EngineAdapter):
    name = "ollama"
    description = "Ollama: its own server (ollama serve) and model store; pull, load with keep_alive"
    # Ollama's docs/api/openai-compatibility: no tool_choice, logit_bias, user or n.
    request_rules = RequestRules(fields=frozenset({
        "tools", "response_format", "seed", "presence_penalty", "frequency_penalty", "reasoning_effort", "image_url",
    }))

    def __init__(self) -> None:
        self._own: _Server | None = None  # the `ollama serve` ltcai started, if any
        self._lock: anyio.Lock | None = None

    # ------------------------------------------------------------------ where it is

    def _configured_url(self, ctx: EngineContext) -> str:
        value = ctx.options.get("host") or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
        return host_url(str(value), default_port=_DEFAULT_PORT)

    def _binary(self, ctx: EngineContext) -> str | None:
        configured = ctx.options.get("binary")
        if configured:
            return str(configured) if os.access(str(configured), os.X_OK) else None
        return shutil.which("ollama")

    async def _probe(self, ctx: EngineContext, url: str) -> str | None:
        """The version of the server at ``url``, or None when nothing Ollama-like answers."""
        try:
            response = await ctx.http.get(url + "/api/version", timeout=_PROBE_TIMEOUT)
            if response.status_code != 200:
                return None
            version = response.json().get("version")
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return str(version) if version else "unknown"

    async def _binary_version(self, binary: str) -> str | None:
        # Without a server `ollama --version` still prints "client version is X".
        try:
            with anyio.move_on_after(_VERSION_TIMEOUT_S):
                result = await anyio.run_process([binary, "--version"], check=False)
                found = _VERSION_RE.findall(result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace"))
                return found[-1] if found else None
        except OSError:
            return None
        return None

    async def check(self, ctx: EngineContext) -> EngineCheck:
        url = self._configured_url(ctx)
        version = await self._probe(ctx, url)
        if version is not None:
            return EngineCheck(available=True, version=version, details={"server": url, "started_by_ltcai": False})
        own = self._own
        if own is not None and own.process is not None and own.process.running:
            return EngineCheck(
                available=True, version=own.version, details={"server": own.url, "started_by_ltcai": True}
            )
        binary = self._binary(ctx)
        if binary is not None:
            return EngineCheck(
                available=True,
                version=await self._binary_version(binary),
                details={
                    "binary": binary,
                    "server": f"none answers at {url}; ltcai starts `ollama serve` on a free loopback port",
                },
            )
        return EngineCheck(
            available=False,
            reason=f"no Ollama server answers at {url} (OLLAMA_HOST) and the `ollama` binary is not on PATH",
            install_hint=INSTALL_HINT,
            installable=False,
            details={"server": url},
        )

    async def _server(self, ctx: EngineContext) -> _Server:
        """The server to talk to: the user's if one answers, else ours (started once)."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            url = self._configured_url(ctx)
            version = await self._probe(ctx, url)
            if version is not None:
                return _Server(url, version)
            own = self._own
            if own is not None and own.process is not None and own.process.running:
                if await self._probe(ctx, own.url) is not None:
                    return own
                await own.process.stop()  # alive but deaf: replace it
            self._own = None
            binary = self._binary(ctx)
            if binary is None:
                raise EngineUnavailable(
                    f"no Ollama server answers at {url} and the `ollama` binary is not on PATH",
                    hint=INSTALL_HINT,
                )
            self._own = await self._start(ctx, binary)
            return self._own

    async def _start(self, ctx: EngineContext, binary: str) -> _Server:
        for _attempt in range(_PORT_RETRIES):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            # Its OpenAI route takes no num_ctx: the server's default is what /v1 chats get.
            env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_CONTEXT_LENGTH": str(n_ctx(ctx.options))}
            try:
                process = await start_and_wait_ready(
                    ctx, self.name, [binary, "serve"], url + "/api/version", env=env, what="Ollama"
                )
            except PortTaken:
                ctx.progress("port taken by another program; trying another")
                continue
            log.info("started ollama serve", url=url, pid=process.pid)
            return _Server(url, await self._probe(ctx, url), process)
        raise ServerStartError(f"`ollama serve` found no free port in {_PORT_RETRIES} tries")

    # ----------------------------------------------------------------- the phases

    async def download(self, ctx: EngineContext, resolution: Any) -> DownloadResult | None:
        name = resolution.download_id
        server = await self._server(ctx)
        if await self._present(ctx, server.url, name):
            return DownloadResult(
                path=name, downloaded=False, source="ollama", message=f"{name} is already in Ollama's model store"
            )
        total = await self._pull(ctx, server.url, name)
        return DownloadResult(
            path=name,
            downloaded=True,
            bytes=total or None,
            source="ollama",
            message=f"pulled {name}" + (f" ({format_bytes(total)})" if total else ""),
        )

    async def _present(self, ctx: EngineContext, url: str, name: str) -> bool:
        try:
            response = await ctx.http.post(url + "/api/show", json={"model": name}, timeout=_API_TIMEOUT)
        except httpx.HTTPError as exc:
            raise DownloadError(
                f"the Ollama server at {url} stopped answering ({type(exc).__name__}: {exc})",
                hint="check that `ollama serve` is still running",
                code="network_error",
            ) from exc
        # 404: not pulled yet. Anything else unexpected (a bad name…) is left to the pull,
        # whose error names the problem.
        return response.status_code == 200

    async def _pull(self, ctx: EngineContext, url: str, name: str) -> int:
        """Pull ``name``; returns the bytes of all its layers. Byte progress never goes back."""
        layers: dict[str, tuple[int, int]] = {}  # digest -> (completed, total)
        done_reported = 0
        total = 0
        succeeded = False
        ctx.progress(f"pulling {name} from the Ollama registry")
        try:
            async with ctx.http.stream(
                "POST", url + "/api/pull", json={"model": name, "stream": True}, timeout=_LONG_TIMEOUT
            ) as response:
                if response.status_code >= 400:
                    body = (await response.aread()).decode(errors="replace")
                    raise _pull_error(name, _error_text(body) or f"HTTP {response.status_code}")
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError:
                        raise DownloadError(
                            f"Ollama sent a line that is not JSON while pulling {name}: {line[:200]!r}",
                            code="engine_bad_answer",
                        ) from None
                    if not isinstance(event, dict):
                        continue
                    if event.get("error"):
                        raise _pull_error(name, str(event["error"]))
                    status = str(event.get("status") or "")
                    digest = event.get("digest")
                    if digest and event.get("total"):
                        layers[str(digest)] = (int(event.get("completed") or 0), int(event["total"]))
                        total = sum(t for _, t in layers.values())
                        done_reported = min(max(done_reported, sum(c for c, _ in layers.values())), total)
                        ctx.progress(
                            f"pulling {name}: layer {_short(str(digest))}, "
                            f"{format_bytes(done_reported)} of {format_bytes(total)}",
                            done=done_reported,
                            total=total,
                            unit="B",
                        )
                    elif status == "success":
                        succeeded = True
                    elif status:
                        ctx.progress(f"pulling {name}: {status}")
        except httpx.HTTPError as exc:
            raise DownloadError(
                f"the connection to Ollama at {url} dropped while pulling {name} ({type(exc).__name__}: {exc})",
                hint=_RESUME_HINT,
                code="network_error",
            ) from exc
        if not succeeded:
            raise DownloadError(
                f"the pull of {name} ended before Ollama reported success", hint=_RESUME_HINT, code="network_error"
            )
        if total:
            ctx.progress(f"pulled {name}", done=total, total=total, unit="B")
        return total

    async def serve(self, ctx: EngineContext, resolution: Any, download: DownloadResult | None) -> ServedModel:
        server = await self._server(ctx)
        return ServedModel(engine=self.name, model=resolution.resolved_model, base_url=server.url + "/v1")

    async def load(self, ctx: EngineContext, served: ServedModel) -> LoadResult | None:
        url = _api_url(served)
        keep_alive = ctx.options.get("keep_alive", "30m")
        num_ctx = await context_for(ctx, url, served.model, _API_TIMEOUT)
        ctx.progress(f"loading {served.model} into memory (keep_alive {keep_alive}, context {num_ctx})")
        payload = {"model": served.model, "prompt": "", "keep_alive": keep_alive, "stream": False,
                   "options": {"num_ctx": num_ctx}}  # fmt: skip
        try:
            response = await ctx.http.post(url + "/api/generate", json=payload, timeout=_LONG_TIMEOUT)
        except httpx.HTTPError as exc:
            raise _load_error(f"the Ollama server at {url} stopped answering while loading {served.model} ({exc})") from exc
        if response.status_code == 404:
            raise EngineError(
                f"Ollama has no model {served.model}: {_error_text(response.text)}",
                hint="prepare it again so it is pulled first",
                code="model_not_found",
            )
        if response.status_code >= 400:
            raise _load_error(
                f"Ollama could not load {served.model}: HTTP {response.status_code} {_error_text(response.text)}"
            )
        running = await self._running(ctx, url)
        entry = find_running(running, served.model)
        if entry is None:
            listed = ", ".join(str(m.get("name")) for m in running) or "nothing"
            raise _load_error(f"Ollama answered the load of {served.model} but /api/ps lists {listed}")
        current = str(entry.get("name") or entry.get("model"))
        served.model = current  # Ollama's own spelling (``llama3.2`` → ``llama3.2:latest``)
        served.context = num_ctx  # asked; the context probe reads what /api/ps says is used
        return LoadResult(
            loaded=True, message=f"{current} is loaded (keep_alive {keep_alive}, context {num_ctx})", current_id=current
        )

    async def _running(self, ctx: EngineContext, url: str) -> list[dict[str, Any]]:
        try:
            response = await ctx.http.get(url + "/api/ps", timeout=_API_TIMEOUT)
            response.raise_for_status()
            models = response.json().get("models") or []
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise _load_error(f"Ollama's /api/ps did not answer: {exc}") from exc
        return [m for m in models if isinstance(m, dict)]

    async def unload(self, ctx: EngineContext, served: ServedModel) -> None:
        url = _api_url(served)
        payload = {"model": served.model, "keep_alive": 0, "stream": False}
        try:
            response = await ctx.http.post(url + "/api/generate", json=payload, timeout=_API_TIMEOUT)
        except httpx.TransportError as exc:
            # No server, no model in memory: there is nothing left to free.
            log.warning("ollama unreachable at unload", url=url, model=served.model, error=str(exc))
            return
        if response.status_code == 404:
            return
        if response.status_code >= 400:
            raise EngineError(
                f"Ollama could not unload {served.model}: HTTP {response.status_code} {_error_text(response.text)}",
                code="unload_failed",
            )


def _api_url(served: ServedModel) -> str:
    return served.base_url.removesuffix("/").removesuffix("/v1")


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def _error_text(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:300]
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return body.strip()[:300]


def _pull_error(name: str, text: str) -> DownloadError:
    lowered = text.lower()
    if "invalid model name" in lowered:
        return DownloadError(f"Ollama refuses the name {name!r}: {text}", hint=_LIBRARY_HINT, code="invalid_reference")
    if "file does not exist" in lowered or "not found" in lowered:
        return DownloadError(f"Ollama has no model {name} to pull: {text}", hint=_LIBRARY_HINT, code="model_not_found")
    if any(word in lowered for word in _NETWORK_WORDS):
        return DownloadError(f"pulling {name} failed: {text}", hint=_RESUME_HINT, code="network_error")
    return DownloadError(f"pulling {name} failed: {text}", hint="see Ollama's log (`journalctl -u ollama` or ~/.ollama/logs)")


def _load_error(message: str) -> EngineError:
    return EngineError(message, hint="see Ollama's log (`journalctl -u ollama` or ~/.ollama/logs)", code="model_load_failed")


@hookimpl
def ltcai_register_engines(register: Any) -> None:
    register(OllamaEngine())
