"""Sampling parameters for one chat (SPEC.md §7): the profile's, with a request's on top."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._overrides import coerce
from ._profiles import Profile
from ._stops import merge_stops

__all__ = ["generation_params"]

_GENERATION_FIELDS = ("temperature", "top_p", "max_tokens")


def generation_params(
    profile: Profile, request_overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Sampling parameters for one chat (SPEC.md §7): the profile's; a request's non-null win.

    A request's ``stop`` *adds* to the profile's: those stops are what keeps the model from
    running on into the next turn, and a client asking for its own stops does not know them.
    """
    request = request_overrides or {}
    params: dict[str, Any] = {n: getattr(profile, n) for n in _GENERATION_FIELDS}
    for name in _GENERATION_FIELDS:
        if request.get(name) is not None:
            params[name] = coerce("request", name, request[name])
    extra = request.get("stop")
    extra_stops = coerce("request", "stop", extra) if extra is not None else ()
    params["stop"] = list(merge_stops(profile.stop, extra_stops))
    return params
