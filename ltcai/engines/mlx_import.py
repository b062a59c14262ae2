"""Import a GGUF model into an MLX model folder: what ``ltcai import`` runs.

The result is a folder ``mlx_lm`` loads like any Hugging Face MLX checkpoint:
``config.json``, ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``,
``generation_config.json`` and ``ltcai_import.json`` (where it came from).

- Tensors: ``mlx.core.load`` reads GGUF itself. Q4_0, Q4_1 and Q8_0 tensors come back
  still quantized, as MLX affine ``weight``/``scales``/``biases`` triples with group size
  32 — the same numbers, so nothing is lost and the folder is as small as the GGUF.
  Other types (F16, F32, K-quants) come back as float arrays and are stored as they are.
- Names: llama.cpp's (``blk.N.attn_q``) become Hugging Face llama's
  (``model.layers.N.self_attn.q_proj``). llama.cpp's converter permutes the rows of the
  q/k projections so its RoPE can rotate adjacent pairs; the rows are put back (rows
  only, so it works on packed quantized weights too), and the model uses the standard
  (``rope_traditional = false``) rotation.
- Tokenizer: rebuilt from the GGUF vocabulary with ``tokenizers``: the byte-level BPE of
  ``tokenizer.ggml.model = gpt2`` vocabularies, with the pre-tokenizer llama.cpp uses
  for the file's ``tokenizer.ggml.pre`` (SmolLM2's ``smollm`` splits digits first).
  Control tokens become special added tokens; the chat template, BOS/EOS/EOT go to
  ``tokenizer_config.json`` / ``generation_config.json``.

Supported: the ``llama`` architecture (Llama 1/2/3 shapes, SmolLM, TinyLlama…) without
per-frequency RoPE factors. Anything else is refused with the reason, not half-converted.

This file runs in the *engine's* Python as a script (``python -I mlx_import.py GGUF OUT``:
``-I`` keeps this folder, with its ``mlx.py``, off ``sys.path``), where ltcai itself may
not be installed: it imports only the standard library at the top, and ``mlx`` and
``tokenizers`` (both installed with ``mlx-lm``) where they are used. Blocking; the
output folder appears whole or not at all (built beside it, then renamed into place).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "IMPORT_RECORD",
    "IMPORTER_VERSION",
    "NATIVE_QUANT_TYPES",
    "SUPPORTED_ARCHITECTURES",
    "GGUFImportError",
    "ImportResult",
    "build_config",
    "build_tokenizer",
    "check_architecture",
    "convert_weights",
    "import_gguf",
    "is_imported_from",
    "main",
    "valid_model_name",
]

IMPORTER_VERSION = 1
IMPORT_RECORD = "ltcai_import.json"
SUPPORTED_ARCHITECTURES: tuple[str, ...] = ("llama",)
# What mlx.core.load keeps packed; it also reads F32/F16/BF16 and converts a few other
# types to float16, but not all (Q5_0, Q3_K, IQ* fail), so only these are promised.
NATIVE_QUANT_TYPES: tuple[str, ...] = ("Q4_0", "Q4_1", "Q8_0")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

ProgressFn = Callable[[str], None]


class GGUFImportError(Exception):
    """The GGUF cannot be imported; ``message`` says why, ``hint`` what to do."""

    def __init__(self, message: str, hint: str | None = None, code: str = "import_failed") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code


@dataclass(frozen=True)
class ImportResult:
    path: Path
    config: dict[str, Any]
    tensors: int
    bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "config": self.config,
            "tensors": self.tensors,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }


def valid_model_name(name: str) -> bool:
    """A name an imported model can have: one folder name, no path, no leading dot/dash."""
    return bool(_NAME.fullmatch(name)) and ".." not in name


# ------------------------------------------------------------------------------ reading


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    import mlx.core as mx

    try:
        return mx.load(str(path), return_metadata=True)  # type: ignore[return-value]
    except (RuntimeError, ValueError, OSError) as exc:
        if "gguf_tensor_to_f16" in str(exc):
            # mlx's GGUF reader names no tensor or type when it cannot convert one.
            raise GGUFImportError(
                f"{path.name} holds tensors in a quantization MLX cannot read (it reads "
                f"{', '.join(NATIVE_QUANT_TYPES)}, F16 and F32; K-quants such as Q4_K_M and Q5_0 mostly not)",
                hint="import a Q4_0, Q4_1 or Q8_0 GGUF of the model, or serve this file with the llamacpp engine",
                code="unsupported_quantization",
            ) from None
        raise GGUFImportError(
            f"{path} cannot be read as GGUF: {exc}",
            hint="point at a whole .gguf file (a partial download looks like this)",
            code="invalid_model_file",
        ) from None


def _value(meta: dict[str, Any], key: str, default: Any = None) -> Any:
    """A metadata value as plain Python: 0-d arrays become numbers, others lists."""
    value = meta.get(key, default)
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _require(meta: dict[str, Any], key: str) -> Any:
    value = _value(meta, key)
    if value is None:
        raise GGUFImportError(f"the GGUF has no {key!r}; it is not a complete llama model", code="unsupported_model")
    return value


# ------------------------------------------------------------------------------- config


def check_architecture(arch: str | None) -> None:
    """Refuse a GGUF whose ``general.architecture`` the importer cannot convert.

    ltcai calls this before starting the import (from the header alone), so an
    unsupported model is refused before mlx reads a byte of tensor data.
    """
    if arch not in SUPPORTED_ARCHITECTURES:
        raise GGUFImportError(
            f"the {arch!r} architecture cannot be imported yet (only {', '.join(map(repr, SUPPORTED_ARCHITECTURES))})",
            hint="use the llamacpp engine for this model, or an MLX conversion from the Hugging Face hub",
            code="unsupported_model",
        )


def build_config(meta: dict[str, Any], weights: dict[str, Any]) -> dict[str, Any]:
    """``config.json`` for mlx_lm's (and transformers') llama from the GGUF's metadata."""
    check_architecture(_value(meta, "general.architecture"))
    if _value(meta, "llama.expert_count"):
        raise GGUFImportError("mixture-of-experts llama models cannot be imported yet", code="unsupported_model")
    if "rope_freqs.weight" in weights:
        raise GGUFImportError(
            "this model scales RoPE per frequency (Llama 3.1 style); the importer cannot rebuild that yet",
            hint="use the llamacpp engine, or an mlx-community conversion of the model",
            code="unsupported_model",
        )
    hidden = int(_require(meta, "llama.embedding_length"))
    heads = int(_require(meta, "llama.attention.head_count"))
    kv_heads = int(_value(meta, "llama.attention.head_count_kv", heads))
    head_dim = int(_value(meta, "llama.attention.key_length", hidden // heads))
    rope_dims = int(_value(meta, "llama.rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise GGUFImportError(f"partial RoPE ({rope_dims} of {head_dim} dims) is not supported", code="unsupported_model")
    tokens = _value(meta, "tokenizer.ggml.tokens") or []
    vocab = int(_value(meta, "llama.vocab_size", len(tokens)) or len(tokens))
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": int(_require(meta, "llama.block_count")),
        "intermediate_size": int(_require(meta, "llama.feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": float(_value(meta, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(_value(meta, "llama.rope.freq_base", 10000.0)),
        "rope_traditional": False,
        "max_position_embeddings": int(_value(meta, "llama.context_length", 2048)),
        "vocab_size": vocab,
        "tie_word_embeddings": "output.weight" not in weights,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
    }
    scaling = _value(meta, "llama.rope.scaling.type")
    if scaling and scaling != "none":
        if scaling != "linear":
            raise GGUFImportError(f"RoPE scaling {scaling!r} is not supported", code="unsupported_model")
        config["rope_scaling"] = {"type": "linear", "factor": float(_require(meta, "llama.rope.scaling.factor"))}
    for key, name in (("bos_token_id", "bos"), ("eos_token_id", "eos")):
        token_id = _value(meta, f"tokenizer.ggml.{name}_token_id")
        if token_id is not None:
            config[key] = int(token_id)
    return config


# ------------------------------------------------------------------------------ weights

_LAYER_PARTS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_PARTS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_TENSOR = re.compile(r"(?:blk\.(?P<layer>\d+)\.)?(?P<part>\w+)\.(?P<kind>weight|scales|biases)")


def hf_name(gguf_name: str) -> str:
    """``blk.3.attn_q.scales`` → ``model.layers.3.self_attn.q_proj.scales``."""
    match = _TENSOR.fullmatch(gguf_name)
    table = _LAYER_PARTS if match and match["layer"] is not None else _TOP_PARTS
    if match is None or match["part"] not in table:
        raise GGUFImportError(f"unexpected tensor {gguf_name!r} for a llama model", code="unsupported_model")
    prefix = f"model.layers.{match['layer']}." if match["layer"] is not None else ""
    return f"{prefix}{table[match['part']]}.{match['kind']}"


def _unpermute(array: Any, n_head: int) -> Any:
    """Undo llama.cpp's q/k row permutation (``reshape(n, 2, d/2).swapaxes(1, 2)``)."""
    rows = array.shape[0]
    half = rows // n_head // 2
    return array.reshape(n_head, half, 2, *array.shape[1:]).swapaxes(1, 2).reshape(array.shape)


def convert_weights(weights: dict[str, Any], config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tensors under Hugging Face names, q/k un-permuted; and the quantization config.

    Quantized tensors keep their packing; ``quantization`` names every quantized module
    with its bits (Q4_x: 4, Q8_0: 8) so mlx_lm rebuilds exactly those layers.
    """
    out: dict[str, Any] = {}
    for name, array in weights.items():
        new = hf_name(name)
        if ".self_attn.q_proj." in new:
            array = _unpermute(array, config["num_attention_heads"])
        elif ".self_attn.k_proj." in new:
            array = _unpermute(array, config["num_key_value_heads"])
        out[new] = array
    if config["tie_word_embeddings"]:
        out = {k: v for k, v in out.items() if not k.startswith("lm_head.")}
    layers: dict[str, dict[str, int]] = {}
    for name, array in out.items():
        if name.endswith(".scales"):
            module = name[: -len(".scales")]
            packed = out[f"{module}.weight"]
            group_size = 32  # every GGUF type mlx keeps packed uses blocks of 32
            in_features = array.shape[-1] * group_size
            layers[module] = {"group_size": group_size, "bits": packed.shape[-1] * 32 // in_features}
    quantization: dict[str, Any] = {}
    if layers:
        counts: dict[int, int] = {}
        for spec in layers.values():
            counts[spec["bits"]] = counts.get(spec["bits"], 0) + 1
        bits = max(counts, key=lambda b: counts[b])
        quantization = {"group_size": 32, "bits": bits, "mode": "affine"}
        quantization.update({m: s for m, s in sorted(layers.items()) if s["bits"] != bits})
    return out, quantization


# ---------------------------------------------------------------------------- tokenizer

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
# tokenizer.ggml.pre → the regexes llama.cpp (src/llama-vocab.cpp) splits with, in order.
_PRE_SPLITS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("gpt-2", "phi-2", "mpt", "olmo", "jais"), (_GPT2,)),
    **dict.fromkeys(
        ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"), (r"\p{N}", _GPT2)
    ),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "dbrx", "smaug-bpe"), (_LLAMA3,)),
    **dict.fromkeys(("qwen2", "stablelm2", "deepseek-r1-qwen", "megrez"), (_QWEN2,)),
}
# llama.cpp sets ignore_merges for these: a word already in the vocabulary is one token.
_IGNORE_MERGES = {"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "dbrx", "smaug-bpe"}
_CONTROL, _USER_DEFINED = 3, 4


def build_tokenizer(meta: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A ``tokenizers.Tokenizer`` and the ``tokenizer_config.json`` for it."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    kind = _value(meta, "tokenizer.ggml.model")
    pre = _value(meta, "tokenizer.ggml.pre") or "default"
    if kind != "gpt2":
        raise GGUFImportError(
            f"the {kind!r} tokenizer cannot be rebuilt yet (only byte-level BPE, 'gpt2')",
            hint="use the llamacpp engine for this model",
            code="unsupported_model",
        )
    if pre not in _PRE_SPLITS:
        raise GGUFImportError(
            f"the pre-tokenizer {pre!r} is not known to the importer",
            hint="known: " + ", ".join(sorted(_PRE_SPLITS)),
            code="unsupported_model",
        )
    tokens: list[str] = _require(meta, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _value(meta, "tokenizer.ggml.merges") or []]
    types = _value(meta, "tokenizer.ggml.token_type") or [1] * len(tokens)
    vocab: dict[str, int] = {}
    for index, text in enumerate(tokens):
        vocab.setdefault(text, index)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=pre in _IGNORE_MERGES))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(rx), behavior="isolated") for rx in _PRE_SPLITS[pre]]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_tokens(
        [
            AddedToken(text, special=kind_ == _CONTROL, normalized=False)
            for text, kind_ in zip(tokens, types)
            if kind_ in (_CONTROL, _USER_DEFINED)
        ]
    )

    def token(key: str) -> str | None:
        token_id = _value(meta, f"tokenizer.ggml.{key}_token_id")
        return tokens[token_id] if isinstance(token_id, int) and 0 <= token_id < len(tokens) else None

    bos, eos, unk, pad = token("bos"), token("eos"), token("unknown"), token("padding")
    add_bos = bool(_value(meta, "tokenizer.ggml.add_bos_token", False)) and bos is not None
    add_eos = bool(_value(meta, "tokenizer.ggml.add_eos_token", False)) and eos is not None
    if add_bos or add_eos:
        # llama.cpp adds BOS (and rarely EOS) itself; the HF tokenizer must do the same.
        ends = [(t, on) for t, on in ((bos, add_bos), (eos, add_eos))]
        first = [bos] if add_bos else []
        last = [eos] if add_eos else []
        tokenizer.post_processor = processors.TemplateProcessing(
            single=" ".join([*first, "$A", *last]),
            pair=" ".join([*first, "$A", *last, *first, "$B", *last]),
            special_tokens=[(t, vocab[t]) for t, on in ends if on and t is not None],
        )
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(_value(meta, "llama.context_length", 2048) or 2048),
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
    }
    for key, text in (("bos_token", bos), ("eos_token", eos), ("unk_token", unk), ("pad_token", pad)):
        if text is not None:
            config[key] = text
    template = _value(meta, "tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    return tokenizer, config


def _eos_ids(meta: dict[str, Any]) -> list[int]:
    """Every id that ends a turn: EOS, and EOT/EOM where the model has them (Llama 3)."""
    ids: list[int] = []
    for key in ("eos", "eot", "eom"):
        value = _value(meta, f"tokenizer.ggml.{key}_token_id")
        if isinstance(value, int) and value not in ids:
            ids.append(value)
    return ids


# ------------------------------------------------------------------------------- import


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _source_stamp(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"source": str(path), "source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}


def is_imported_from(folder: Path, gguf: Path) -> bool:
    """True when ``folder`` is a finished import of this very file (same size and mtime)."""
    try:
        record = json.loads((folder / IMPORT_RECORD).read_text())
        stamp = _source_stamp(gguf)
    except (OSError, ValueError):
        return False
    return (
        (folder / "config.json").is_file()
        and record.get("importer_version") == IMPORTER_VERSION
        and all(record.get(k) == v for k, v in stamp.items())
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def import_gguf(
    gguf: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    force: bool = False,
    progress: ProgressFn = _say,
) -> ImportResult:
    """Convert ``gguf`` into an MLX model folder at ``out_dir``.

    Raises :class:`GGUFImportError` for a file that is missing, unreadable or of an
    unsupported kind, and when ``out_dir`` exists and ``force`` is not set.
    """
    import mlx.core as mx

    started = time.perf_counter()
    source, target = Path(gguf).expanduser().resolve(), Path(out_dir).expanduser()
    if not source.is_file():
        raise GGUFImportError(f"no GGUF file at {source}", hint="check the path", code="model_not_found")
    if target.exists() and not force:
        raise GGUFImportError(
            f"{target} already exists", hint="pass --force to import again over it", code="already_exists"
        )
    progress(f"reading {source.name}")
    weights, meta = _read(source)
    config = build_config(meta, weights)
    progress(
        f"llama: {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, "
        f"{config['num_attention_heads']}/{config['num_key_value_heads']} heads, vocab {config['vocab_size']}"
    )
    tokenizer, tokenizer_config = build_tokenizer(meta)
    converted, quantization = convert_weights(weights, config)
    if quantization:
        config["quantization"] = quantization
        config["quantization_config"] = quantization
    eos_ids = _eos_ids(meta)
    if eos_ids:
        config["eos_token_id"] = eos_ids if len(eos_ids) > 1 else eos_ids[0]

    target.parent.mkdir(parents=True, exist_ok=True)
    building = target.parent / f".{target.name}.importing-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    try:
        progress(f"writing {len(converted)} tensors")
        mx.save_safetensors(str(building / "model.safetensors"), converted, metadata={"format": "mlx"})
        tokenizer.save(str(building / "tokenizer.json"))
        _write_json(building / "tokenizer_config.json", tokenizer_config)
        _write_json(building / "config.json", config)
        generation = {k: config[k] for k in ("bos_token_id", "eos_token_id") if k in config}
        _write_json(building / "generation_config.json", generation)
        record = {
            "importer_version": IMPORTER_VERSION,
            **_source_stamp(source),
            "name": _value(meta, "general.name"),
            "imported_at": time.time(),
        }
        _write_json(building / IMPORT_RECORD, record)
        _replace_dir(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    size = sum(f.stat().st_size for f in target.iterdir() if f.is_file())
    seconds = time.perf_counter() - started
    progress(f"imported into {target} ({size / 1e6:.0f} MB, {seconds:.1f} s)")
    return ImportResult(path=target, config=config, tensors=len(converted), bytes=size, seconds=seconds)


def _replace_dir(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``; an old folder there is moved aside first, then removed."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """``python -I mlx_import.py GGUF OUT [--force]``: progress on stderr, a JSON summary on stdout."""
    parser = argparse.ArgumentParser(description="Import a GGUF model into an MLX model folder.")
    parser.add_argument("gguf")
    parser.add_argument("out_dir")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = import_gguf(args.gguf, args.out_dir, force=args.force)
    except GGUFImportError as exc:
        print(json.dumps({"error": {"code": exc.code, "message": exc.message, "hint": exc.hint}}), flush=True)
        return 2
    except ImportError as exc:
        error = {"code": "engine_unavailable", "message": f"this Python lacks {exc.name or exc}", "hint": 'pip install mlx-lm (and "mlx[cpu]" off macOS)'}
        print(json.dumps({"error": error}), flush=True)
        return 2
    print(json.dumps(result.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
