"""The marker lists shared by post-processing (SPEC.md §3) and the smoke classifier (§4).

One copy: post-processing strips exactly what the classifier calls leakage.
"""

from __future__ import annotations

import re

__all__ = ["BAD_MARKERS", "LEADING_ROLE_RE", "SPECIAL_TOKEN_RE", "USER_TURN_MARKERS"]

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

# ``user:`` / ``assistant:`` / ``system:`` at the very start (any case, surrounding spaces).
LEADING_ROLE_RE = re.compile(r"^\s*(?:user|assistant|system)\s*:\s*", re.IGNORECASE)

# Any ``<|…|>`` special token with up to 40 non-``|`` characters inside.
SPECIAL_TOKEN_RE = re.compile(r"<\|[^|]{0,40}\|>")
