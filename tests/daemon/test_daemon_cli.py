"""The ``ltcai`` command line against a real ``ltcai serve`` with the FAKE engine plugin.

Two runs are real subprocesses (what a user sees, start to finish); the rest call
``ltcai.cli.main`` in this process with ``--socket``, which is the same code without
the interpreter start-up.
"""

from __future__ import annotations

import json
import subprocess
import sys

from ltcai.cli import main


def _lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_status_without_a_daemon_is_one_error_line_and_a_hint(daemon_root):
    env = {"LTCAI_SOCKET": str(daemon_root / "none.sock"), "LTCAI_DATA_DIR": str(daemon_root / "d"),
           "LTCAI_CONFIG_DIR": str(daemon_root / "c"), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "ltcai", "status"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    errors = _lines(result.stderr, "error:")
    assert len(errors) == 1, result.stderr
    assert "daemon is not running" in errors[0]
    assert len(_lines(result.stderr, "hint:")) == 1
    assert "ltcai serve" in result.stderr
    assert "Traceback" not in result.stderr


def test_prepare_prints_the_states_and_the_report(daemon, tag):
    result = daemon.cli("prepare", f"fake-ok-{tag}", "--engine", "fake")
    assert result.returncode == 0, result.stderr
    assert f"fake-ok-{tag} is ready to chat on fake" in result.stdout
    assert "2 + 2 = 4." in result.stdout
    assert "smoke test: ok" in result.stdout
    for label in ("Resolving", "Checking engine", "Downloading", "Starting server", "Smoke test"):
        assert label in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_prepare_failure_exits_1_with_one_error_line_and_the_hint(daemon, tag, capsys):
    code = main(["prepare", f"fake-fail-load-{tag}", "--engine", "fake", "--socket", str(daemon.socket_path)])
    _out, err = capsys.readouterr()
    assert code == 1
    errors = _lines(err, "error:")
    assert len(errors) == 1
    assert f"could not load fake-fail-load-{tag}" in errors[0]
    assert _lines(err, "hint:") == ["hint: pick a model id without fail-load"]
    # Brackets in messages are text, not markup: the code and state must show.
    assert "[model_load_failed in model_loading]" in errors[0]


def test_prepare_json_is_one_parseable_event_per_line(daemon, tag, capsys):
    code = main(["prepare", f"fake-ok-{tag}", "--engine", "fake", "--json", "--socket", str(daemon.socket_path)])
    out, _err = capsys.readouterr()
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["type"] == "state" and events[0]["state"] == "resolving"
    assert events[-1]["type"] == "report"
    assert events[-1]["report"]["state"] == "ready"


def test_json_listings_parse(daemon, tag, capsys):
    socket = ["--socket", str(daemon.socket_path)]
    assert main(["prepare", f"fake-ok-{tag}", "--engine", "fake", "--json", *socket]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])["report"]

    assert main(["status", "--json", *socket]) == 0
    assert json.loads(capsys.readouterr().out)["pid"] == daemon.process.pid
    assert main(["jobs", "--json", *socket]) == 0
    assert report["job_id"] in {j["job_id"] for j in json.loads(capsys.readouterr().out)}
    assert main(["jobs", report["job_id"], "--json", *socket]) == 0
    assert json.loads(capsys.readouterr().out)["report"]["state"] == "ready"
    assert main(["ps", "--json", *socket]) == 0
    assert f"fake-ok-{tag}" in {m["model"] for m in json.loads(capsys.readouterr().out)}
    assert main(["profiles", "--json", *socket]) == 0
    assert f"fake-ok-{tag}" in {p["model_id"] for p in json.loads(capsys.readouterr().out)}
    assert main(["engines", "--json", *socket]) == 0
    assert "fake" in {e["name"] for e in json.loads(capsys.readouterr().out)}


def test_chat_prepares_if_needed_and_answers(daemon, tag, capsys):
    model = f"fake-ok-{tag}"
    code = main(["chat", model, "What is 2+2?", "--engine", "fake", "--socket", str(daemon.socket_path)])
    out, _err = capsys.readouterr()
    assert code == 0
    assert out.splitlines()[-1] == "2 + 2 = 4."
    code = main(["chat", model, "again?", "--engine", "fake", "--no-stream", "--socket", str(daemon.socket_path)])
    assert code == 0
    assert capsys.readouterr().out == "2 + 2 = 4.\n"


def test_cli_errors_from_the_daemon_are_one_line_with_a_hint(daemon, capsys):
    socket = ["--socket", str(daemon.socket_path)]
    assert main(["cancel", "nosuchjob", *socket]) == 1
    err = capsys.readouterr().err
    assert len(_lines(err, "error:")) == 1 and "no job 'nosuchjob'" in err
    assert "hint:" in err

    assert main(["prepare", "../../etc/passwd", "--engine", "fake", *socket]) == 1
    err = capsys.readouterr().err
    assert len(_lines(err, "error:")) == 1 and "'..'" in err
    assert "Traceback" not in err

    assert main(["unload", "fake-never-loaded", "--engine", "fake", "--json", *socket]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "model_not_loaded"
