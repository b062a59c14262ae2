"""Hugging Face references: ``hf.co/org/repo:Q4_K_M``, ``org/repo``, and what they select."""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["HFRef", "parse_hf_reference"]


class HFRef(NamedTuple):
    """A Hugging Face repo and what to pick in it: a quant (``Q4_K_M``) or a file name."""

    repo_id: str
    selector: str | None = None

    @property
    def filename(self) -> str | None:
        """The selector when it names a file (``*.gguf``), else None."""
        if self.selector and self.selector.lower().endswith(".gguf"):
            return self.selector
        return None

    @property
    def quant(self) -> str | None:
        """The selector when it names a quantization (``Q4_K_M``), else None."""
        return self.selector if self.selector and not self.filename else None


# HF's own rules (huggingface_hub.utils.validate_repo_id): ASCII word chars, '-', '.',
# not starting or ending with '-' or '.', at most 96 characters per part.
_HF_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_HF_SELECTOR = r"[A-Za-z0-9_][A-Za-z0-9_.+-]*"
_HF_REPO = re.compile(rf"(?P<repo>{_HF_PART}/{_HF_PART})/?(?::(?P<selector>{_HF_SELECTOR}))?")
_HF_HOST = re.compile(r"(?:https?://)?(?:www\.)?(?:hf\.co|huggingface\.co)/", re.IGNORECASE)


def parse_hf_reference(model: str) -> HFRef | None:
    """Recognize ``hf.co/org/repo:Q4_K_M``, ``huggingface.co/org/repo`` and ``org/repo[:sel]``.

    Pass ``Resolution.resolved_model`` (no provider prefix). The llama.cpp engine uses the
    selector to pick a GGUF file; ``:latest`` (Ollama's spelling of "the default") gives
    no selector. A scheme is accepted only with the host form (a URL copied from the
    browser). Anything else (``llama3.2:1b``, ``/abs/x.gguf``, ``a/b/c``) is None.
    """
    if not isinstance(model, str):
        return None
    text = model.strip()
    host = _HF_HOST.match(text)
    if host is None and "://" in text:
        return None  # some other site
    match = _HF_REPO.fullmatch(text[host.end():] if host else text)
    if match is None:
        return None
    repo_id = match["repo"]
    if "--" in repo_id or ".." in repo_id or repo_id.lower().endswith(".git"):
        return None
    selector = match["selector"]
    if selector is not None and selector.lower() == "latest":
        selector = None
    return HFRef(repo_id, selector)
