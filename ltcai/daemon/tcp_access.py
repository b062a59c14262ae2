"""What the TCP listener lets through without the bearer token, and the warning that earns.

By default nothing: every route needs the token. ``ollama_without_token`` opens Ollama's
``/api`` (for Ollama clients that cannot send a header), and only on a loopback address:
then any local process (any user on the machine) can use the models, which ``ltcai
status`` says for as long as it is on.
"""

from __future__ import annotations

from ..config.settings import Settings
from ..errors import InvalidRequest

__all__ = ["OPEN_PREFIX", "access_warnings", "ollama_open"]

OPEN_PREFIX = "/api/"  # Ollama's routes


def ollama_open(settings: Settings, *, loopback: bool) -> bool:
    """Whether ``/api`` is served without the token; refuses the opt-in off loopback."""
    value = settings.ollama_without_token
    if not isinstance(value, bool):
        raise InvalidRequest(f"ollama_without_token must be true or false, not {value!r}", code="invalid_config")
    if value and not loopback:
        raise InvalidRequest(
            f"ollama_without_token is for loopback only, and http is {settings.http}",
            hint="bind http to 127.0.0.1, or send the token from the Ollama client (a bearer Authorization header)",
            code="invalid_config",
        )
    return value


def access_warnings(settings: Settings) -> list[str]:
    if settings.http and settings.ollama_without_token is True:
        return [
            f"Ollama's /api on {settings.http} answers without the token (ollama_without_token = true): "
            "any local process can use your models"
        ]
    return []
