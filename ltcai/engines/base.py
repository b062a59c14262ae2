"""The engine adapter: what a plugin hands the daemon to drive one engine.

An adapter is a plain object with a ``name`` and async phase methods. The daemon's
prepare runner calls them in order, each at most once per prepare:

    check → install → download → serve → load → (smoke test via chat) → ready
    chat / unload later, for as long as the model is served

``serve`` is the one required phase: an adapter that cannot serve a model has nothing to
offer, and the base class raises ``NotImplementedError`` for it. Every other phase is
optional: the base class implements "nothing to do here", and the runner passes the state
through with a "skipped" message. Adapters report long work through
``ctx.progress(...)``; every report also feeds the stall timer, so a download that keeps
moving never times out while one that stops does.

Adapters raise :mod:`ltcai.errors` errors (``EngineUnavailable``, ``DownloadError``,
``ServerStartError``, ``ChatError``) with a message a user can act on and a hint; any
other exception is a bug and is reported as ``internal_error`` with the engine named.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import httpx

    from ..compat import Resolution
    from ..runtime.process import ProcessHandle, Spawner

__all__ = [
    "ChatChunk",
    "ChatRequest",
    "ChatResult",
    "DownloadResult",
    "EngineAdapter",
    "EngineCheck",
    "EngineContext",
    "InstallResult",
    "LoadResult",
    "ProgressFn",
    "RequestRules",
    "ServedModel",
]


class ProgressFn(Protocol):
    def __call__(
        self,
        message: str,
        *,
        done: float | None = None,
        total: float | None = None,
        unit: str | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class EngineCheck:
    """Whether an engine can be used on this host, and if not, why and how to fix it."""

    available: bool
    version: str | None = None
    reason: str | None = None  # why not available
    install_hint: str | None = None  # how to install (command or URL)
    installable: bool = False  # whether ltcai can install it itself
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "version": self.version,
            "reason": self.reason,
            "install_hint": self.install_hint,
            "installable": self.installable,
            "details": self.details,
        }


@dataclass(frozen=True)
class InstallResult:
    installed: bool
    message: str
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"installed": self.installed, "message": self.message, "version": self.version}


@dataclass(frozen=True)
class DownloadResult:
    """Where the weights are. ``downloaded`` is False when they were already there."""

    path: str | None
    downloaded: bool
    bytes: int | None = None
    sha256: str | None = None
    source: str | None = None  # "bundled", "hf_cache", "hf", "local", "registry", …
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "downloaded": self.downloaded,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "source": self.source,
            "message": self.message,
        }


@dataclass
class ServedModel:
    """A model being served: where its OpenAI-compatible API answers, and by whom."""

    engine: str
    model: str  # the id to send in requests
    base_url: str  # ``http://127.0.0.1:PORT/v1``
    process: ProcessHandle | None = None  # None when the server is not ours (Ollama, remote)
    headers: dict[str, str] = field(default_factory=dict)  # e.g. Authorization; never logged
    artifact_path: str | None = None
    slots: int = 1  # requests the server answers at once (llama-server -np); more queue in ltcai
    context: int | None = None  # tokens one request can use, where the adapter set it at start


@dataclass(frozen=True)
class LoadResult:
    loaded: bool
    message: str
    current_id: str | None = None  # the id the engine itself gave the model (LM Studio)


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, Any]]
    params: dict[str, Any]  # temperature, top_p, max_tokens, stop, seed…


@dataclass(frozen=True)
class ChatChunk:
    content: str
    finish_reason: str | None = None
    # Passed through as the engine sent them, never post-processed:
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI's streamed tool_call deltas
    reasoning: str = ""  # the engine's own ``reasoning_content``
    logprobs: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None  # the last event, when stream_options asked for it


@dataclass(frozen=True)
class RequestRules:
    """What an engine's server takes of an OpenAI chat request; the daemon refuses the rest.

    ``fields``: the request fields beyond messages and sampling that it takes (names from
    ``ltcai.daemon.validation.ENGINE_FIELDS``: ``tools``, ``response_format``, ``seed``…,
    plus ``image_url`` for image content parts). A request carrying any other gets a 400
    naming the field and the engine. None: whatever OpenAI's API takes.
    ``profile_sampling``: whether the profile's own defaults (temperature, top_p,
    max_tokens, stops from the family and model layers) are sent. Hosted models know
    their own and some refuse what the user did not ask for: False sends only what the
    user set (the request, or the user layer of the profile).
    ``max_stop``: how many stop sequences the server takes; the rest are ltcai's to
    enforce on the output. ``max_tokens_name``: ``max_completion_tokens`` for servers
    that refuse the older ``max_tokens``.
    ``embeddings``: whether the server answers ``POST /embeddings`` (whether a given
    model embeds is the server's to say); ``dimensions`` is taken where ``fields`` has it.
    ``template_tools``: the server renders tools only through the model's chat template
    (llama-server ``--jinja``): for a model whose template has none, ltcai states the
    tools in the prompt and constrains the call itself (``daemon.tool_emulation``).
    """

    fields: frozenset[str] | None = None
    profile_sampling: bool = True
    max_stop: int | None = None
    max_tokens_name: str = "max_tokens"
    embeddings: bool = True
    template_tools: bool = False


@dataclass(frozen=True)
class ChatResult:
    content: str
    finish_reason: str | None
    usage: dict[str, int] | None = None


@dataclass
class EngineContext:
    """What the daemon lends an adapter for one phase: no globals, everything passed in."""

    options: dict[str, Any]  # this engine's section of the user's settings
    models_dir: Path
    engines_dir: Path
    logs_dir: Path
    # Starts the engine's own processes; the daemon records them and stops them at exit.
    spawn: Spawner
    http: httpx.AsyncClient
    progress: ProgressFn
    # Blocking work (hashing, copying) goes through this to stay off the event loop.
    run_sync: Callable[..., Awaitable[Any]]
    # The model's compat profile, once known (from DOWNLOADING on): serve may need its
    # template (e.g. a chat format for a GGUF that carries none).
    profile: Any | None = None


class EngineAdapter:
    """Base class: override ``serve`` (required) and the optional phases the engine has.

    ``name`` is the canonical engine name (``llamacpp``, ``ollama``…), ``description`` one
    line for ``ltcai engines``.
    """

    name: str = ""
    description: str = ""
    request_rules: RequestRules = RequestRules()

    async def check(self, ctx: EngineContext) -> EngineCheck:
        """Is the engine usable here? Must be quick and side-effect free."""
        return EngineCheck(available=True)

    async def install(self, ctx: EngineContext, check: EngineCheck) -> InstallResult | None:
        """Install the engine when ``check`` said it is missing. None: nothing to do."""
        return None

    async def download(self, ctx: EngineContext, resolution: Resolution) -> DownloadResult | None:
        """Fetch the weights. Partial data never sits at the final path. None: nothing to do."""
        return None

    async def serve(
        self, ctx: EngineContext, resolution: Resolution, download: DownloadResult | None
    ) -> ServedModel:
        """Start (or find) the server for this model and return once it answers. Required."""
        raise NotImplementedError(f"engine {self.name} cannot serve models")

    async def kv_sequences(self, ctx: EngineContext) -> int:
        """How many contexts the server will hold a KV cache for (its parallel slots), so
        the daemon's memory estimate counts them before the server starts. Default 1."""
        return 1

    async def load(self, ctx: EngineContext, served: ServedModel) -> LoadResult | None:
        """Load / warm the model on the running server. None: loaded when served."""
        return None

    async def unload(self, ctx: EngineContext, served: ServedModel) -> None:
        """Free the model. The default stops the server process if ltcai started it."""
        if served.process is not None:
            await served.process.stop()
