"""Remote OpenAI-compatible endpoints: hosted providers, or any server that speaks the API.

One adapter per known provider (``openai``, ``anthropic``, ``openrouter``, ``groq``,
``together``). Nothing to install or download and no process to start: prepare is

- check: a key is configured — or the endpoint is on loopback, where none is needed;
- serve: ``GET <base_url>/models`` answers (401/403 → ``auth_failed``, no answer →
  ``unreachable``); the served model carries the ``Authorization`` header;
- load: the model is in that listing (else ``model_not_found``, naming a few that are);

then the runner's smoke test, and chat through the same OpenAI-compatible client as
every local engine.

Options (``[engines.<provider>]``): ``base_url`` (points a provider elsewhere: ``openai``
at a vLLM cluster or a local llama.cpp server), ``api_key``, or ``api_key_env`` (the
variable holding the key). Otherwise the key comes from ``<PROVIDER>_API_KEY``
(``OPENAI_API_KEY``…) and, for ``openai``, the base URL from ``OPENAI_BASE_URL``.

The key never reaches a log line, an error, a report or a repr: errors name where the
key came from (the variable or the config key), never its value, and the served model's
headers render redacted.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import structlog

from ..errors import EngineError, EngineUnavailable
from ..plugins import hookimpl
from .base import EngineAdapter, EngineCheck, EngineContext, LoadResult, RequestRules, ServedModel

__all__ = ["PROVIDERS", "Provider", "RemoteOpenAIEngine", "SecretHeaders"]

log = structlog.get_logger(__name__)

_TIMEOUT_S = 15.0
_SHOWN_IDS = 5


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str
    key_env: str
    keys_url: str  # where a user gets a key
    base_url_env: str | None = None
    # Headers a provider wants besides ``Authorization: Bearer`` (Anthropic's own
    # ``/v1/models`` authenticates with ``x-api-key`` and a version).
    key_header: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()
    # What the provider's chat API takes (its documented limits); hosted models get only
    # the sampling the user set, never the profile's family defaults.
    rules: RequestRules = RequestRules(profile_sampling=False)


PROVIDERS: tuple[Provider, ...] = (
    Provider(
        "openai",
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
        "https://platform.openai.com/api-keys",
        "OPENAI_BASE_URL",
        # At most 4 stop sequences; reasoning models refuse max_tokens (and any
        # temperature but the default), so only what the user set is sent.
        rules=RequestRules(profile_sampling=False, max_stop=4, max_tokens_name="max_completion_tokens"),
    ),
    Provider(
        "anthropic",
        "https://api.anthropic.com/v1",  # its OpenAI SDK compatibility layer
        "ANTHROPIC_API_KEY",
        "https://console.anthropic.com/settings/keys",
        key_header="x-api-key",
        extra_headers=(("anthropic-version", "2023-06-01"),),
        # Its OpenAI compatibility layer ignores logprobs, response_format, penalties,
        # logit_bias, seed and n: refused here rather than silently lost there.
        rules=RequestRules(
            fields=frozenset({"tools", "tool_choice", "parallel_tool_calls", "user", "metadata", "image_url"}),
            profile_sampling=False,
            embeddings=False,  # Anthropic has no embeddings API
        ),
    ),
    Provider("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", "https://openrouter.ai/keys"),
    Provider(
        "groq",
        "https://api.groq.com/openai/v1",
        "GROQ_API_KEY",
        "https://console.groq.com/keys",
        # Groq's OpenAI compatibility: no logprobs, logit_bias or n; at most 4 stops.
        rules=RequestRules(
            fields=frozenset({
                "tools", "tool_choice", "parallel_tool_calls", "response_format", "seed", "user",
                "presence_penalty", "frequency_penalty", "image_url", "reasoning_effort", "service_tier",
            }),
            profile_sampling=False,
            max_stop=4,
        ),
    ),
    Provider("together", "https://api.together.xyz/v1", "TOGETHER_API_KEY", "https://api.together.xyz/settings/api-keys"),
)


class SecretHeaders(dict[str, str]):
    """Request headers whose values never show in a repr (so neither in ServedModel's)."""

    def __repr__(self) -> str:
        return repr({name: "<redacted>" for name in self})

    __str__ = __repr__


@dataclass(frozen=True)
class _Endpoint:
    base_url: str
    key: str | None
    key_source: str  # "OPENAI_API_KEY", "[engines.openai] api_key", … — never the key
    loopback: bool

    def __repr__(self) -> str:  # the dataclass default would show the key
        return f"_Endpoint(base_url={self.base_url!r}, key_source={self.key_source!r})"

    @property
    def display_url(self) -> str:
        """The base URL without any ``user:password@`` part."""
        parts = urlsplit(self.base_url)
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=netloc))


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RemoteOpenAIEngine(EngineAdapter):
    """A hosted OpenAI-compatible provider, or whatever ``base_url`` points it at."""

    def __init__(self, provider: Provider, environ: Mapping[str, str] | None = None) -> None:
        self.provider = provider
        self.name = provider.name
        self.description = f"{provider.name} (remote OpenAI-compatible API at {provider.base_url})"
        self.request_rules = provider.rules
        self._environ = environ  # None: the process environment, read at each use

    def _env(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def _endpoint(self, ctx: EngineContext) -> _Endpoint:
        env, options, name = self._env(), ctx.options, self.provider.name
        base_url = str(
            options.get("base_url")
            or (env.get(self.provider.base_url_env) if self.provider.base_url_env else None)
            or self.provider.base_url
        ).rstrip("/")
        if options.get("api_key"):
            key, source = str(options["api_key"]), f"[engines.{name}] api_key"
        else:
            var = str(options.get("api_key_env") or self.provider.key_env)
            key, source = env.get(var) or None, var
        return _Endpoint(base_url, key, source, _is_loopback(base_url))

    def _headers(self, endpoint: _Endpoint) -> SecretHeaders:
        headers = SecretHeaders()
        if endpoint.key:
            headers["Authorization"] = f"Bearer {endpoint.key}"
            if self.provider.key_header:
                headers[self.provider.key_header] = endpoint.key
        headers.update(self.provider.extra_headers)
        return headers

    def _key_hint(self, endpoint: _Endpoint) -> str:
        name = self.provider.name
        if endpoint.key_source.startswith("["):
            return f"check {endpoint.key_source} in the config: it must hold a valid {name} key"
        return (
            f"set {endpoint.key_source} to a valid {name} key (get one at {self.provider.keys_url}), "
            f"or set [engines.{name}] api_key / api_key_env in the config"
        )

    async def check(self, ctx: EngineContext) -> EngineCheck:
        endpoint = self._endpoint(ctx)
        scheme = urlsplit(endpoint.base_url).scheme
        details: dict[str, Any] = {"base_url": endpoint.display_url}
        if scheme not in ("http", "https"):
            return EngineCheck(
                available=False,
                reason=f"base_url {endpoint.display_url!r} is not an http(s) URL",
                install_hint=f"set [engines.{self.name}] base_url to e.g. http://127.0.0.1:8000/v1",
                details=details,
            )
        if endpoint.key:
            details["api_key"] = f"set (from {endpoint.key_source})"
        elif endpoint.loopback:
            details["api_key"] = "none (loopback endpoint)"
        else:
            return EngineCheck(
                available=False,
                reason=f"no API key for {self.name}: {endpoint.key_source} is not set",
                install_hint=self._key_hint(endpoint),
                details=details,
            )
        return EngineCheck(available=True, details=details)

    async def _list_models(self, ctx: EngineContext, endpoint: _Endpoint, headers: Mapping[str, str]) -> list[str]:
        where = endpoint.display_url
        try:
            response = await ctx.http.get(endpoint.base_url + "/models", headers=dict(headers), timeout=_TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise EngineUnavailable(
                f"{self.name} endpoint {where} is unreachable ({type(exc).__name__}: {exc})",
                hint=f"check the network, or [engines.{self.name}] base_url",
                code="engine_unreachable",
            ) from None  # the request (and its headers) stay out of the error chain
        if response.status_code in (401, 403):
            # The body is left out: providers echo (part of) the rejected key in it.
            raise EngineUnavailable(
                f"{self.name} rejected the API key (HTTP {response.status_code} from {where})"
                if endpoint.key
                else f"{self.name} endpoint {where} wants an API key (HTTP {response.status_code})",
                hint=self._key_hint(endpoint),
                code="auth_failed",
            )
        if response.status_code != 200:
            raise EngineUnavailable(
                f"{self.name} endpoint {where} answered HTTP {response.status_code} to GET /models: "
                f"{_redact(response.text[:200], endpoint)}",
                hint=f"is {where} an OpenAI-compatible API? (set [engines.{self.name}] base_url)",
                code="endpoint_error",
            )
        try:
            return [str(item["id"]) for item in response.json().get("data", []) if "id" in item]
        except (ValueError, AttributeError, TypeError):
            raise EngineUnavailable(
                f"{self.name} endpoint {where} did not answer GET /models with a model list",
                hint=f"is {where} an OpenAI-compatible API? (set [engines.{self.name}] base_url)",
                code="endpoint_error",
            ) from None

    async def serve(self, ctx: EngineContext, resolution: Any, download: Any) -> ServedModel:
        endpoint = self._endpoint(ctx)
        if not endpoint.key and not endpoint.loopback:
            raise EngineUnavailable(
                f"no API key for {self.name}: {endpoint.key_source} is not set",
                hint=self._key_hint(endpoint),
                code="auth_failed",
            )
        headers = self._headers(endpoint)
        ctx.progress(f"reaching {self.name} at {endpoint.display_url}")
        ids = await self._list_models(ctx, endpoint, headers)
        log.info("remote endpoint answers", engine=self.name, base_url=endpoint.display_url, models=len(ids))
        return ServedModel(
            engine=self.name, model=resolution.resolved_model, base_url=endpoint.base_url, headers=headers
        )

    async def load(self, ctx: EngineContext, served: ServedModel) -> LoadResult | None:
        endpoint = self._endpoint(ctx)
        ids = await self._list_models(ctx, endpoint, served.headers)
        if not ids:  # a server that lists nothing cannot be checked; the smoke test decides
            return LoadResult(loaded=True, message=f"{self.name} lists no models; trying {served.model} as is")
        if served.model not in ids:
            shown = ", ".join(ids[:_SHOWN_IDS]) + (f", … ({len(ids)} in all)" if len(ids) > _SHOWN_IDS else "")
            raise EngineError(
                f"{self.name} does not list the model {served.model!r} at {endpoint.display_url}",
                hint=f"available: {shown}",
                code="model_not_found",
            )
        return LoadResult(loaded=True, message=f"{served.model} is listed by {self.name}")


def _redact(text: str, endpoint: _Endpoint) -> str:
    return text.replace(endpoint.key, "<redacted>") if endpoint.key else text


@hookimpl
def ltcai_register_engines(register: Any) -> None:
    for provider in PROVIDERS:
        register(RemoteOpenAIEngine(provider))
