"""Bad input: a property-based fuzz of the whole control API, hostile ids, rude clients.

Against a real ``ltcai serve`` subprocess (FAKE engine plugin loaded, every built-in
engine disabled so that no random request can start a real engine, and random bodies
are never allowed to name the fake one: a fuzz must not turn into a fork bomb).

Proven elsewhere (tests/daemon/test_daemon_access.py): malformed JSON, wrong types,
oversized bodies, unknown routes, the classic hostile ids (traversal, NUL, newline, bidi,
1 MB, leading dash) on /prepare, /chat and /models/unload, garbage bytes on the socket.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_BUILTINS_OFF = {"LTCAI_DISABLE_PLUGINS": "llamacpp,ollama,vllm,lmstudio,openai_remote,mlx"}

ROUTES: list[tuple[str, str]] = [
    ("GET", "/status"),
    ("GET", "/engines"),
    ("POST", "/prepare"),
    ("GET", "/jobs"),
    ("GET", "/jobs/{}"),
    ("GET", "/jobs/{}/events"),
    ("POST", "/jobs/{}/cancel"),
    ("GET", "/models"),
    ("POST", "/models/unload"),
    ("GET", "/profiles"),
    ("GET", "/profiles/{}"),
    ("DELETE", "/profiles/{}"),
    ("POST", "/chat"),
    ("GET", "/logs"),
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/api/chat"),
    ("POST", "/api/generate"),
    ("POST", "/api/embed"),
    ("POST", "/api/embeddings"),
    ("GET", "/api/tags"),
    ("GET", "/api/ps"),
    ("POST", "/api/show"),
    ("POST", "/api/pull"),
    ("DELETE", "/api/delete"),
    ("GET", "/api/version"),
]
FIELDS = [
    "model", "engine", "prompt", "messages", "stream", "force", "temperature", "top_p", "max_tokens",
    "stop", "seed", "role", "content", "n", "stream_options", "tools", "response_format",
    "input", "options", "format", "images", "keep_alive", "think", "raw", "system", "tool_calls", "tool_name",
]
METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"]
HOSTILE_TEXT = st.sampled_from([
    "..", "../../etc/passwd", "．．／．．", "..%2f..", "%00", "\x00", "\u202e", "\ufeff", "~", "/", "\\",
    "fake-hang-load", "smollm2", "ollama:x:y", "x" * 600, "-rf", "\ud800", "é", "\U0001f600", "",
])
TEXT = st.one_of(st.text(max_size=40), HOSTILE_TEXT)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.one_of(st.sampled_from(FIELDS), TEXT), inner, max_size=5),
    max_leaves=8,
)
BODY = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6),
    JSON,
    st.binary(max_size=200),
)
CONTENT_TYPES = st.sampled_from([None, "application/json", "text/plain", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=x", "application/json; charset=latin-1", "\x7f"])


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes | None, dict[str, str]]:
    method, template = draw(st.sampled_from(ROUTES))
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(METHODS))
    if draw(st.integers(0, 19)) == 0:  # any path at all
        path = "/" + urllib.parse.quote(draw(TEXT), safe="/%", errors="surrogatepass")
    else:
        path = template.replace("{}", urllib.parse.quote(draw(TEXT), safe="", errors="surrogatepass") or "x")
    if draw(st.booleans()):
        query = {draw(st.sampled_from(["engine", "model", "x"])): draw(TEXT)}
        path += "?" + urllib.parse.urlencode(query, errors="surrogatepass")
    body = draw(BODY)
    if isinstance(body, dict):
        for key in ("engine",):
            if isinstance(body.get(key), str) and body[key].strip().lower() == "fake":
                body[key] = "notfake"  # never start the fake engine: see the module docstring
    raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode(errors="surrogatepass")
    headers = {}
    content_type = draw(CONTENT_TYPES)
    if content_type is not None:
        headers["content-type"] = content_type
    if draw(st.integers(0, 9)) == 0:
        headers[draw(st.sampled_from(["accept", "x-junk", "authorization", "range"]))] = draw(
            st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30)
        )
    return method, path, raw, headers


def _check(response: httpx.Response, seen: dict[int, int]) -> None:
    seen[response.status_code] = seen.get(response.status_code, 0) + 1
    what = f"{response.request.method} {response.request.url.raw_path!r}"
    assert response.status_code < 500, f"{what} → {response.status_code}: {response.text[:500]}"
    assert b"Traceback" not in response.content, f"{what}: {response.content[:500]!r}"
    if response.status_code >= 400 and response.request.method != "HEAD":
        assert response.headers["content-type"].startswith("application/json"), what
        body = response.json()
        ollama = response.request.url.path.startswith("/api/")
        if isinstance(body["error"], dict):  # ltcai's and OpenAI's shape
            assert isinstance(body["error"]["code"], str), what
            # On /api only for a request no route saw (the HTTP layer refused it).
            assert not ollama or body["error"]["code"] == "bad_http_request", what
        else:  # Ollama's: the message as "error", ltcai's code beside it
            assert ollama and isinstance(body["error"], str) and isinstance(body["code"], str), what


def test_fuzzing_every_route_gives_no_5xx_and_no_traceback(start_daemon):
    daemon = start_daemon(_BUILTINS_OFF)
    seen: dict[int, int] = {}
    started = time.monotonic()
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket_path)), base_url="http://ltcai",
                      timeout=20) as client:

        # Batches of 4: drawing examples, not sending them, is what costs here.
        @settings(max_examples=400, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(requests(), min_size=4, max_size=4))
        def batch(batch: list[tuple[str, str, bytes | None, dict[str, str]]]) -> None:
            for method, path, raw, headers in batch:
                try:
                    with client.stream(method, path, content=raw, headers=headers) as response:
                        response.read()  # streams (a job's events) end: every job here fails at once
                except httpx.LocalProtocolError:
                    seen[0] = seen.get(0, 0) + 1  # httpx itself refused to send it: nothing to test
                    continue
                _check(response, seen)

        batch()
    took = time.monotonic() - started
    assert sum(n for status, n in seen.items() if status) >= 1500, seen
    assert {s for s in seen if 400 <= s < 500} and 200 in seen, seen  # both kinds were reached
    assert daemon.client.get("/status").status_code == 200
    assert daemon.process.poll() is None
    bugs = [e for e in daemon.log_events() if e.get("event") in ("unhandled error in the control API", "step crashed")]
    assert bugs == [], bugs[:3]
    assert took < 120, f"the fuzz took {took:.0f} s"


# ------------------------------------------------------------------------- hostile ids


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(
    "model",
    ["．．／．．／etc／passwd", "org/..%2f..%2fetc", "hf.co/..%2F..%2Fx:Q4_0", "fake:．．/x"],
    ids=["fullwidth-traversal", "percent-encoded-slash", "percent-encoded-hf", "fullwidth-dots"],
)
def test_unicode_and_percent_encoded_traversal_is_refused_and_creates_nothing(daemon, model):
    """Look-alike or encoded ``../`` that a tool normalizing Unicode or decoding a URL would
    turn into a real traversal: refused as such, on every route that takes an id."""
    before = _files(daemon.data_dir)
    for path, body in (
        ("/prepare", {"model": model, "engine": "fake"}),
        ("/chat", {"model": model, "engine": "fake", "prompt": "hi"}),
        ("/models/unload", {"model": model, "engine": "fake"}),
        ("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}]}),
    ):
        response = daemon.client.post(path, json=body)
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_model_id"
        if path != "/v1/chat/completions":
            assert error["rule"] == "path_traversal"
    assert _files(daemon.data_dir) == before


@pytest.mark.parametrize("model", ["a%00b", "org/50%off", "fake-ok-a%2Db"])
def test_a_percent_sign_in_an_id_is_refused_naming_the_rule_and_creates_nothing(daemon, model):
    """No engine's namespace has '%' (issue 10, defect 8: ``a%00b`` was prepared with 200);
    refused before a job, a file or a process exists."""
    before = _files(daemon.data_dir)
    jobs_before = daemon.client.get("/jobs").json()
    for path, body in (
        ("/prepare", {"model": model, "engine": "fake"}),
        ("/chat", {"model": model, "engine": "fake", "prompt": "hi"}),
        ("/models/unload", {"model": model, "engine": "fake"}),
    ):
        response = daemon.client.post(path, json=body)
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]
        assert (error["code"], error["rule"]) == ("invalid_model_id", "percent_sign")
        assert "'%'" in error["message"]
    assert daemon.client.get("/jobs").json() == jobs_before
    assert _files(daemon.data_dir) == before


# ------------------------------------------------------------------------- rude clients


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _settled_fds(pid: int, target: int, timeout: float = 10.0) -> int:
    """The daemon's open fd count once it is back at or below ``target`` (or the timeout)."""
    deadline = time.monotonic() + timeout
    count = _fds(pid)
    while count > target and time.monotonic() < deadline:
        time.sleep(0.05)
        count = _fds(pid)
    return count


