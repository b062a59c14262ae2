"""``ltcai service install|uninstall|status``: the daemon as a per-user service.

systemd (a user unit) on Linux, launchd (a LaunchAgent) on macOS. The unit and the plist
are templates shipped inside the package (``ltcai/service_files/``, the one copy; the
repository's ``systemd/`` folder links to them). Install fills in the absolute path of
this interpreter, so the service runs the very ltcai that installed it: a venv, pipx or
system install, with no dependence on the service manager's PATH.

Every systemctl/launchctl call goes through a ``runner``; tests pass a fake one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from ..errors import InvalidRequest, LtcaiError
from ._render import Renderer

__all__ = [
    "LAUNCHD_LABEL",
    "UNIT_NAME",
    "Runner",
    "render_plist",
    "render_unit",
    "run_command",
    "service_argv",
    "service_command",
    "template_text",
]

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]

UNIT_NAME = "ltcai.service"
LAUNCHD_LABEL = "ai.lattice.ltcai"
PLIST_NAME = f"{LAUNCHD_LABEL}.plist"

_PLACEHOLDER = re.compile(r"@LTCAI_[A-Z_]+@")
# `systemctl start` of a Type=notify unit waits for READY=1 (TimeoutStartSec, 90 s).
_COMMAND_TIMEOUT_S = 180
_MANUAL_ROUTE = (
    "run `ltcai serve` under your own supervisor instead (a terminal, tmux, supervisord, "
    "runit, a container's init): it stays in the foreground, logs to stdout, sends "
    "sd_notify readiness when NOTIFY_SOCKET is set and exits 0 on SIGTERM"
)


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a service-manager command, capturing its output; a missing binary gives 127."""
    try:
        return subprocess.run(
            list(argv), capture_output=True, text=True, check=False, timeout=_COMMAND_TIMEOUT_S
        )
    except FileNotFoundError:
        return subprocess.CompletedProcess(list(argv), 127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(
            list(argv), 124, "", f"{argv[0]} gave no answer within {_COMMAND_TIMEOUT_S} s"
        )


# --------------------------------------------------------------------------- rendering


def template_text(name: str) -> str:
    """A service template shipped with the package (``ltcai.service`` or the plist)."""
    try:
        return resources.files("ltcai").joinpath("service_files", name).read_text(encoding="utf-8")
    except FileNotFoundError as exc:  # a build that left out the package data
        raise LtcaiError(
            f"this ltcai install lacks its service template {name}",
            hint="reinstall ltcai from a release wheel; " + _MANUAL_ROUTE,
            code="service_install_failed",
        ) from exc


def service_argv(python: str | None = None) -> list[str]:
    """What the service runs: this interpreter's absolute path, ``-m ltcai serve``."""
    python = python if python is not None else sys.executable
    if not python:
        raise LtcaiError(
            "cannot tell which Python interpreter runs ltcai",
            hint=_MANUAL_ROUTE,
            code="service_install_failed",
        )
    # abspath, not resolve(): a venv's python is a symlink to the base interpreter, and
    # only when started through the link's own path does Python find the venv.
    return [os.path.abspath(python), "-m", "ltcai", "serve"]


def _plain(value: str, what: str) -> str:
    # A newline would start a new unit directive; no control character belongs in a path.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise LtcaiError(
            f"the {what} {value!r} contains a control character",
            hint="install ltcai under a path without newlines or control characters",
            code="service_install_failed",
        )
    return value


def _systemd_program(path: str) -> str:
    """ExecStart's program path: C escapes and ``%%`` (specifiers are expanded in it)."""
    # No ``$$``: systemd substitutes variables in the arguments only, never in the
    # program path, so a "$" there is already literal (systemd-analyze verify agrees).
    escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    needs_quotes = escaped != path or any(c.isspace() for c in path)
    return f'"{escaped}"' if needs_quotes else escaped


