"""A model folder in transformers' layout, as test data: Llama 3.2 Instruct's config files, cut down.

The shape that matters for profile layer 2 is kept: EOS ids listed in
``generation_config.json`` beside the ``eos_token`` text, special tokens as AddedToken
dicts in ``added_tokens_decoder``, the template inside ``tokenizer_config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["GENERATION_CONFIG", "MODEL_CONFIG", "TEMPLATE", "TOKENIZER_CONFIG", "write_folder"]

TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
)
TOKENIZER_CONFIG: dict[str, Any] = {
    "added_tokens_decoder": {
        "128000": {"content": "<|begin_of_text|>", "special": True},
        "128001": {"content": "<|end_of_text|>", "special": True},
        "128008": {"content": "<|eom_id|>", "special": True},
        "128009": {"content": "<|eot_id|>", "special": True},
    },
    "bos_token": "<|begin_of_text|>",
    "eos_token": "<|eot_id|>",
    "chat_template": TEMPLATE,
    "model_max_length": 131072,
    "tokenizer_class": "PreTrainedTokenizerFast",
}
GENERATION_CONFIG = {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "temperature": 0.6, "top_p": 0.9}
MODEL_CONFIG = {"model_type": "llama", "max_position_embeddings": 131072, "architectures": ["LlamaForCausalLM"]}


def write_folder(folder: Path, **files: Any) -> Path:
    """``write_folder(path, tokenizer_config__json={...})``: ``__`` in a name stands for ``.``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name.replace("__", ".")
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return folder
