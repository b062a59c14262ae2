"""Who may talk to the daemon, and what it does with bad input (real ``ltcai serve``, FAKE engine).

Bad input of every kind gets a 4xx JSON error naming the problem, never a traceback,
never a file on disk, and the daemon keeps answering. A peer of another uid is refused
with 403 even when the socket's file mode would let it in.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

MAX_BODY = 1 << 20  # settings.max_body_bytes default


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    assert "Traceback" not in response.text
    return error


# ------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    ("path", "raw", "code"),
    [
        ("/prepare", b"{not json", "invalid_json"),
        ("/prepare", b"", "invalid_json"),
        ("/prepare", b"[1, 2]", "invalid_json"),
        ("/prepare", b"\xff\xfe", "invalid_json"),
        ("/chat", b'{"model": "x",', "invalid_json"),
        ("/models/unload", b"null", "invalid_json"),
    ],
)
def test_malformed_json_is_400(daemon, path, raw, code):
    response = daemon.client.post(path, content=raw, headers={"content-type": "application/json"})
    _error(response, 400, code)


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/prepare", {}, "missing_field"),
        ("/prepare", {"engine": "fake"}, "missing_field"),
        ("/prepare", {"model": 5}, "invalid_field"),
        ("/prepare", {"model": ["fake-ok"]}, "invalid_field"),
        ("/prepare", {"model": "fake-ok", "engine": 3}, "invalid_field"),
        ("/prepare", {"model": "fake-ok", "engine": "fake", "stream": "yes"}, "invalid_field"),
        ("/prepare", {"model": "fake-ok", "engine": "fake", "force": 1}, "invalid_field"),
        ("/prepare", {"model": "fake-ok", "engine": "nosuchengine"}, "unknown_engine"),
        ("/chat", {"model": "fake-ok", "engine": "fake"}, "missing_field"),
        ("/chat", {"model": "fake-ok", "engine": "fake", "prompt": "hi", "temperature": "hot"}, "invalid_field"),
        ("/chat", {"model": "fake-ok", "engine": "fake", "prompt": "hi", "max_tokens": 1.5}, "invalid_field"),
        ("/chat", {"model": "fake-ok", "engine": "fake", "prompt": "hi", "stop": [1]}, "invalid_field"),
        ("/chat", {"model": "fake-ok", "engine": "fake", "messages": []}, "invalid_field"),
        ("/chat", {"model": "fake-ok", "engine": "fake", "messages": [{"role": "wizard", "content": "x"}]}, "invalid_field"),
        ("/chat", {"model": "fake-ok", "engine": "fake", "prompt": "hi", "temperature": 5}, "invalid_field"),
        ("/chat", {"model": "fake-ok", "engine": "fake", "prompt": "hi", "frobnicate": 1}, "unknown_field"),
        ("/models/unload", {"engine": "fake"}, "missing_field"),
    ],
)
def test_wrong_types_and_missing_fields_are_400_naming_the_field(daemon, path, body, code):
    error = _error(daemon.client.post(path, json=body), 400, code)
    if code in ("missing_field", "invalid_field", "unknown_field"):
        assert "'" in error["message"]  # the field is named
        assert error["param"] and f"'{error['param']}'" in error["message"]  # OpenAI's ``param`` too


def test_oversized_bodies_are_413_declared_or_not(daemon):
    big = json.dumps({"model": "x" * (MAX_BODY + 10)}).encode()
    _error(daemon.client.post("/prepare", content=big), 413, "body_too_large")

    def chunks():  # no content-length: the limit must hold while reading
        for i in range(0, len(big), 64 * 1024):
            yield big[i : i + 64 * 1024]

    _error(daemon.client.post("/chat", content=chunks()), 413, "body_too_large")
    assert daemon.client.get("/status").status_code == 200


def test_unknown_route_and_method_are_json_errors(daemon):
    _error(daemon.client.get("/nosuch"), 404, "not_found")
    _error(daemon.client.get("/v2/prepare"), 404, "not_found")
    _error(daemon.client.get("/prepare"), 405, "method_not_allowed")
    _error(daemon.client.delete("/status"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("model", "rule"),
    [
        ("../../etc/passwd", "path_traversal"),
        ("org/../../etc", "path_traversal"),
        ("/etc/passwd", "absolute_path_outside_roots"),
        ("a\x00b", "control_character"),
        ("a\nb", "control_character"),
        ("\u202eevil", "control_character"),
        ("x" * 1_000_000, "too_long"),
        ("   ", "empty"),
        ("--help", "leading_dash"),
    ],
    ids=["traversal", "nested-traversal", "absolute", "nul", "newline", "bidi", "1MB", "blank", "dash"],
)
def test_bad_model_ids_are_rejected_and_create_nothing(daemon, model, rule):
    before = _files(daemon.data_dir)
    jobs_before = len(daemon.client.get("/jobs").json()["jobs"])
    for path in ("/prepare", "/chat", "/models/unload"):
        body = {"model": model, "engine": "fake", "prompt": "hi"}
        error = _error(daemon.client.post(path, json=body), 400, "invalid_model_id")
        assert error["rule"] == rule
        assert "\x00" not in error["message"] and "\n" not in error["message"]
        assert len(error["message"]) < 1000  # a 1 MB id is not echoed back
    assert _files(daemon.data_dir) == before
    assert len(daemon.client.get("/jobs").json()["jobs"]) == jobs_before
    assert not any("passwd" in name for name in _files(daemon.data_dir))
    assert daemon.client.get("/status").status_code == 200


def test_a_profile_key_with_traversal_is_just_not_found(daemon):
    response = daemon.client.get("/profiles/..%2F..%2Fetc%2Fpasswd")
    assert response.status_code == 404
    assert "Traceback" not in response.text


def test_garbage_on_the_socket_does_not_hurt_the_daemon(daemon):
    for junk in (b"\x00\x01\x02garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"POST /prepare HTTP/1.1\r\ncontent-length: 99999999999999999999\r\n\r\n"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(daemon.socket_path))
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            assert b"Traceback" not in answer
    assert daemon.client.get("/status").status_code == 200


# ------------------------------------------------------------------------- who may talk


def test_the_socket_is_private(daemon):
    assert stat.S_IMODE(daemon.socket_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.socket_path.parent.stat().st_mode) == 0o700
    assert stat.S_ISSOCK(daemon.socket_path.stat().st_mode)
    assert stat.S_IMODE(daemon.state_dir.stat().st_mode) == 0o700


def _request_as(uid: int, gid: int, socket_path: Path) -> bytes:
    """GET /status from a forked child running as ``uid`` (no exec: /root may be closed to it)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, ask, report through the pipe, never return
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(str(socket_path))
                try:
                    sock.sendall(b"GET /status HTTP/1.1\r\nhost: ltcai\r\nconnection: close\r\n\r\n")
                except BrokenPipeError:
                    pass  # a refused peer is answered and hung up on at connect, maybe before we send
                while chunk := sock.recv(65536):
                    os.write(write_end, chunk)
        except BaseException as exc:  # noqa: BLE001  (reported to the parent)
            os.write(write_end, f"CHILD-ERROR {type(exc).__name__}: {exc}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    answer = b""
    while chunk := os.read(read_end, 65536):
        answer += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    return answer


def test_a_peer_of_another_uid_is_refused_with_403_even_through_open_permissions(daemon):
    """Run as root; the client runs as ``nobody``. The file mode is opened on purpose, so
    only the SO_PEERCRED check stands between that user and the daemon."""
    if os.geteuid() != 0:
        pytest.skip("needs root to connect as another user (the wrong-uid refusal test)")
    nobody = pwd.getpwnam("nobody")
    directory = daemon.socket_path.parent
    old_dir_mode = stat.S_IMODE(directory.stat().st_mode)
    old_sock_mode = stat.S_IMODE(daemon.socket_path.stat().st_mode)
    os.chmod(directory, 0o755)
    os.chmod(daemon.socket_path, 0o666)
    try:
        answer = _request_as(nobody.pw_uid, nobody.pw_gid, daemon.socket_path)
    finally:
        os.chmod(directory, old_dir_mode)
        os.chmod(daemon.socket_path, old_sock_mode)
    assert not answer.startswith(b"CHILD-ERROR"), answer
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 403 Forbidden", head
    assert b"application/json" in head
    error = json.loads(body)["error"]
    assert error["code"] == "forbidden"
    assert error["hint"]
    # The same request as the daemon's own user is served, and the daemon noted the refusal.
    own = _request_as(os.getuid(), os.getgid(), daemon.socket_path)
    assert own.startswith(b"HTTP/1.1 200"), own[:200]
    refusals = [e for e in daemon.log_events() if e.get("event") == "refused a connection from another user"]
    assert refusals and refusals[-1]["peer_uid"] == nobody.pw_uid