def test_silent_and_vanishing_clients_leave_nothing_open(start_daemon, tag):
    """Clients that connect and send nothing, or hang up mid-stream (a FAKE engine chat
    streaming slowly, one that stalls forever, a job's event stream): every socket and
    engine connection is given back."""
    daemon = start_daemon()
    pid = daemon.process.pid
    slow, stalled, hanging = f"fake-slow-stream-{tag}", f"fake-stall-stream-{tag}", f"fake-hang-load-{tag}"
    for model in (slow, stalled):
        assert daemon.report(model)["state"] in ("ready", "degraded")
    hang_job = daemon.start_job(hanging)
    daemon.wait_for_state(hang_job, "model_loading")

    def hang_up_mid_stream(method: str, path: str, body: dict[str, Any] | None) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(daemon.socket_path))
            payload = json.dumps(body).encode() if body is not None else b""
            sock.sendall(
                f"{method} {path} HTTP/1.1\r\nhost: ltcai\r\ncontent-type: application/json\r\n"
                f"content-length: {len(payload)}\r\n\r\n".encode() + payload
            )
            got = b""
            while b"\r\n\r\n" not in got or not got.split(b"\r\n\r\n", 1)[1].strip():
                chunk = sock.recv(4096)  # the head and the first event/chunk: it is streaming
                assert chunk, got
                got += chunk
            assert got.startswith(b"HTTP/1.1 200"), got[:200]

    def one_round() -> None:
        hang_up_mid_stream("POST", "/chat", {"model": slow, "engine": "fake", "prompt": "hi", "stream": True})
        hang_up_mid_stream("POST", "/chat", {"model": stalled, "engine": "fake", "prompt": "hi", "stream": True})
        hang_up_mid_stream("GET", f"/jobs/{hang_job}/events", None)

    one_round()  # warm up: the daemon's connection pool to each engine now exists
    time.sleep(0.3)
    baseline = _fds(pid)

    silent = []
    for _ in range(50):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(daemon.socket_path))
        silent.append(sock)
    time.sleep(0.2)
    assert _fds(pid) >= baseline + 50  # the daemon did accept them
    for sock in silent:
        sock.close()
    assert _settled_fds(pid, baseline + 2) <= baseline + 2, "connections that sent nothing were not closed"

    for _ in range(15):
        one_round()
    # 45 streams cut mid-way: each would leak a socket (and an engine connection) if the
    # daemon kept streaming to nobody. A few fds of slack for the engine connection pool.
    after = _settled_fds(pid, baseline + 4)
    assert after <= baseline + 4, f"{after - baseline} fds more than before 45 broken streams"
    # The engines still answer, and the daemon does.
    response = daemon.client.post("/chat", json={"model": slow, "engine": "fake", "prompt": "hi"})
    assert response.status_code == 200, response.text
    daemon.client.post(f"/jobs/{hang_job}/cancel")


