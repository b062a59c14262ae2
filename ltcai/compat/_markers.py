"""The marker lists shared by post-processing (SPEC.md §3) and the smoke classifier (§4).

One copy: post-processing strips exactly what the classifier calls leakage.
"""

from __future__ import annotations

import re

__all__ = [
    "BAD_MARKERS",
    "HARMONY_MARKERS",
    "LEADING_ROLE_RE",
    "ROLE_LEAK_RE",
    "ROLE_WORDS",
    "SPECIAL_TOKEN_RE",
    "USER_TURN_MARKERS",
]

# Role/special tokens that must never reach a user.
BAD_MARKERS: tuple[str, ...] = (
    "<|im_start|>",
    "<|im_end|>",
    "<|user|>",
    "<|assistant|>",
    "<|endoftext|>",
    "### Instruction:",
    "### Response:",
    "[/INST]",
    "[INST]",
    "<s>",
)

# A model that ran on into the next user turn; cut at the first one found after position 0.
USER_TURN_MARKERS: tuple[str, ...] = ("<|user|>", "\nuser:", "\nUser:", "### Instruction:")

# The role names a model may echo at the start of its answer; both patterns below and the
# streaming post-processor (which must know every prefix of them) are built from this.
ROLE_WORDS: tuple[str, ...] = ("user", "assistant", "system")
_ROLE_ALT = "|".join(ROLE_WORDS)

# ``user:`` / ``assistant:`` / ``system:`` at the very start (any case, surrounding spaces).
LEADING_ROLE_RE = re.compile(rf"^\s*(?:{_ROLE_ALT})\s*:\s*", re.IGNORECASE)

# The smoke test's rule 4 (§4): only leading whitespace is allowed, not a space before the
# colon; LEADING_ROLE_RE is the wider pattern post-processing strips.
ROLE_LEAK_RE = re.compile(rf"^\s*(?:{_ROLE_ALT}):", re.IGNORECASE)

# gpt-oss "harmony" framing (§3 Improve): none of these may reach a user.
HARMONY_MARKERS: tuple[str, ...] = (
    "<|start|>",
    "<|channel|>",
    "<|constrain|>",
    "<|message|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
)

# Any ``<|…|>`` special token with up to 40 non-``|`` characters inside.
SPECIAL_TOKEN_RE = re.compile(r"<\|[^|]{0,40}\|>")
