"""Every marker ltcai knows, in one place: the catalogue of chat-template markers per
template (SPEC.md §3 Improve), and the 0.3.x lists shared by the named post-processing
steps (§3) and the smoke classifier (§4).

The catalogue says, per template, which markers end a turn (the answer is cut there),
which open a turn and carry a role word after them (``<|im_start|>assistant``), which
are header parts or turn openers with the role in the token itself (``<|user|>``), which
open a sequence (``<s>``), and the reasoning tags. ``_turns`` cleans answers with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

__all__ = [
    "BAD_MARKERS",
    "HARMONY_MARKERS",
    "LEADING_ROLE_RE",
    "MARKER_CATALOGUE",
    "REASONING_TAGS",
    "ROLE_LEAK_RE",
    "ROLE_WORDS",
    "SPECIAL_TOKEN_RE",
    "TURN_WORDS",
    "USER_TURN_MARKERS",
    "TemplateMarkers",
]


class TemplateMarkers(NamedTuple):
    """One chat template's markers, by what they do in an answer."""

    ends: tuple[str, ...]  # end of turn or of text: the answer ends here
    opens: tuple[str, ...] = ()  # open a turn; a role word follows (``<|im_start|>user``)
    headers: tuple[str, ...] = ()  # the rest of a turn's header (``<|user|>``, ``[/INST]``)
    begins: tuple[str, ...] = ()  # begin a sequence (BOS): dropped wherever they are


# Per template, the markers real models leak. A marker has one meaning across the table
# (``<|endoftext|>`` ends ChatML and Phi text alike): every model is cleaned with all of
# them, since a model's leaks follow its template, not its name (SmolLM2 is ChatML).
MARKER_CATALOGUE: Mapping[str, TemplateMarkers] = MappingProxyType(
    {
        "chatml": TemplateMarkers(ends=("<|im_end|>", "<|endoftext|>"), opens=("<|im_start|>",)),
        "llama3": TemplateMarkers(
            ends=("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"),
            opens=("<|start_header_id|>",),
            headers=("<|end_header_id|>",),
            begins=("<|begin_of_text|>",),
        ),
        "gemma": TemplateMarkers(ends=("<end_of_turn>",), opens=("<start_of_turn>",)),
        "mistral": TemplateMarkers(  # and Llama 2
            ends=("</s>",),
            headers=("[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "<<SYS>>", "<</SYS>>"),
            begins=("<s>",),
        ),
        "phi": TemplateMarkers(
            ends=("<|end|>", "<|endoftext|>"),
            headers=("<|user|>", "<|assistant|>", "<|system|>", "<|im_sep|>"),
        ),
        "deepseek": TemplateMarkers(
            ends=("<｜end▁of▁sentence｜>", "<|EOT|>"),
            headers=("<｜User｜>", "<｜Assistant｜>"),
            begins=("<｜begin▁of▁sentence｜>",),
        ),
        "command_r": TemplateMarkers(
            ends=("<|END_OF_TURN_TOKEN|>",),
            headers=("<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>", "<|SYSTEM_TOKEN|>"),
            begins=("<BOS_TOKEN>",),
        ),
        "granite": TemplateMarkers(
            ends=("<|end_of_text|>",), opens=("<|start_of_role|>",), headers=("<|end_of_role|>",)
        ),
        # gpt-oss: a gpt_oss profile routes channels first (``_harmony``); for any other
        # profile, harmony framing is a turn's header like the others.
        "harmony": TemplateMarkers(
            ends=("<|end|>", "<|return|>", "<|call|>"),
            opens=("<|start|>", "<|channel|>"),
            headers=("<|constrain|>", "<|message|>"),
        ),
    }
)

# The words a turn opener carries: roles, and harmony's channel names.
TURN_WORDS: tuple[str, ...] = (
    "system", "developer", "user", "assistant", "model", "tool", "ipython", "function", "chatbot",
    "analysis", "commentary", "final",
)  # fmt: skip

# Reasoning blocks (open, close): their text is the model's thinking, never the answer.
REASONING_TAGS: tuple[tuple[str, str], ...] = (("<think>", "</think>"), ("[THINK]", "[/THINK]"))

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
