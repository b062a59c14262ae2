"""``ltcai service``: the unit and plist templates, install/uninstall/status, readiness.

Install/uninstall/status run against ``FakeServiceManager``, a FAKE runner that records
the systemctl/launchctl command lines and answers from a script: nothing here touches the
real user service manager. The unit is checked by the REAL ``systemd-analyze verify``
where that tool is installed (Debian/Ubuntu package ``systemd``), and readiness and
watchdog by a REAL ``python -m ltcai serve`` talking sd_notify to a socket the test binds.
"""

from __future__ import annotations

import json
import os
import plistlib
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from ltcai.cli._render import Renderer
from ltcai.cli._service import (
    LAUNCHD_LABEL,
    UNIT_NAME,
    render_plist,
    render_unit,
    run_command,
    service_argv,
    service_command,
    template_text,
)
from ltcai.config.settings import Settings
from ltcai.errors import LtcaiError

REPO = Path(__file__).resolve().parents[2]
PYTHON = os.path.abspath(sys.executable)


def unit_directives(text: str) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values]}}`` of a unit file (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min)?", value)
    assert match, value
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


class FakeServiceManager:
    """FAKE runner for systemctl/launchctl: records each command line, answers from a script.

    ``answers`` maps a command's words after the tool name (and ``--user``), e.g.
    ``("is-active", "ltcai.service")``, to ``(returncode, stdout, stderr)``; anything
    unscripted succeeds with no output.
    """

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str, str]] | None = None) -> None:
        self.answers = dict(answers or {})
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self.calls.append(argv)
        words = tuple(argv[2:] if argv[1:2] == ["--user"] else argv[1:])
        code, out, err = self.answers.get(words, (0, "", ""))
        return subprocess.CompletedProcess(argv, code, out, err)

    def commands(self) -> list[list[str]]:
        """The calls without the tool name and ``--user``: what the test reads."""
        return [c[2:] if c[1:2] == ["--user"] else c[1:] for c in self.calls]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture
def linux_env(home: Path, tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"), "PATH": "/usr/bin:/bin"}


def unit_path(env: dict[str, str]) -> Path:
    return Path(env["XDG_CONFIG_HOME"]) / "systemd" / "user" / UNIT_NAME


# ----------------------------------------------------------------------------- rendering


def test_unit_is_rendered_with_this_interpreter_and_the_promised_directives() -> None:
    text = render_unit(sys.executable)
    assert "@LTCAI_" not in text
    service = unit_directives(text)["Service"]
    assert service["ExecStart"] == [f"{PYTHON} -m ltcai serve"]
    assert Path(service["ExecStart"][0].split()[0]).is_absolute()
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["WatchdogSec"] == ["30"]
    assert service["KillMode"] == ["control-group"]
    assert service["Restart"] == ["on-failure"]
    assert "RestartSec" in service
    assert service["NoNewPrivileges"] == ["yes"]
    # No device sandboxing: engines keep the user's GPU access.
    for key in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectSystem", "PrivateTmp"):
        assert key not in service
    unit = unit_directives(text)["Unit"]
    assert "StartLimitIntervalSec" in unit and "StartLimitBurst" in unit
    assert unit_directives(text)["Install"]["WantedBy"] == ["default.target"]


def test_stop_timeout_covers_the_shutdown_grace_and_engine_stop() -> None:
    service = unit_directives(render_unit(sys.executable))["Service"]
    engine_stop_s = 5.0  # Supervisor.stop_all's SIGTERM-to-SIGKILL wait
    assert seconds(service["TimeoutStopSec"][0]) > Settings.shutdown_grace_s + engine_stop_s
    plist = plistlib.loads(render_plist(sys.executable, log_dir=Path("/l"), path_env="/usr/bin").encode())
    assert plist["ExitTimeOut"] > Settings.shutdown_grace_s + engine_stop_s


def test_a_relative_interpreter_path_is_made_absolute() -> None:
    assert service_argv("venv/bin/python") == [os.path.abspath("venv/bin/python"), "-m", "ltcai", "serve"]


def test_a_venv_interpreter_symlink_is_kept_not_resolved(tmp_path: Path) -> None:
    # Resolving the link would start the base interpreter, outside the venv.
    link = tmp_path / "venv" / "bin" / "python"
    link.parent.mkdir(parents=True)
    link.symlink_to(sys.executable)
    assert unit_directives(render_unit(str(link)))["Service"]["ExecStart"] == [f"{link} -m ltcai serve"]


def test_odd_characters_in_the_interpreter_path_are_escaped_for_systemd() -> None:
    # Quotes for the space, %% for a specifier; "$" stays: no variables in the program path.
    exec_start = unit_directives(render_unit("/opt/my env/100%/$x/python"))["Service"]["ExecStart"]
    assert exec_start == ['"/opt/my env/100%%/$x/python" -m ltcai serve']


def test_a_newline_in_the_interpreter_path_is_refused() -> None:
    with pytest.raises(LtcaiError, match="control character"):
        render_unit("/opt/x\nExecStartPre=/bin/evil/python")


def test_plist_is_valid_xml_with_the_launch_agent_keys(tmp_path: Path) -> None:
    log_dir = tmp_path / "Library" / "Logs" / "ltcai"
    plist = plistlib.loads(render_plist(sys.executable, log_dir=log_dir, path_env="/opt/homebrew/bin:/usr/bin").encode())
    assert plist["Label"] == LAUNCHD_LABEL
    assert plist["ProgramArguments"] == [PYTHON, "-m", "ltcai", "serve"]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}  # restart after a crash only
    assert plist["ProcessType"] in ("Interactive", "Adaptive")
    assert plist["EnvironmentVariables"]["PATH"] == "/opt/homebrew/bin:/usr/bin"
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert Path(plist[key]).is_absolute()
        assert Path(plist[key]).parent == log_dir