@pytest.mark.asyncio
async def test_a_connection_that_never_sends_a_request_is_closed_after_the_idle_timeout():
    """The daemon's real HTTP server class on a real Unix socket (idle timeout 0.5 s
    instead of 30 s): a client that connects and says nothing is hung up on, like an
    idle keep-alive connection; one that sends a request in time is served."""
    import tempfile

    import anyio
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from ltcai.daemon.http_server import ControlServer

    root = Path(tempfile.mkdtemp(prefix="lt", dir="/tmp"))
    path = str(root / "idle.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    app = Starlette(routes=[Route("/status", lambda request: PlainTextResponse("ok"))])
    server = ControlServer(app, [listener], grace_s=1.0, keep_alive_s=0.5)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(server.run)
            silent = await anyio.connect_unix(path)
            talker = await anyio.connect_unix(path)
            started = time.monotonic()
            await anyio.sleep(0.3)
            await talker.send(b"GET /status HTTP/1.1\r\nhost: x\r\n\r\n")
            assert (await talker.receive()).startswith(b"HTTP/1.1 200")
            with anyio.fail_after(5):
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await silent.receive()
            assert 0.4 < time.monotonic() - started < 3
            await silent.aclose()
            await talker.aclose()
            server.request_stop()
    finally:
        listener.close()
        shutil.rmtree(root, ignore_errors=True)
