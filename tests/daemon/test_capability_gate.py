"""What a measured verdict means for a request and for Ollama's capability list (pure)."""

from __future__ import annotations

import base64
import struct
import zlib
from types import SimpleNamespace

import pytest

from ltcai.compat import build_profile
from ltcai.daemon.capability_gate import check_call, needed_capabilities, ollama_capabilities
from ltcai.daemon.probes import _red_png
from ltcai.daemon.validation import ChatCall
from ltcai.errors import FieldError

WHEN = "2026-12-01T10:00:00+00:00"
TOOLS = {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}
SCHEMA = {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}
IMAGE = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]


def _call(fields=None, content="hi"):
    return ChatCall(model="m", messages=[{"role": "user", "content": content}], overrides={}, fields=fields or {})


def _loaded(profile):
    return SimpleNamespace(profile=profile)


def test_needed_capabilities_follow_the_request():
    assert needed_capabilities(_call()) == []
    assert needed_capabilities(_call(TOOLS)) == ["tools"]
    assert needed_capabilities(_call({**TOOLS, "tool_choice": "none"})) == []
    assert needed_capabilities(_call({"response_format": {"type": "json_object"}})) == []
    assert needed_capabilities(_call(SCHEMA, IMAGE)) == ["json_schema", "vision"]


@pytest.mark.parametrize(("key", "fields", "param"), [("tools", TOOLS, "tools"), ("json_schema", SCHEMA, "response_format")])
def test_only_a_measured_failure_refuses(key, fields, param):
    profile = build_profile("m")
    check_call(_call(fields), _loaded(profile))  # untested: let through
    check_call(_call(fields), _loaded(profile.with_capability(key, "degraded", "slow", WHEN)))
    failed = profile.with_capability(key, "failed", "no tool call", WHEN)
    with pytest.raises(FieldError) as caught:
        check_call(_call(fields), _loaded(failed))
    assert caught.value.code == "capability_failed" and caught.value.param == param
    assert f"its {key} probe failed on 2026-12-01: no tool call" in caught.value.message
    assert "ltcai prepare m --probe" in caught.value.hint
    check_call(_call(), _loaded(failed))  # a request that does not need it is not refused


def test_ollama_list_drops_failed_and_adds_measured():
    declared = ("completion", "tools", "embedding")
    profile = build_profile("m")
    assert ollama_capabilities(declared, None) == list(declared)
    assert ollama_capabilities(declared, profile) == list(declared)  # nothing measured: as declared
    measured = profile.with_capability("tools", "failed", "x", WHEN).with_capability("vision", "ok", "saw red", WHEN)
    assert ollama_capabilities(declared, measured) == ["completion", "embedding", "vision"]


def test_the_vision_probe_picture_is_a_valid_plain_red_png():
    png = base64.b64decode(_red_png(4))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height, depth, colour = struct.unpack(">IIBB", png[16:26])
    assert (width, height, depth, colour) == (4, 4, 8, 2)
    (length,) = struct.unpack(">I", png[33:37])
    assert png[37:41] == b"IDAT"
    rows = zlib.decompress(png[41 : 41 + length])
    assert rows == (b"\x00" + b"\xff\x00\x00" * 4) * 4
