"""Remote providers obey their documented limits: a real ``ltcai serve`` whose ``openai`` and
``anthropic`` providers point at a LOOPBACK FAKE (``fake_openai_server.py --openai-limits``)
that refuses what OpenAI's API refuses: more than 4 stops, ``max_tokens`` or a
non-default temperature for a reasoning model, an argument it does not know.

Before ltcai followed each provider's rules, the profile's family defaults (temperature
0.2, max_tokens 2048, 5 stops) went to ``openai:o3-test`` and its smoke test failed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from ltcai.compat import SMOKE_PROMPT

from ..conftest import FAKES

KEY = "sk-remote-test-0123456789abcdef"


@pytest.fixture
def fake_openai() -> Iterator[str]:
    server = subprocess.Popen(
        [sys.executable, str(FAKES / "fake_openai_server.py"), "--model", "o3-test", "--openai-limits",
         "--smoke-prompt", SMOKE_PROMPT, "--answer", "2 + 2 = 4. END here STOP"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        port = next(line for line in server.stdout if line.startswith("LISTENING ")).split()[1]
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.kill()
        server.wait()


def test_openai_gets_only_what_the_user_set_and_at_most_4_stops(start_daemon, fake_openai):
    daemon = start_daemon(
        {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fake_openai},
        config=f'[engines.anthropic]\nbase_url = "{fake_openai}"\napi_key = "{KEY}"\n',
    )
    report = daemon.report("o3-test", engine="openai")
    assert report["state"] == "ready", report["error"]
    smoke = httpx.get(fake_openai.removesuffix("/v1") + "/debug/requests").json()["requests"][-1]["body"]
    assert set(smoke) == {"model", "messages", "stream", "max_completion_tokens"}  # no family defaults

    stops = ["S1", "S2", "S3", "S4", "END"]
    body = {"model": "o3-test", "engine": "openai", "prompt": "hi", "stop": stops, "max_tokens": 20}
    answer = daemon.client.post("/chat", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["content"] == "2 + 2 = 4."  # the 5th stop, held back, cut by ltcai
    sent = httpx.get(fake_openai.removesuffix("/v1") + "/debug/requests").json()["requests"][-1]["body"]
    assert sent["stop"] == stops[:4] and sent["max_completion_tokens"] == 20
    streamed = list(daemon.events("POST", "/chat", {**body, "stream": True}))
    assert "".join(d.get("content", "") for d in streamed) == "2 + 2 = 4."

    refused = daemon.client.post("/chat", json={**body, "temperature": 0.5})
    assert refused.status_code == 502 and "temperature" in refused.json()["error"]["message"]  # the provider's word

    # Refused before anything is prepared or sent: Anthropic's layer would ignore it.
    logprobs = daemon.client.post("/chat", json={"model": "o3-test", "engine": "anthropic", "prompt": "hi", "logprobs": True})
    error = logprobs.json()["error"]
    assert logprobs.status_code == 400 and error["code"] == "unsupported_field" and error["param"] == "logprobs"
    assert "anthropic" in error["message"]