def _fill(template: str, values: Mapping[str, str]) -> str:
    text = template
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    left = _PLACEHOLDER.search(text)
    if left:  # a template and this module disagree: a bug, not a user error
        raise RuntimeError(f"service template placeholder {left.group()} was not filled")
    return text


def render_unit(python: str | None = None, *, template: str | None = None) -> str:
    """The systemd user unit with ExecStart pointing at this interpreter."""
    interpreter = _plain(service_argv(python)[0], "interpreter path")
    return _fill(template or template_text(UNIT_NAME), {"LTCAI_EXEC": _systemd_program(interpreter)})


def render_plist(
    python: str | None = None, *, log_dir: Path, path_env: str, template: str | None = None
) -> str:
    """The launchd plist: interpreter, absolute log folder and PATH filled in (XML-escaped)."""
    interpreter = _plain(service_argv(python)[0], "interpreter path")
    values = {
        "LTCAI_EXEC": interpreter,
        "LTCAI_LOG_DIR": _plain(str(log_dir), "log folder"),
        "LTCAI_PATH": _plain(path_env, "PATH"),
    }
    return _fill(template or template_text(PLIST_NAME), {k: xml_escape(v) for k, v in values.items()})


def _service_path_env(python: str, env: Mapping[str, str]) -> str:
    """PATH for the LaunchAgent: the interpreter's bin folder, then the installer's PATH."""
    base = env.get("PATH") or "/usr/bin:/bin:/usr/sbin:/sbin"
    parts = [os.path.dirname(python), *base.split(os.pathsep)]
    return os.pathsep.join(dict.fromkeys(p for p in parts if p and os.path.isabs(p)))


# --------------------------------------------------------------------------- helpers


def _write_file(path: Path, text: str) -> None:
    from ..runtime.files import atomic_write_bytes  # one atomic-write rule for the project

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"), mode=0o644)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _why(result: subprocess.CompletedProcess[str]) -> str:
    # The first line says what went wrong; systemctl and launchctl add "see …" lines after.
    lines = [line.strip() for line in (result.stderr or result.stdout or "").splitlines() if line.strip()]
    return lines[0] if lines else f"exit status {result.returncode}"


def _failed(result: subprocess.CompletedProcess[str], hint: str) -> LtcaiError:
    return LtcaiError(
        f"`{' '.join(result.args)}` failed: {_why(result)}", hint=hint, code="service_command_failed"
    )


def _unavailable(message: str) -> LtcaiError:
    return LtcaiError(message, hint=_MANUAL_ROUTE, code="service_manager_unavailable")


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME")
    return Path(home) if home else Path.home()


# --------------------------------------------------------------------------- systemd


