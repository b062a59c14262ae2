"""The parameters one chat sends an engine: the profile's, the request's, within the engine's rules.

Pure. The profile gives the sampling defaults and the stops that keep a model from running
on into the next turn (SPEC.md §7); the request's values win; the request's own fields
(``tools``, ``response_format``…) go as they are. Then the engine's :class:`RequestRules`:
a hosted model gets only the sampling the user set (the request, or the user layer of
the profile), at most ``max_stop`` stop sequences (the rest are returned, for ltcai to
enforce on the output), and ``max_tokens`` under the name the server wants.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..compat import Profile, generation_params
from ..engines.base import RequestRules

__all__ = ["StopCutter", "cut_at_stops", "engine_params"]

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


# The stops an engine could not take are cut here. (When compat's stop enforcement on
# the output lands, these two go: it enforces every stop, held or sent.)


def cut_at_stops(text: str, stops: list[str]) -> str:
    """``text`` up to the first of ``stops`` (all of it when none occurs)."""
    found = [at for at in (text.find(s) for s in stops if s) if at != -1]
    return text[: min(found)] if found else text


class StopCutter:
    """:func:`cut_at_stops` for a stream: holds back only what could be a stop's start."""

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._keep = max((len(s) for s in self._stops), default=1) - 1
        self._pending = ""
        self._stopped = False

    def feed(self, text: str) -> str:
        if not self._stops:
            return text
        if self._stopped:
            return ""
        self._pending += text
        cut = cut_at_stops(self._pending, self._stops)
        if len(cut) < len(self._pending):
            self._stopped, self._pending = True, ""
            return cut
        out, self._pending = (
            (self._pending[: -self._keep], self._pending[-self._keep :]) if self._keep else (self._pending, "")
        )
        return out

    def finish(self) -> str:
        out, self._pending = self._pending, ""
        return "" if self._stopped else out
