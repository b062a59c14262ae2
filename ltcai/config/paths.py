"""Where ltcai keeps things: XDG directories through platformdirs, overridable by env.

Overrides exist so tests, CI and several daemons on one machine never share state:
``LTCAI_DATA_DIR``, ``LTCAI_CONFIG_DIR``, ``LTCAI_SOCKET``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

__all__ = ["Paths", "default_paths", "hf_hub_cache"]

APP_NAME = "ltcai"
DAEMON_LOG = "daemon.log"


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    config_dir: Path
    socket_path: Path

    @property
    def state_dir(self) -> Path:
        """Profiles, jobs and engine-process records."""
        return self.data_dir / "state"

    @property
    def models_dir(self) -> Path:
        """Downloads that do not live in the Hugging Face cache."""
        return self.data_dir / "models"

    @property
    def engines_dir(self) -> Path:
        """Managed virtual environments for engines."""
        return self.data_dir / "engines"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def daemon_log(self) -> Path:
        """The daemon's own log, JSON lines, whatever supervises it (``ltcai logs``)."""
        return self.logs_dir / DAEMON_LOG

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def token_file(self) -> Path:
        return self.config_dir / "token"


def _default_socket(data_dir: Path) -> Path:
    # The Docker/Podman/snapd convention: a per-user runtime dir that vanishes at logout.
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / APP_NAME / f"{APP_NAME}.sock"
    return data_dir / "run" / f"{APP_NAME}.sock"


def default_paths(env: dict[str, str] | None = None) -> Paths:
    """The paths for this user, honouring the ``LTCAI_*`` overrides in ``env``."""
    env = dict(os.environ) if env is None else env
    data_dir = Path(env.get("LTCAI_DATA_DIR") or platformdirs.user_data_dir(APP_NAME)).expanduser()
    config_dir = Path(env.get("LTCAI_CONFIG_DIR") or platformdirs.user_config_dir(APP_NAME)).expanduser()
    socket = env.get("LTCAI_SOCKET")
    socket_path = Path(socket).expanduser() if socket else _default_socket(data_dir)
    return Paths(data_dir=data_dir, config_dir=config_dir, socket_path=socket_path)


def hf_hub_cache(env: Mapping[str, str] | None = None) -> Path:
    """The Hugging Face hub cache, read from ``env`` the way huggingface_hub reads it.

    huggingface_hub's ``constants.HF_HUB_CACHE`` is this rule frozen at its import; the
    client resolves ids without importing huggingface_hub (~150 ms), and a download reads
    the environment again each time, so both call this.
    """
    env = os.environ if env is None else env

    def expand(path: str) -> str:
        return os.path.expandvars(os.path.expanduser(path))

    xdg_cache = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    hf_home = expand(env.get("HF_HOME") or os.path.join(xdg_cache, "huggingface"))
    legacy = env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(hf_home, "hub")
    return Path(expand(env.get("HF_HUB_CACHE") or legacy))
