"""Read what a GGUF file says about itself (profile layer 2) from its header alone.

Why not ``gguf.GGUFReader``: it parses *every* key into numpy views, one per element of
the vocabulary arrays, and maps every tensor. Measured on this project's two real models
it took 3.5 s / +163 MB RSS (SmolLM2-135M, 49k tokens) and 18 s / +700 MB (Gemma 3 270M,
262k tokens) before returning. The daemon needs a dozen scalars, so this module walks the
header itself: scalars and strings are decoded, arrays are skipped by length, and the
token table is revisited only to turn the EOS/EOT/BOS ids into text and to read the
model's own special tokens (the few marker-shaped control tokens a cleaner must know). Only the header's
bytes are read (``pread`` into a buffer that grows as the walk needs it; no memory map,
so a file truncated under us cannot SIGBUS the daemon). The tensor data is never read;
the tensor *infos* are, to check the file is as long as its header says (a truncated
download fails here, not in the engine).
The ``gguf`` package still supplies the format's constants (magic, value types, quant sizes),
through ``gguf_constants`` (without the package's numpy).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..compat import ModelMetadata, is_marker_token
from ..errors import InvalidRequest, NotFound
from .gguf_constants import gguf_constants

_format = gguf_constants()
GGML_QUANT_SIZES = _format.GGML_QUANT_SIZES
GGUF_DEFAULT_ALIGNMENT = _format.GGUF_DEFAULT_ALIGNMENT
GGUF_MAGIC = _format.GGUF_MAGIC
GGMLQuantizationType = _format.GGMLQuantizationType
GGUFValueType = _format.GGUFValueType
TokenType = _format.TokenType

__all__ = ["SUPPORTED_GGUF_VERSIONS", "GGUFShape", "read_gguf_metadata", "read_gguf_shape"]

# Version 1 used 32-bit counts and lengths; nothing current writes it.
SUPPORTED_GGUF_VERSIONS: tuple[int, ...] = (2, 3)

_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}

_TOKEN_KEYS = {
    "eos_token": "tokenizer.ggml.eos_token_id",
    "eot_token": "tokenizer.ggml.eot_token_id",
    "bos_token": "tokenizer.ggml.bos_token_id",
}
# Llama 3.1 ends a tool-call message with <|eom_id|>: also a place to stop.
_EXTRA_STOP_KEYS = ("tokenizer.ggml.eom_token_id",)

# The model's special tokens (``special_tokens``, for the answer cleaner): CONTROL tokens
# shaped like a marker, USER_DEFINED ones only with bars (``is_marker_token``): a
# user-defined token is often ordinary text (Gemma's ``<table>``, Qwen's ``<tool_call>``).
_MAX_SPECIAL_TOKENS = 512  # a bound on what one model adds to the cleaner's pattern
_SPECIAL_TYPE_RE = re.compile(b"[" + bytes([TokenType.CONTROL, TokenType.USER_DEFINED]) + b"]")
_INT_CODES = frozenset("bBhHiIqQ")  # the struct codes of integer types
_MARKER_FIRST = b"<["  # a marker's first byte
_LONGEST_MARKER = 64 * 3  # UTF-8 bytes: is_marker_token allows 64 characters


class _Malformed(Exception):
    """The file broke the format; the message says how."""


class _Truncated(_Malformed):
    """The file ends before its header says it should."""


@dataclass(frozen=True)
class _ArrayRef:
    """Where an array's items start, so a few of them can be decoded later."""

    item_type: GGUFValueType
    count: int
    offset: int
    # A string array's item offsets, one every _MARK_EVERY items, noted on the first walk:
    # item i is then at most _MARK_EVERY - 1 length reads from a mark.
    marks: tuple[int, ...] = ()


_MARK_EVERY = 256


# Reads grow the buffer by at least this much, so a header costs few reads and the
# bytes read past its end (into tensor data) stay under this bound.
_READ_STEP = 1 << 20


