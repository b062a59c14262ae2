"""What the daemon writes is private, and its secrets stay secret.

A real ``ltcai serve`` with the loopback TCP API on (bearer token), driven through a
FAKE-engine prepare, a real HF download from a LOOPBACK fake hub, and a remote
``openai`` provider pointed with ``OPENAI_BASE_URL`` at a LOOPBACK fake OpenAI server
with a made-up ``OPENAI_API_KEY``. Then every file and folder it made is walked.

Proven elsewhere: another uid on the socket gets 403 (tests/daemon/test_daemon_access.py),
TCP without or with a wrong token gets 401 (tests/e2e/test_openai_api.py), the socket is
0600 in a 0700 folder (tests/daemon/test_daemon_access.py::test_the_socket_is_private).
"""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
from fake_hf_hub import SlowHub

from ltcai.compat import SMOKE_PROMPT

FAKES = Path(__file__).resolve().parents[1] / "fakes"
API_KEY = "sk-test-ltcai-remote-key-0123456789abcdef"
WRONG_TOKEN = "ltcai-wrong-token-that-must-not-be-logged"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loose(root: Path) -> list[str]:
    """Everything under ``root`` that another user could read or enter."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink():
            continue
        if path.is_dir() and mode != 0o700 or not path.is_dir() and mode & 0o077:
            found.append(f"{oct(mode)} {path.relative_to(root.parent)}")
    return found


def test_files_are_private_and_no_secret_reaches_a_log_a_report_or_a_file(
    start_daemon, daemon_root, slow_hub: SlowHub, gguf_4mib: bytes
):
    slow_hub.add("acme/tiny-GGUF", {"tiny-Q4_K_M.gguf": gguf_4mib})
    remote = subprocess.Popen(
        [sys.executable, str(FAKES / "fake_openai_server.py"), "--model", "gpt-test", "--smoke-prompt", SMOKE_PROMPT],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert remote.stdout is not None
        port_line = next(line for line in remote.stdout if line.startswith("LISTENING "))
        remote_url = f"http://127.0.0.1:{port_line.split()[1]}/v1"
        tcp_port = _free_port()
        daemon = start_daemon({
            **slow_hub.env(daemon_root),
            "LTCAI_HTTP": f"127.0.0.1:{tcp_port}",
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": remote_url,
        })
        token = (daemon.config_dir / "token").read_text().strip()
        assert token

        reports = [daemon.report("fake-ok-secrets"), daemon.report("acme/tiny-GGUF"),
                   daemon.report("gpt-test", engine="openai")]
        assert [r["state"] for r in reports] == ["ready", "ready", "ready"], [r["error"] for r in reports]
        chat = daemon.client.post("/chat", json={"model": "gpt-test", "engine": "openai", "prompt": "hi"})
        assert chat.status_code == 200, chat.text
        with httpx.Client(base_url=f"http://127.0.0.1:{tcp_port}", timeout=30) as tcp:
            assert tcp.get("/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200
            assert tcp.get("/v1/models", headers={"Authorization": f"Bearer {WRONG_TOKEN}"}).status_code == 401
            assert tcp.get("/v1/models").status_code == 401

        # Everything a client can read back...
        answers = [daemon.client.get(path).text for path in ("/status", "/jobs", "/models", "/profiles", "/logs", "/engines")]
        answers += [daemon.client.get(f"/jobs/{r['job_id']}").text for r in reports]
        answers += [str(r) for r in reports]
        daemon.stop()
        # ... and everything the daemon wrote: its stdout log, state, logs, models.
        written = {"daemon stdout": daemon.log_path.read_bytes()}
        for root in (daemon.data_dir, daemon.config_dir):
            for path in root.rglob("*"):
                if path.is_file() and path != daemon.config_dir / "token" and path.suffix != ".gguf":
                    written[str(path.relative_to(daemon_root))] = path.read_bytes()
        assert any("engines.json" in name for name in written) and any("jobs" in name for name in written)
        for secret in (token, API_KEY, WRONG_TOKEN):
            assert not [i for i, text in enumerate(answers) if secret in text], f"{secret[:12]}… in an API answer"
            assert not [name for name, data in written.items() if secret.encode() in data], f"{secret[:12]}… on disk"

        loose = _loose(daemon.data_dir) + _loose(daemon.config_dir)
        assert loose == [], "readable by other users:\n" + "\n".join(loose)
    finally:
        remote.kill()
        remote.wait()
