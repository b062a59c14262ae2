"""Model id validation (SPEC.md §5 **Improve**): ids reach ltcai from the control API,
so a bad one is refused with a stable ``rule`` code before anything downstream can
create a file, spawn a process or print it to a terminal. Pure: paths are compared
lexically, nothing is read from disk.
"""

from __future__ import annotations

import os
import posixpath
import re
import unicodedata
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from ..errors import InvalidModelId

__all__ = [
    "MAX_MODEL_ID_LENGTH",
    "VALIDATION_RULES",
    "check_resolved",
    "check_text",
    "preview",
    "validate_model_id",
]

MAX_MODEL_ID_LENGTH = 512

# Stable codes carried by ``InvalidModelId.rule``; clients and tests match on them.
VALIDATION_RULES: tuple[str, ...] = (
    "not_a_string",
    "empty",
    "too_long",
    "control_character",
    "path_traversal",
    "absolute_path_outside_roots",
    "leading_dash",
    "percent_sign",
)

# What produced ``Resolution.resolved_model``: the id as typed (less any provider

_HINT = (
    "A model id looks like 'smollm2', 'org/repo', 'hf.co/org/repo:Q4_K_M', "
    "'ollama:llama3.2:1b', or an absolute path to a .gguf file inside an allowed model folder."
)


def validate_model_id(model_id: str, *, allowed_roots: Sequence[Path | str] = ()) -> str:
    """Return ``model_id`` stripped of surrounding blanks, or raise :class:`InvalidModelId`.

    Relative ids (``org/repo``, ``models/x.gguf``) are names, never paths: an engine must
    not resolve them against its working directory. Only absolute and ``~`` paths are
    checked against ``allowed_roots``, lexically (no symlinks followed, no ``~`` expanded:
    a ``~`` path is inside only a root also written with ``~``).
    """
    text = check_text(model_id, what="model id")
    _check_path_rules(text)
    _check_roots(text, allowed_roots)
    return text


def check_text(value: object, *, what: str) -> str:
    """The rules that make a string safe to store, log and print (no path rules)."""
    if value is None:
        raise InvalidModelId(f"{what} is missing", rule="empty", hint=_HINT)
    if not isinstance(value, str):
        raise InvalidModelId(
            f"{what} must be a string, got {type(value).__name__}", rule="not_a_string", hint=_HINT
        )
    # Only the blanks a shell or a copy-paste adds; any other edge character is inspected.
    text = value.strip(" \t\r\n")
    if not text:
        raise InvalidModelId(f"{what} is empty", rule="empty", hint=_HINT)
    if len(text) > MAX_MODEL_ID_LENGTH:
        raise InvalidModelId(
            f"{what} is {len(text)} characters long; the limit is {MAX_MODEL_ID_LENGTH}",
            rule="too_long",
            hint=_HINT,
        )
    _check_characters(text, what=what)
    return text


def _is_forbidden_char(char: str) -> bool:
    # Cc: C0/C1 controls, NUL, DEL (terminal escapes). Cf: bidi overrides/isolates, zero
    # width and tag characters that make an id read differently than it is. Zl/Zp: line
    # breaks that split log lines. Cs: lone surrogates cannot become a file name.
    return unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp", "Cs"}


def _check_characters(text: str, *, what: str) -> None:
    for position, char in enumerate(text):
        if _is_forbidden_char(char):
            raise InvalidModelId(
                f"{what} contains the control or invisible character U+{ord(char):04X} "
                f"at position {position}: {preview(text)}",
                rule="control_character",
                hint=_HINT,
            )


def preview(text: str, limit: int = 80) -> str:
    """An id as it is safe to show: escaped (no raw controls reach a terminal) and short."""
    shown = ascii(text[:limit])
    return shown + "…" if len(text) > limit else shown


# ``%2e`` too: an id may end up in a URL path that a server decodes before use.
_DOT_DOT = {"..", "%2e%2e", ".%2e", "%2e."}
_SEGMENT_SPLIT = re.compile(r"[/\\:]")
_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:[/\\]|\\)")


def _check_path_rules(text: str) -> None:
    """Rules for any id, wherever it came from (typed, alias, plugin, engine)."""
    # ``:`` separates segments too: Ollama maps ``name:tag`` onto manifest paths. The id is
    # also checked percent-decoded (``..%2f..`` in a URL a server decodes) and NFKC-folded
    # (fullwidth ``．．／`` becomes ``../`` in any tool that normalizes Unicode).
    forms = {text, urllib.parse.unquote(text), unicodedata.normalize("NFKC", text)}
    if any(part.lower() in _DOT_DOT for form in forms for part in _SEGMENT_SPLIT.split(form)):
        raise InvalidModelId(
            f"model id contains a '..' path segment: {preview(text)}",
            rule="path_traversal",
            hint=_HINT,
        )
    if text.startswith("-"):
        # Engines hand ids to CLIs (``lms get``, ``ollama pull``): never let one read as an option.
        raise InvalidModelId(
            f"model id starts with '-' and could be read as a command-line option: "
            f"{preview(text)}",
            rule="leading_dash",
            hint=_HINT,
        )
    if "%" in text:
        # No engine names a model with '%' (HF repos, Ollama tags, GGUF files, provider ids),
        # and an id with one means two things once a server percent-decodes it (``a%00b``).
        raise InvalidModelId(
            f"model id contains '%', which no engine uses in a model name: {preview(text)}",
            rule="percent_sign",
            hint=_HINT,
        )


def _check_roots(text: str, allowed_roots: Sequence[Path | str]) -> None:
    """Only for what a caller typed: a path must lie in a folder the user allowed."""
    if _is_absolute(text) and not _inside_any(text, allowed_roots):
        raise InvalidModelId(
            _outside_message(text, allowed_roots),
            rule="absolute_path_outside_roots",
            hint=_outside_hint(allowed_roots),
        )


def _is_absolute(text: str) -> bool:
    return text.startswith(("/", "~")) or bool(_WINDOWS_ABSOLUTE.match(text))


def _inside_any(text: str, allowed_roots: Sequence[Path | str]) -> bool:
    if _WINDOWS_ABSOLUTE.match(text):
        return False  # the daemon runs on POSIX; no root can hold a Windows path
    path = posixpath.normpath(text)
    return any(_inside(path, root) for root in allowed_roots)


def _inside(path: str, root: Path | str) -> bool:
    base = os.fspath(root)
    base = posixpath.normpath(base) if base else base
    if not _is_absolute(base) or _WINDOWS_ABSOLUTE.match(base):
        return False  # a relative root would mean "relative to wherever the daemon runs"
    if base == "/":
        return path.startswith("/")
    return path == base or path.startswith(base + "/")


def _outside_message(text: str, allowed_roots: Sequence[Path | str]) -> str:
    if not allowed_roots:
        return f"model id is an absolute path and no model folder is allowed: {preview(text)}"
    return f"model id is a path outside the allowed model folders: {preview(text)}"


def _outside_hint(allowed_roots: Sequence[Path | str]) -> str:
    folders = ", ".join(repr(os.fspath(root)) for root in allowed_roots) or "none configured"
    return (
        f"Put the file in an allowed model folder ({folders}) or add its folder to the "
        "allowed model folders in the config; write the full path, '~' is not expanded. "
        + _HINT
    )


def check_resolved(value: object, *, what: str) -> str:
    """Every rule except the roots (see :func:`resolve` for why)."""
    text = check_text(value, what=what)
    _check_path_rules(text)
    return text