class _Cursor:
    """Sequential little- (or big-) endian reads over the start of a file, bounds-checked.

    ``buf`` holds the bytes read so far; ``need`` reads more (``pread``) when a value runs
    past them and fails only when it would run past the file (``size``).
    """

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.buf = bytearray()
        self.order = "<"
        self.offset = 0

    def need(self, n: int) -> None:
        end = self.offset + n
        if n < 0 or end > self.size:
            raise _Truncated(
                f"it needs {n} bytes at offset {self.offset} but the file is {self.size} bytes"
            )
        if end > len(self.buf):
            self._grow(end)

    def _grow(self, end: int) -> None:
        start = len(self.buf)
        want = min(self.size, max(end, start + _READ_STEP)) - start
        chunk = os.pread(self.fd, want, start)
        self.buf += chunk
        if len(self.buf) < end:  # the file shrank while we read it
            raise _Truncated(f"it shrank to {len(self.buf)} bytes while being read")

    def scalar(self, fmt: str) -> Any:
        width = struct.calcsize(fmt)
        self.need(width)
        (value,) = struct.unpack_from(self.order + fmt, self.buf, self.offset)
        self.offset += width
        return value

    def string(self) -> str:
        length = self.scalar("Q")
        self.need(length)
        raw = bytes(self.buf[self.offset : self.offset + length])
        self.offset += length
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int, marks: list[int] | None = None) -> None:
        """Skip ``count`` length-prefixed strings: the hot loop of a 262k-token vocabulary.
        ``marks`` gets the offset of every _MARK_EVERY-th string (at no cost per string)."""
        length = struct.Struct(self.order + "Q")
        offset = self.offset
        for start in range(0, count, _MARK_EVERY):
            if marks is not None:
                marks.append(offset)
            for _ in range(min(_MARK_EVERY, count - start)):
                if offset + 8 > len(self.buf):
                    self.offset = offset
                    self.need(8)
                offset += 8 + length.unpack_from(self.buf, offset)[0]
        self.offset = offset
        self.need(0)


def _value_type(raw: int) -> GGUFValueType:
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise _Malformed(f"unknown value type {raw}") from None


def _read_value(cur: _Cursor, vtype: GGUFValueType) -> Any:
    """Scalars and strings decoded; arrays skipped and returned as a reference."""
    if vtype == GGUFValueType.STRING:
        return cur.string()
    if vtype == GGUFValueType.ARRAY:
        item_type = _value_type(cur.scalar("I"))
        count, start, marks = cur.scalar("Q"), cur.offset, []
        _skip_items(cur, item_type, count, marks)
        return _ArrayRef(item_type, count, start, tuple(marks))
    return cur.scalar(_SCALAR_FORMATS[vtype])


def _skip_items(cur: _Cursor, item_type: GGUFValueType, count: int, marks: list[int]) -> None:
    fmt = _SCALAR_FORMATS.get(item_type)
    if fmt is not None:
        cur.need(count * struct.calcsize(fmt))
        cur.offset += count * struct.calcsize(fmt)
        return
    # Every string or nested array takes at least 8 bytes: refuse absurd counts up front.
    cur.need(count * 8)
    if item_type == GGUFValueType.STRING:
        cur.skip_strings(count, marks)
        return
    for _ in range(count):
        _read_value(cur, item_type)


