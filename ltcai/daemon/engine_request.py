"""The parameters one chat sends an engine: the profile's, the request's, within the engine's rules.

Pure. The profile gives the sampling defaults and the stops that keep a model from running
on into the next turn (SPEC.md §7); the request's values win; the request's own fields
(``tools``, ``response_format``…) go as they are. Then the engine's :class:`RequestRules`:
a hosted model gets only the sampling the user set (the request, or the user layer of
the profile), at most ``max_stop`` stop sequences (the rest are returned: ltcai enforces
every stop on the output, ``compat.clean_answer`` / ``AnswerStream``), and ``max_tokens`` under the name the server wants.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..compat import Profile, generation_params
from ..engines.base import RequestRules

__all__ = ["engine_params"]

_USER_LAYERS = ("user",)


def engine_params(
    rules: RequestRules, profile: Profile, overrides: Mapping[str, Any], fields: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """``(params for the engine, stops it was not sent that ltcai must cut the output at)``."""
    params = generation_params(profile, overrides)
    if not rules.profile_sampling:
        params = {
            name: value
            for name, value in params.items()
            if name != "stop" and (name in overrides or profile.source_of(name) in _USER_LAYERS)
        }
        user_stops = list(profile.stop) if profile.source_of("stop") in _USER_LAYERS else []
        params["stop"] = list(dict.fromkeys([*user_stops, *overrides.get("stop", ())]))
    stops: list[str] = params.pop("stop", None) or []
    held: list[str] = []
    if rules.max_stop is not None and len(stops) > rules.max_stop:
        stops, held = stops[: rules.max_stop], stops[rules.max_stop :]
    if stops:
        params["stop"] = stops
    if "max_tokens" in params and rules.max_tokens_name != "max_tokens":
        params[rules.max_tokens_name] = params.pop("max_tokens")
    params.update(fields)
    return params, held
