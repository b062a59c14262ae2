"""Where ltcai keeps things: XDG directories through platformdirs, overridable by env.

Overrides exist so tests, CI and several daemons on one machine never share state:
``LTCAI_DATA_DIR``, ``LTCAI_CONFIG_DIR``, ``LTCAI_SOCKET``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

__all__ = ["Paths", "default_paths"]

APP_NAME = "ltcai"


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
