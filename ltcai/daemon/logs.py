"""structlog set-up: a console renderer on a TTY, JSON lines otherwise (journald/launchd).

Context (job id, engine, model) is bound with contextvars, so every line a task logs
carries it without passing loggers around. Every line is also appended as JSON to
``logs/daemon.log`` (rotated at 10 MB, one old file kept), so ``ltcai logs`` works
whatever supervises the daemon.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog

from ..config.paths import DAEMON_LOG

__all__ = ["configure_logging"]

_ROTATE_BYTES = 10 << 20
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _JsonFileSink:
    """A structlog processor that appends each event as a JSON line to a file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self._file = self._open()

    def _open(self) -> TextIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        try:
            self._file.write(json.dumps(event_dict, default=str, ensure_ascii=False) + "\n")
            if self._file.tell() > _ROTATE_BYTES:
                self._file.close()
                os.replace(self.path, self.path.with_suffix(".log.1"))
                self._file = self._open()
        except OSError:
            pass  # a full disk must not take the daemon down with it
        return event_dict


def configure_logging(
    level: str = "info", *, stream: TextIO | None = None, json: bool | None = None, log_dir: Path | None = None
) -> None:
    """Configure structlog for the daemon. ``json=None`` picks by whether ``stream`` is a TTY."""
    stream = stream or sys.stdout
    if json is None:
        json = not stream.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if log_dir is not None:
        processors.append(_JsonFileSink(log_dir / DAEMON_LOG))
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level.lower(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