def _string_spans(cur: _Cursor, ref: _ArrayRef, indices: list[int]) -> Iterator[tuple[int, int]]:
    """Where items ``indices`` (ascending, in range) of a string array lie in the buffer,
    each walked to from the mark before it. The array was walked when the header was
    read: its bytes are in the buffer."""
    unpack = struct.Struct(cur.order + "Q").unpack_from
    buf, offset, index = cur.buf, ref.offset, 0
    for wanted in indices:
        mark = wanted - wanted % _MARK_EVERY
        if mark > index:
            index, offset = mark, ref.marks[mark // _MARK_EVERY]
        while index < wanted:
            offset += 8 + unpack(buf, offset)[0]
            index += 1
        end = offset + 8 + unpack(buf, offset)[0]
        yield offset + 8, end
        offset, index = end, index + 1


def _decoded(raw: bytes | bytearray) -> str:
    return bytes(raw).decode("utf-8", errors="replace")


def _array_string(cur: _Cursor, ref: _ArrayRef, index: int) -> str | None:
    """Item ``index`` of a string array."""
    if ref.item_type != GGUFValueType.STRING or not 0 <= index < ref.count:
        return None
    (start, end), = _string_spans(cur, ref, [index])
    return _decoded(cur.buf[start:end])


def _open_header(cur: _Cursor) -> tuple[int, int, int]:
    """Check magic and version, settle the byte order; returns (version, tensors, kvs)."""
    if cur.size < 8 or cur.scalar("I") != GGUF_MAGIC:
        raise _Malformed("not a GGUF file (no GGUF magic at the start)")
    version = cur.scalar("I")
    if version & 0xFFFF == 0:  # written on a machine of the other byte order
        cur.order = ">"
        version = struct.unpack_from(">I", cur.buf, 4)[0]
    if version not in SUPPORTED_GGUF_VERSIONS:
        supported = ", ".join(map(str, SUPPORTED_GGUF_VERSIONS))
        raise _Malformed(f"GGUF version {version} is not supported (supported: {supported})")
    tensor_count, kv_count = cur.scalar("Q"), cur.scalar("Q")
    return version, tensor_count, kv_count


def _read_fields(cur: _Cursor, kv_count: int) -> dict[str, Any]:
    # key length (8) + value type (4) at least per entry
    cur.need(kv_count * 12)
    fields: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cur.string()
        fields[key] = _read_value(cur, _value_type(cur.scalar("I")))
    return fields


def _tensor_data_end(cur: _Cursor, tensor_count: int, alignment: int) -> int | None:
    """Where the last tensor's data ends, per the tensor infos; None if a type is unknown."""
    cur.need(tensor_count * 24)
    end, known = 0, True
    for _ in range(tensor_count):
        cur.skip_strings(1)
        n_dims = cur.scalar("I")
        if n_dims > 8:
            raise _Malformed(f"a tensor claims {n_dims} dimensions")
        elements = 1
        for _ in range(n_dims):
            elements *= cur.scalar("Q")
        raw_type, offset = cur.scalar("I"), cur.scalar("Q")
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(raw_type)]
        except (ValueError, KeyError):
            known = False  # a quant type newer than our gguf package: cannot size it
            continue
        end = max(end, offset + elements * type_size // block)
    data_start = -(-cur.offset // alignment) * alignment
    return data_start + end if known else None


def _alignment(fields: dict[str, Any]) -> int:
    value = fields.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(value, int) or value <= 0 or value & (value - 1):
        raise _Malformed(f"general.alignment {value!r} is not a power of two")
    return value


def _text_field(fields: dict[str, Any], key: str) -> str | None:
    value = fields.get(key)
    return value if isinstance(value, str) and value else None


def _token_text(cur: _Cursor, fields: dict[str, Any], key: str) -> str | None:
    token_id, tokens = fields.get(key), fields.get("tokenizer.ggml.tokens")
    if type(token_id) is not int or not isinstance(tokens, _ArrayRef):
        return None
    return _array_string(cur, tokens, token_id) or None


def _special_tokens(cur: _Cursor, fields: dict[str, Any]) -> tuple[str, ...]:
    """The vocabulary's marker-shaped CONTROL (and barred USER_DEFINED) tokens.

    The types are sifted in C (a slice of the type array's low bytes, then a regex over
    it), so only the special ids reach Python, and each is found from the mark before
    it: SmolLM2's 49k tokens cost 17 reads, Gemma's 262k its 6.4k special ones.
    """
    tokens, types = fields.get("tokenizer.ggml.tokens"), fields.get("tokenizer.ggml.token_type")
    if not (isinstance(tokens, _ArrayRef) and isinstance(types, _ArrayRef)) or tokens.count != types.count:
        return ()
    code = _SCALAR_FORMATS.get(types.item_type)
    if tokens.item_type != GGUFValueType.STRING or code not in _INT_CODES:
        return ()
    # One byte per token (the types are small numbers): the low byte of each, the others zero.
    width = struct.calcsize(code)
    raw = cur.buf[types.offset : types.offset + types.count * width]
    low = width - 1 if cur.order == ">" else 0
    if any(raw[k::width].count(0) != types.count for k in range(width) if k != low):
        return ()  # a type outside the format: read no special tokens rather than guess
    kinds = bytes(raw[low::width])
    special = [m.start() for m in _SPECIAL_TYPE_RE.finditer(kinds)]
    found = []
    buf = cur.buf
    for index, (start, end) in zip(special, _string_spans(cur, tokens, special), strict=True):
        if 0 < end - start <= _LONGEST_MARKER and buf[start] in _MARKER_FIRST:  # cheap before decoding
            text = _decoded(buf[start:end])
            if is_marker_token(text, barred=kinds[index] != TokenType.CONTROL):
                found.append(text)
    return tuple(dict.fromkeys(found))[:_MAX_SPECIAL_TOKENS]


def _metadata(cur: _Cursor, fields: dict[str, Any]) -> ModelMetadata:
    architecture = _text_field(fields, "general.architecture")
    context = fields.get(f"{architecture}.context_length") if architecture else None
    tokens = {name: _token_text(cur, fields, key) for name, key in _TOKEN_KEYS.items()}
    extra = tuple(t for t in (_token_text(cur, fields, k) for k in _EXTRA_STOP_KEYS) if t)
    return ModelMetadata(
        chat_template=_text_field(fields, "tokenizer.chat_template"),
        **tokens,
        architecture=architecture,
        name=_text_field(fields, "general.name"),
        extra_stop_tokens=extra,
        special_tokens=_special_tokens(cur, fields),
        context_length=context if isinstance(context, int) and context > 0 else None,
        source="gguf",
    )


def _parse(cur: _Cursor) -> ModelMetadata:
    _, tensor_count, kv_count = _open_header(cur)
    fields = _read_fields(cur, kv_count)
    data_end = _tensor_data_end(cur, tensor_count, _alignment(fields))
    if data_end is not None and data_end > cur.size:
        raise _Truncated(
            f"tensor data ends early: the file is {cur.size} bytes, its header needs {data_end}"
        )
    return _metadata(cur, fields)


@dataclass(frozen=True)
class GGUFShape:
    """What sizes a model's KV cache: per layer, the K and V heads the cache holds for each token.

    ``None`` where the file does not say (or says per layer, as an array): the memory
    estimate then falls back to what it can derive, or to the weights alone.
    """

    architecture: str | None
    block_count: int | None  # layers
    head_count: int | None
    head_count_kv: int | None  # fewer than head_count with grouped-query attention
    key_length: int | None  # one K head's width (default: embedding_length / head_count)
    value_length: int | None
    embedding_length: int | None
    context_length: int | None  # what the model was trained for

    def kv_bytes_per_token(self, bytes_per_value: float = 2.0) -> int | None:
        """K and V for one token in every layer (f16 cache: 2 bytes a value)."""
        heads_kv = self.head_count_kv or self.head_count
        head_width = (self.embedding_length // self.head_count) if self.embedding_length and self.head_count else None
        key, value = self.key_length or head_width, self.value_length or head_width
        if not (self.block_count and heads_kv and key and value):
            return None
        return int(self.block_count * heads_kv * (key + value) * bytes_per_value)


def _count_field(fields: dict[str, Any], key: str) -> int | None:
    value = fields.get(key)
    return value if type(value) is int and value > 0 else None


def read_gguf_shape(path: str | os.PathLike[str]) -> GGUFShape:
    """The attention shape from a GGUF's header (for the memory estimate). Blocking file I/O."""
    path = Path(path)
    try:
        with path.open("rb", buffering=0) as fh:
            cur = _Cursor(fh.fileno(), os.fstat(fh.fileno()).st_size)
            _, _, kv_count = _open_header(cur)
            fields = _read_fields(cur, kv_count)
    except FileNotFoundError:
        raise NotFound(f"model file {path} does not exist", code="file_not_found") from None
    except OSError as exc:
        raise _invalid(path, f"it cannot be read ({exc.strerror or exc})") from None
    except _Malformed as exc:
        raise _invalid(path, str(exc)) from None
    arch = _text_field(fields, "general.architecture")
    prefix = f"{arch}." if arch else "\0"  # no architecture: no key matches
    return GGUFShape(
        architecture=arch,
        block_count=_count_field(fields, prefix + "block_count"),
        head_count=_count_field(fields, prefix + "attention.head_count"),
        head_count_kv=_count_field(fields, prefix + "attention.head_count_kv"),
        key_length=_count_field(fields, prefix + "attention.key_length"),
        value_length=_count_field(fields, prefix + "attention.value_length"),
        embedding_length=_count_field(fields, prefix + "embedding_length"),
        context_length=_count_field(fields, prefix + "context_length"),
    )


def _invalid(path: Path, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"{path} is not a usable GGUF model file: {why}",
        code="invalid_model_file",
        hint="download it again (a partial download looks like this) or point at a .gguf file",
    )


def read_gguf_metadata(path: str | os.PathLike[str]) -> ModelMetadata:
    """Chat template, EOS/EOT/BOS token text, architecture, name and context length of a GGUF.

    Reads the header only (about 2 MB for SmolLM2, 6 MB for a 262k-token vocabulary).
    Blocking file I/O: call it from a worker thread in the daemon.
    Raises ``NotFound`` for a missing file and ``InvalidRequest`` (``invalid_model_file``)
    for anything that is not a whole GGUF file.
    """
    path = Path(path)
    try:
        with path.open("rb", buffering=0) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise _invalid(path, "the file is empty")
            return _parse(_Cursor(fh.fileno(), size))
    except FileNotFoundError:
        raise NotFound(f"model file {path} does not exist", code="file_not_found") from None
    except IsADirectoryError:
        raise _invalid(path, "it is a directory") from None
    except OSError as exc:
        raise _invalid(path, f"it cannot be read ({exc.strerror or exc})") from None
    except _Truncated as exc:
        raise _invalid(path, f"the file is truncated ({exc})") from None
    except _Malformed as exc:
        raise _invalid(path, str(exc)) from None