class _Systemd:
    """A user unit in ``$XDG_CONFIG_HOME/systemd/user``, driven by ``systemctl --user``."""

    manager = "systemd"

    def __init__(self, runner: Runner, env: Mapping[str, str], python: str | None) -> None:
        self.runner = runner
        self.python = python
        config_home = env.get("XDG_CONFIG_HOME")
        # The XDG spec says to ignore a relative XDG_CONFIG_HOME; systemd does too.
        base = Path(config_home) if config_home and os.path.isabs(config_home) else _home(env) / ".config"
        self.path = base / "systemd" / "user" / UNIT_NAME

    def _ctl(self, *args: str, check: bool = True, hint: str = "") -> subprocess.CompletedProcess[str]:
        result = self.runner(["systemctl", "--user", *args])
        if check and result.returncode != 0:
            raise _failed(result, hint or f"see `journalctl --user -u {UNIT_NAME} -e`")
        return result

    def require(self) -> None:
        probe = self.runner(["systemctl", "--user", "show-environment"])
        if probe.returncode == 127:
            raise _unavailable("systemd's systemctl was not found, so there is no user service manager")
        if probe.returncode != 0:
            # A container, a `su` shell or a host booted without systemd: no user bus.
            raise _unavailable(f"the systemd user manager is not reachable ({_why(probe)})")

    def install(self) -> dict[str, Any]:
        self.require()
        content = render_unit(self.python)
        previous = _read(self.path)
        was_active = self._ctl("is-active", UNIT_NAME, check=False).stdout.strip() == "active"
        _write_file(self.path, content)
        self._ctl("daemon-reload")
        self._ctl(
            "enable", "--now", UNIT_NAME,
            hint=f"see `journalctl --user -u {UNIT_NAME} -e` (is another `ltcai serve` running?)",
        )  # fmt: skip
        restarted = was_active and previous is not None and previous != content
        if restarted:  # enable --now leaves a running daemon on its old command line
            self._ctl("restart", UNIT_NAME)
        return {"changed": previous != content, "restarted": restarted}

    def uninstall(self) -> dict[str, Any]:
        self.require()
        if not self.path.exists():
            return {"removed": False}
        self._ctl("disable", "--now", UNIT_NAME)
        self.path.unlink()
        self._ctl("daemon-reload")
        self._ctl("reset-failed", UNIT_NAME, check=False)  # fails when it never failed: fine
        return {"removed": True}

    def status(self) -> dict[str, Any]:
        self.require()
        enabled = self._ctl("is-enabled", UNIT_NAME, check=False).stdout.strip() or "not-found"
        active = self._ctl("is-active", UNIT_NAME, check=False).stdout.strip() or "unknown"
        details = self._ctl("status", UNIT_NAME, "--no-pager", "--lines=10", check=False).stdout
        return {
            "installed": self.path.exists(),
            "enabled": enabled,
            "active": active,
            "running": active in ("active", "reloading"),
            "details": details.rstrip(),
        }

    def next_steps(self) -> list[str]:
        return [
            f"status: systemctl --user status {UNIT_NAME}",
            f"logs:   journalctl --user -u {UNIT_NAME} -f",
            "to keep it running after you log out: loginctl enable-linger $USER",
        ]


# --------------------------------------------------------------------------- launchd


class _Launchd:
    """A LaunchAgent in ``~/Library/LaunchAgents``, in the ``gui/<uid>`` domain."""

    manager = "launchd"

    def __init__(self, runner: Runner, env: Mapping[str, str], python: str | None) -> None:
        self.runner = runner
        self.python = python
        self.env = env
        home = _home(env)
        self.path = home / "Library" / "LaunchAgents" / PLIST_NAME
        self.log_dir = home / "Library" / "Logs" / "ltcai"
        self.domain = f"gui/{os.getuid()}"
        self.target = f"{self.domain}/{LAUNCHD_LABEL}"

    def _ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = self.runner(["launchctl", *args])
        if check and result.returncode != 0:
            raise _failed(result, f"see {self.log_dir}/ltcai.err.log and `launchctl print {self.target}`")
        return result

    def require(self) -> None:
        probe = self.runner(["launchctl", "print", self.domain])
        if probe.returncode == 127:
            raise _unavailable("launchctl was not found, so there is no launchd to run the service")
        if probe.returncode != 0:
            # Over SSH without a login at the screen there is no GUI domain to join.
            raise _unavailable(f"the launchd domain {self.domain} is not available ({_why(probe)}); log in at the Mac's screen")

    def _loaded(self) -> subprocess.CompletedProcess[str] | None:
        result = self._ctl("print", self.target, check=False)
        return result if result.returncode == 0 else None

    def install(self) -> dict[str, Any]:
        self.require()
        python = service_argv(self.python)[0]
        content = render_plist(python, log_dir=self.log_dir, path_env=_service_path_env(python, self.env))
        previous = _read(self.path)
        self.log_dir.mkdir(parents=True, exist_ok=True)  # launchd does not create it
        _write_file(self.path, content)
        restarted = self._loaded() is not None
        if restarted:  # bootstrap refuses a loaded job; take the old one down first
            self._ctl("bootout", self.target)
        self._ctl("enable", self.target)  # undo an earlier `launchctl disable`
        self._ctl("bootstrap", self.domain, str(self.path))
        return {"changed": previous != content, "restarted": restarted}

    def uninstall(self) -> dict[str, Any]:
        self.require()
        loaded = self._loaded() is not None
        if loaded:
            self._ctl("bootout", self.target)
        present = self.path.exists()
        if present:
            self.path.unlink()
        return {"removed": loaded or present}

    def status(self) -> dict[str, Any]:
        self.require()
        loaded = self._loaded()
        details = loaded.stdout if loaded else ""
        state = _launchd_field(details, "state")
        return {
            "installed": self.path.exists(),
            "loaded": loaded is not None,
            "state": state or "not loaded",
            "running": state == "running",
            "pid": _launchd_field(details, "pid"),
            "last_exit": _launchd_field(details, "last exit code"),
        }

    def next_steps(self) -> list[str]:
        return [
            f"status: launchctl print {self.target}",
            f"logs:   tail -f {self.log_dir}/ltcai.out.log",
        ]