def test_plist_escapes_xml_in_paths(tmp_path: Path) -> None:
    odd = tmp_path / "a&b <c>" / "python"
    plist = plistlib.loads(render_plist(str(odd), log_dir=tmp_path / "l&g", path_env="/x&y").encode())
    assert plist["ProgramArguments"][0] == str(odd)
    assert plist["StandardOutPath"].startswith(str(tmp_path / "l&g"))
    assert plist["EnvironmentVariables"]["PATH"] == "/x&y"


def test_the_repository_systemd_folder_shows_the_packaged_templates() -> None:
    """One copy: ``systemd/`` links to the package data that install reads."""
    for name in (UNIT_NAME, f"{LAUNCHD_LABEL}.plist"):
        assert (REPO / "systemd" / name).read_text() == template_text(name)
        assert (REPO / "systemd" / name).resolve() == (REPO / "ltcai" / "service_files" / name).resolve()


def test_systemd_analyze_verify_accepts_the_rendered_unit(tmp_path: Path) -> None:
    """REAL ``systemd-analyze --user verify`` (package ``systemd``) on the rendered unit.

    Also on an interpreter path with a space, ``%`` and ``$`` (a symlink to this Python),
    since verify checks that ExecStart's program exists: the escaping must be right.
    """
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    odd_dir = tmp_path / "dir with space" / "100%" / "$HOME"
    odd_dir.mkdir(parents=True)
    (odd_dir / "python").symlink_to(sys.executable)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    for n, python in enumerate((sys.executable, str(odd_dir / "python"))):
        folder = tmp_path / f"unit{n}"
        folder.mkdir()
        path = folder / UNIT_NAME
        path.write_text(render_unit(python))
        result = subprocess.run(
            [tool, "--user", "verify", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_COLOR": "0"},
        )
        # verify exits 0 even for an unknown or unparsable directive ("…, ignoring"):
        # any line about our unit fails the test.
        output = result.stdout + result.stderr
        about_us = [line for line in output.splitlines() if UNIT_NAME in line or str(folder) in line]
        assert result.returncode == 0 and not about_us, output


# ------------------------------------------------------------------------ systemd (fake)


def test_install_writes_the_unit_and_enables_it(linux_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeServiceManager({("is-active", UNIT_NAME): (3, "inactive\n", "")})
    assert service_command("install", Renderer(), runner=fake, platform="linux", env=linux_env, python=PYTHON) == 0
    assert fake.calls[0][:2] == ["systemctl", "--user"]
    assert fake.commands() == [
        ["show-environment"],
        ["is-active", UNIT_NAME],
        ["daemon-reload"],
        ["enable", "--now", UNIT_NAME],
    ]
    path = unit_path(linux_env)
    assert path.read_text() == render_unit(PYTHON)
    assert path.stat().st_mode & 0o777 == 0o644
    assert str(path) in capsys.readouterr().out


def test_install_honours_home_when_xdg_config_home_is_unset(home: Path) -> None:
    fake = FakeServiceManager()
    service_command("install", Renderer(), runner=fake, platform="linux", env={"HOME": str(home)}, python=PYTHON)
    assert (home / ".config" / "systemd" / "user" / UNIT_NAME).is_file()


def test_reinstall_with_another_interpreter_restarts_the_running_service(
    linux_env: dict[str, str], tmp_path: Path
) -> None:
    service_command("install", Renderer(), runner=FakeServiceManager(), platform="linux", env=linux_env, python=PYTHON)
    fake = FakeServiceManager({("is-active", UNIT_NAME): (0, "active\n", "")})
    other = str(tmp_path / "other-venv" / "bin" / "python")
    service_command("install", Renderer(), runner=fake, platform="linux", env=linux_env, python=other)
    assert fake.commands()[-1] == ["restart", UNIT_NAME]
    assert f"ExecStart={other} -m ltcai serve" in unit_path(linux_env).read_text()


def test_reinstalling_the_same_unit_does_not_restart(linux_env: dict[str, str]) -> None:
    service_command("install", Renderer(), runner=FakeServiceManager(), platform="linux", env=linux_env, python=PYTHON)
    fake = FakeServiceManager({("is-active", UNIT_NAME): (0, "active\n", "")})
    service_command("install", Renderer(), runner=fake, platform="linux", env=linux_env, python=PYTHON)
    assert ["restart", UNIT_NAME] not in fake.commands()


def test_a_failed_start_is_reported_with_where_to_look(linux_env: dict[str, str]) -> None:
    fake = FakeServiceManager(
        {
            ("enable", "--now", UNIT_NAME): (
                1,
                "",
                "Job for ltcai.service failed because the control process exited with error code.\n"
                'See "systemctl --user status ltcai.service" and "journalctl --user -xeu ltcai.service" for details.\n',
            )
        }
    )
    with pytest.raises(LtcaiError) as caught:
        service_command("install", Renderer(), runner=fake, platform="linux", env=linux_env, python=PYTHON)
    assert caught.value.code == "service_command_failed"
    assert "Job for ltcai.service failed" in caught.value.message
    assert "journalctl --user -u ltcai.service" in (caught.value.hint or "")


def test_uninstall_disables_removes_and_reloads(linux_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    service_command("install", Renderer(), runner=FakeServiceManager(), platform="linux", env=linux_env, python=PYTHON)
    fake = FakeServiceManager()
    assert service_command("uninstall", Renderer(), runner=fake, platform="linux", env=linux_env) == 0
    assert fake.commands() == [
        ["show-environment"],
        ["disable", "--now", UNIT_NAME],
        ["daemon-reload"],
        ["reset-failed", UNIT_NAME],
    ]
    assert not unit_path(linux_env).exists()
    assert "removed" in capsys.readouterr().out


def test_uninstall_when_not_installed_changes_nothing(linux_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeServiceManager()
    assert service_command("uninstall", Renderer(), runner=fake, platform="linux", env=linux_env) == 0
    assert fake.commands() == [["show-environment"]]
    assert "not installed" in capsys.readouterr().out


def test_status_reports_installed_enabled_active(linux_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    service_command("install", Renderer(), runner=FakeServiceManager(), platform="linux", env=linux_env, python=PYTHON)
    capsys.readouterr()
    summary = "● ltcai.service - ltcai local LLM daemon\n     Active: active (running)\n"
    fake = FakeServiceManager(
        {
            ("is-enabled", UNIT_NAME): (0, "enabled\n", ""),
            ("is-active", UNIT_NAME): (0, "active\n", ""),
            ("status", UNIT_NAME, "--no-pager", "--lines=10"): (0, summary, ""),
        }
    )
    assert service_command("status", Renderer(json_output=True), runner=fake, platform="linux", env=linux_env) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["installed"] is True
    assert status["enabled"] == "enabled"
    assert status["active"] == "active"
    assert status["running"] is True
    assert "Active: active (running)" in status["details"]
    assert status["path"] == str(unit_path(linux_env))

    service_command("status", Renderer(), runner=fake, platform="linux", env=linux_env)
    out = capsys.readouterr().out
    assert "installed: yes" in out and "enabled:   enabled" in out and "Active: active (running)" in out


def test_no_user_systemd_bus_gives_the_manual_route(linux_env: dict[str, str]) -> None:
    # What `systemctl --user` says in a container: there is no user bus to talk to.
    fake = FakeServiceManager({("show-environment",): (1, "", "Failed to connect to bus: No medium found\n")})
    for action in ("install", "uninstall", "status"):
        with pytest.raises(LtcaiError) as caught:
            service_command(action, Renderer(), runner=fake, platform="linux", env=linux_env, python=PYTHON)
        assert caught.value.code == "service_manager_unavailable"
        assert "No medium found" in caught.value.message
        assert "ltcai serve" in (caught.value.hint or "") and "supervisor" in (caught.value.hint or "")
    assert not unit_path(linux_env).exists()
    assert all(c == ["show-environment"] for c in fake.commands())


def test_no_systemctl_binary_gives_the_manual_route(linux_env: dict[str, str]) -> None:
    fake = FakeServiceManager({("show-environment",): (127, "", "systemctl: command not found")})
    with pytest.raises(LtcaiError, match="systemctl was not found") as caught:
        service_command("install", Renderer(), runner=fake, platform="linux", env=linux_env, python=PYTHON)
    assert "ltcai serve" in (caught.value.hint or "")


def test_the_default_runner_reports_a_missing_program_as_127() -> None:
    result = run_command(["ltcai-no-such-program-xyz", "--user"])
    assert result.returncode == 127 and "not found" in result.stderr


def test_other_platforms_get_the_manual_route(linux_env: dict[str, str]) -> None:
    with pytest.raises(LtcaiError, match="not on win32") as caught:
        service_command("install", Renderer(), runner=FakeServiceManager(), platform="win32", env=linux_env)
    assert "ltcai serve" in (caught.value.hint or "")


# ------------------------------------------------------------------------ launchd (fake)


def launchd_target() -> str:
    return f"gui/{os.getuid()}/{LAUNCHD_LABEL}"


def test_launchd_install_writes_the_plist_and_bootstraps_it(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {"HOME": str(home), "PATH": "/opt/homebrew/bin:/usr/bin:/bin"}
    fake = FakeServiceManager({("print", launchd_target()): (113, "", "Could not find service")})
    assert service_command("install", Renderer(), runner=fake, platform="darwin", env=env, python=PYTHON) == 0
    plist_path = home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    assert fake.calls[0][0] == "launchctl"
    assert fake.commands() == [
        ["print", f"gui/{os.getuid()}"],
        ["print", launchd_target()],
        ["enable", launchd_target()],
        ["bootstrap", f"gui/{os.getuid()}", str(plist_path)],
    ]
    plist = plistlib.loads(plist_path.read_bytes())
    assert plist["ProgramArguments"] == [PYTHON, "-m", "ltcai", "serve"]
    assert plist["StandardOutPath"] == str(home / "Library" / "Logs" / "ltcai" / "ltcai.out.log")
    assert (home / "Library" / "Logs" / "ltcai").is_dir()  # launchd would not create it
    # The interpreter's folder first, then the installer's PATH.
    assert plist["EnvironmentVariables"]["PATH"].split(":") == [os.path.dirname(PYTHON), "/opt/homebrew/bin", "/usr/bin", "/bin"]
    assert str(plist_path) in capsys.readouterr().out


def test_launchd_reinstall_boots_out_the_loaded_job_first(home: Path) -> None:
    fake = FakeServiceManager()  # `print` succeeds: the job is loaded
    service_command("install", Renderer(), runner=fake, platform="darwin", env={"HOME": str(home)}, python=PYTHON)
    assert fake.commands()[2:] == [
        ["bootout", launchd_target()],
        ["enable", launchd_target()],
        ["bootstrap", f"gui/{os.getuid()}", str(home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist")],
    ]


def test_launchd_uninstall_boots_out_and_removes(home: Path) -> None:
    env = {"HOME": str(home)}
    service_command("install", Renderer(), runner=FakeServiceManager(), platform="darwin", env=env, python=PYTHON)
    fake = FakeServiceManager()
    service_command("uninstall", Renderer(), runner=fake, platform="darwin", env=env)
    assert ["bootout", launchd_target()] in fake.commands()
    assert not (home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist").exists()


def test_launchd_status_reads_launchctl_print(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    printed = f"{launchd_target()} = {{\n\tactive count = 1\n\tstate = running\n\tpid = 4242\n\tlast exit code = (never exited)\n}}\n"
    fake = FakeServiceManager({("print", launchd_target()): (0, printed, "")})
    service_command("status", Renderer(json_output=True), runner=fake, platform="darwin", env={"HOME": str(home)})
    status = json.loads(capsys.readouterr().out)
    assert status["manager"] == "launchd"
    assert status["running"] is True and status["pid"] == "4242"
    assert status["installed"] is False


def test_launchd_without_a_gui_session_gives_the_manual_route(home: Path) -> None:
    fake = FakeServiceManager({("print", f"gui/{os.getuid()}"): (113, "", "Bad request.\nCould not find domain for port identifier.")})
    with pytest.raises(LtcaiError) as caught:
        service_command("install", Renderer(), runner=fake, platform="darwin", env={"HOME": str(home)}, python=PYTHON)
    assert caught.value.code == "service_manager_unavailable"
    assert "ltcai serve" in (caught.value.hint or "")


# ------------------------------------------------------------------ readiness (real daemon)


def _receive(sock: socket.socket, timeout: float) -> list[str]:
    """The sd_notify datagrams that arrive within ``timeout`` (at least waiting for one)."""
    messages = []
    ready, _, _ = select.select([sock], [], [], timeout)
    while ready:
        messages.append(sock.recv(4096).decode())
        ready, _, _ = select.select([sock], [], [], 0)
    return messages


@pytest.mark.e2e
def test_serve_says_ready_only_once_the_socket_answers_and_pings_the_watchdog(daemon_root: Path) -> None:
    """REAL ``python -m ltcai serve`` (what the unit runs), REAL sd_notify datagrams.

    READY=1 must mean "connect now": the control socket answers /status at once, with no
    retry. With WATCHDOG_USEC=200000 pings come every 0.1 s. SIGTERM: STOPPING=1, exit 0.
    """
    notify_path = daemon_root / "notify.sock"
    control = daemon_root / "c.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LTCAI_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update(
        LTCAI_DATA_DIR=str(daemon_root / "data"),
        LTCAI_CONFIG_DIR=str(daemon_root / "config"),
        LTCAI_SOCKET=str(control),
        NOTIFY_SOCKET=str(notify_path),
        WATCHDOG_USEC="200000",
        HF_HUB_OFFLINE="1",
    )
    log = daemon_root / "daemon.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "ltcai", "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        before_ready: list[str] = []
        deadline = time.monotonic() + 30
        while True:
            messages = _receive(notify, 0.5)
            ready_at = next((i for i, m in enumerate(messages) if "READY=1" in m.split("\n")), None)
            if ready_at is not None:
                # The promise checked the moment READY=1 is read: one request, no retry.
                with httpx.Client(transport=httpx.HTTPTransport(uds=str(control)), base_url="http://ltcai", timeout=5) as client:
                    assert client.get("/status").status_code == 200
                ready_message = messages[ready_at]
                after = messages[ready_at + 1 :]
                break
            before_ready += messages
            assert process.poll() is None, f"daemon exited ({process.returncode}) before READY=1:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no READY=1 within 30 s:\n{log.read_text()}"
        assert f"MAINPID={process.pid}" in ready_message.split("\n")
        assert all("READY=1" not in m for m in before_ready)

        after += _receive(notify, 1.0)
        time.sleep(1.0)
        after += _receive(notify, 0.0)
        pings = [m for m in after if m == "WATCHDOG=1"]
        # Every 0.1 s (half of WATCHDOG_USEC) for ~2 s; a loaded CI box may lose some.
        assert len(pings) >= 5, after

        process.send_signal(signal.SIGHUP)  # reload: the daemon keeps serving
        time.sleep(0.2)
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(control)), base_url="http://ltcai", timeout=5) as client:
            assert client.get("/status").status_code == 200

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
        assert "STOPPING=1" in _receive(notify, 0.0)
        assert not control.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        notify.close()