def _launchd_field(text: str, name: str) -> str | None:
    match = re.search(rf"^\s*{re.escape(name)} = (.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else None


# --------------------------------------------------------------------------- command


def _manager(platform: str, runner: Runner, env: Mapping[str, str], python: str | None) -> _Systemd | _Launchd:
    if platform.startswith("linux"):
        return _Systemd(runner, env, python)
    if platform == "darwin":
        return _Launchd(runner, env, python)
    raise _unavailable(f"ltcai can install a service with systemd (Linux) or launchd (macOS), not on {platform}")


def service_command(
    action: str,
    ui: Renderer,
    *,
    runner: Runner = run_command,
    platform: str = sys.platform,
    env: Mapping[str, str] | None = None,
    python: str | None = None,
) -> int:
    """Install, uninstall or show the user service; the exit status."""
    manager = _manager(platform, runner, dict(os.environ) if env is None else env, python)
    base = {"action": action, "manager": manager.manager, "path": str(manager.path)}
    if action == "install":
        result = manager.install()
        if ui.json_output:
            ui.emit_json({**base, **result, "command": service_argv(python)})
            return 0
        verb = "reinstalled and restarted" if result["restarted"] else "installed and started"
        ui.out.print(f"ltcai service {verb} ({manager.manager}): {manager.path}", markup=False, soft_wrap=True)
        for line in manager.next_steps():
            ui.out.print(f"  {line}", markup=False, soft_wrap=True)
        return 0
    if action == "uninstall":
        result = manager.uninstall()
        if ui.json_output:
            ui.emit_json({**base, **result})
        elif result["removed"]:
            ui.out.print(f"ltcai service stopped and removed: {manager.path}", markup=False, soft_wrap=True)
        else:
            ui.out.print("ltcai service is not installed; nothing to remove", markup=False)
        return 0
    if action == "status":
        status = manager.status()
        if ui.json_output:
            ui.emit_json({**base, **status})
            return 0
        ui.out.print(f"service:   {manager.manager} ({manager.path})", markup=False, soft_wrap=True)
        ui.out.print(f"installed: {'yes' if status['installed'] else 'no'}", markup=False)
        if isinstance(manager, _Systemd):
            ui.out.print(f"enabled:   {status['enabled']}", markup=False)
            ui.out.print(f"active:    {status['active']}", markup=False)
            if status["details"]:
                ui.out.print(status["details"], markup=False, soft_wrap=True)
        else:
            ui.out.print(f"state:     {status['state']}", markup=False)
            if status["pid"]:
                ui.out.print(f"pid:       {status['pid']}", markup=False)
            if status["last_exit"]:
                ui.out.print(f"last exit: {status['last_exit']}", markup=False)
        if not status["installed"]:
            ui.out.print("install it with `ltcai service install`", markup=False)
        return 0
    raise InvalidRequest(f"unknown service action {action!r}", hint="use install, uninstall or status")
