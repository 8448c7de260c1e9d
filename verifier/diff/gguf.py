"""GGUF files, the format llama.cpp runs: a bounded reader of their header.

A GGUF file is the magic `GGUF`, a version (2 or 3; little-endian), the tensor and key/value
counts, the key/values (typed: integers, floats, booleans, strings, arrays of them), one entry
per tensor (name, dimensions, ggml type, offset), padding to the alignment, then the tensor data.
Only the header is read here; tensor data is compared by verifier.diff.tensordiff through the
offsets this reader checked.

The input may be hostile, so this is not llama.cpp's `gguf` package reader (which maps the file
and believes its counts: a count of 2**60 loops or allocates, and a wrong type or offset raises
whatever numpy or struct raises). Here every count and length is capped and checked against the
bytes that remain before anything is read or allocated, the header as a whole is capped
(`MAX_HEADER_BYTES`), every type code is checked, every tensor must lie inside the file with
exactly the bytes its type and dimensions need, and each defect is one InputError sentence
naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from verifier.errors import InputError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
MAX_HEADER_BYTES = 64 << 20  # a 256k-token vocabulary with its merges is ~10 MiB
MAX_TENSORS = 1 << 20
MAX_KEYS = 1 << 16
MAX_ARRAY = 1 << 22  # elements of one array value (vocabularies: ~10**5)
MAX_STRING = 16 << 20  # bytes of one string (chat templates: kilobytes)
MAX_NAME = 1 << 16  # bytes of a key or tensor name (ggml itself allows 64)
MAX_DIMS = 8  # ggml has 4
MAX_NESTING = 3  # arrays of arrays
DEFAULT_ALIGNMENT = 32
_BLOCK = 1 << 20

# ggml tensor type code -> (name, elements per block, bytes per block). The float and integer
# names are the safetensors dtype names of the same little-endian encodings, so that
# verifier.diff.tensordiff compares them with the same metrics; the others are quantized blocks.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}  # fmt: skip
UNQUANTIZED = frozenset({"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"})

# key/value type code -> (name, struct format of a scalar, or None for string/array)
_VALUE_TYPES: dict[int, tuple[str, str | None]] = {
    0: ("UINT8", "<B"), 1: ("INT8", "<b"), 2: ("UINT16", "<H"), 3: ("INT16", "<h"),
    4: ("UINT32", "<I"), 5: ("INT32", "<i"), 6: ("FLOAT32", "<f"), 7: ("BOOL", "<B"),
    8: ("STRING", None), 9: ("ARRAY", None), 10: ("UINT64", "<Q"), 11: ("INT64", "<q"),
    12: ("FLOAT64", "<d"),
}  # fmt: skip
_STRING, _ARRAY, _UINT32 = 8, 9, 4
_SHOWN_ITEMS = 8  # an array this short is shown whole
_SHOWN_CHARS = 120


@dataclass(frozen=True)
class Value:
    """One metadata value: its type (e.g. "UINT32", "ARRAY[STRING]"), the sha256 of its exact
    encoding (what comparisons use) and a short rendering (what people read)."""

    type: str
    sha256: str
    text: str


@dataclass(frozen=True)
class Tensor:
    """One tensor: `shape` in row-major order (numpy's and safetensors', the reverse of ggml's
    ne[]); `begin`/`end` are absolute file offsets of its data."""

    name: str
    type: str
    shape: list[int]
    begin: int
    end: int

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class GgufFile:
    version: int
    alignment: int
    metadata: dict[str, Value]
    tensors: dict[str, Tensor]
    data_start: int
    prefix: bytes  # every byte before the tensor data: the whole header and its padding


class _Reader:
    """Sequential reads of the header, each checked against the file's size and the cap before
    anything is read."""

    def __init__(self, path: Path, handle: BinaryIO, size: int) -> None:
        self.path, self.handle, self.size = path, handle, size
        self.limit = min(size, MAX_HEADER_BYTES)
        self.buffer = bytearray()
        self.position = 0

    def fail(self, what: str) -> InputError:
        return InputError(f"{self.path}: not a valid GGUF file: {what}.")

    def need(self, count: int, what: str) -> None:
        if self.position + count > self.limit:
            if self.position + count > self.size:
                raise self.fail(f"{what} runs past the end of the file (truncated)")
            raise self.fail(f"{what} takes the header past {MAX_HEADER_BYTES} bytes, the limit")
        missing = self.position + count - len(self.buffer)
        if missing > 0:
            chunk = self.handle.read(max(missing, min(_BLOCK, self.limit - len(self.buffer))))
            self.buffer += chunk
            if len(self.buffer) < self.position + count:
                raise self.fail(f"{what} could not be read: the file became shorter")

    def take(self, count: int, what: str) -> bytes:
        self.need(count, what)
        data = bytes(self.buffer[self.position:self.position + count])
        self.position += count
        return data

    def unpack(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def count(self, what: str, cap: int, least_bytes: int) -> int:
        """A uint64 count of items that each take at least `least_bytes`: capped, and refused
        when even the smallest items could not fit in what remains."""
        value = self.unpack("<Q", what)
        if value > cap:
            raise self.fail(f"{what} is {value}, more than the limit of {cap}")
        if value * least_bytes > self.limit - self.position:
            raise self.fail(f"{what} is {value}, more than the file can hold")
        return value

    def text(self, what: str, cap: int) -> str:
        length = self.count(f"the length of {what}", cap, 1)
        raw = self.take(length, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not UTF-8") from None


def _read_value(reader: _Reader, code: int, key: str, depth: int = 0) -> tuple[str, Any]:
    """(type name, a short Python rendering) of one value; the reader moves past it."""
    if code not in _VALUE_TYPES:
        raise reader.fail(f"key {key!r} has unknown value type {code}")
    name, fmt = _VALUE_TYPES[code]
    if fmt is not None:
        value = reader.unpack(fmt, f"the value of {key!r}")
        if code == 7:
            if value not in (0, 1):
                raise reader.fail(f"key {key!r} has a BOOL that is neither 0 nor 1")
            value = bool(value)
        return name, value
    if code == _STRING:
        length = reader.count(f"the length of the value of {key!r}", MAX_STRING, 1)
        raw = reader.take(length, f"the value of {key!r}")
        return name, raw.decode("utf-8", "replace")
    if depth >= MAX_NESTING:
        raise reader.fail(f"key {key!r} nests arrays more than {MAX_NESTING} deep")
    item = reader.unpack("<I", f"the element type of {key!r}")
    if item not in _VALUE_TYPES:
        raise reader.fail(f"key {key!r} is an array of unknown type {item}")
    item_fmt = _VALUE_TYPES[item][1]
    least = struct.calcsize(item_fmt) if item_fmt else (8 if item == _STRING else 12)
    length = reader.count(f"the length of the array {key!r}", MAX_ARRAY, least)
    shown: list[Any] = []
    item_name = _VALUE_TYPES[item][0]
    if item_fmt is not None:
        raw = reader.take(length * least, f"the array {key!r}")
        if item == 7 and raw.count(0) + raw.count(1) != length:
            raise reader.fail(f"key {key!r} has a BOOL that is neither 0 nor 1")
        shown = list(struct.unpack(f"<{min(length, _SHOWN_ITEMS)}{item_fmt[1]}",
                                   raw[:min(length, _SHOWN_ITEMS) * least]))
    elif item == _STRING:
        shown = _string_array(reader, key, length)
    else:
        for index in range(length):
            item_name, value = _read_value(reader, item, key, depth + 1)
            if index < _SHOWN_ITEMS:
                shown.append(value)
    return f"ARRAY[{item_name}]", (shown, length)


def _string_array(reader: _Reader, key: str, length: int) -> list[str]:
    """The first few of `length` strings (vocabularies hold 10**5): one tight loop over the
    buffer, with the same checks as _read_value's, and the message made only on failure."""
    shown: list[str] = []
    buffer, position = reader.buffer, reader.position
    for index in range(length):
        if position + 8 > len(buffer):
            reader.position = position
            reader.need(8, f"element {index} of the array {key!r}")
        size = int.from_bytes(buffer[position:position + 8], "little")
        position += 8
        if size > MAX_STRING:
            raise reader.fail(f"element {index} of the array {key!r} is {size} bytes long, "
                              f"more than the limit of {MAX_STRING}")
        if position + size > len(buffer):
            reader.position = position
            reader.need(size, f"element {index} of the array {key!r}")
        if index < _SHOWN_ITEMS:
            shown.append(bytes(buffer[position:position + size]).decode("utf-8", "replace"))
        position += size
    reader.position = position
    return shown


def _render(kind: str, value: Any, raw: bytes) -> str:
    if kind.startswith("ARRAY"):
        shown, length = value
        if length <= _SHOWN_ITEMS and all(not isinstance(v, tuple) for v in shown):
            text = json.dumps(shown, ensure_ascii=False)
            if len(text) <= _SHOWN_CHARS:
                return text
        return f"{kind} of {length} (sha256 {hashlib.sha256(raw).hexdigest()[:16]})"
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > _SHOWN_CHARS:
        return (f"{text[:_SHOWN_CHARS]}… ({len(raw)} bytes, "
                f"sha256 {hashlib.sha256(raw).hexdigest()[:16]})")
    return text


def _tensor(reader: _Reader) -> tuple[str, int, list[int], int]:
    name = reader.text("a tensor name", MAX_NAME)
    dims = reader.unpack("<I", f"the dimension count of tensor {name!r}")
    if not 1 <= dims <= MAX_DIMS:
        raise reader.fail(f"tensor {name!r} has {dims} dimensions (1 to {MAX_DIMS} allowed)")
    ne = list(struct.unpack(f"<{dims}Q", reader.take(8 * dims, f"the shape of {name!r}")))
    code = reader.unpack("<I", f"the type of tensor {name!r}")
    if code not in GGML_TYPES:
        raise reader.fail(f"tensor {name!r} has unknown ggml type {code}")
    offset = reader.unpack("<Q", f"the offset of tensor {name!r}")
    return name, code, ne, offset


def read(path: Path) -> GgufFile:
    """The header of a GGUF file, checked; InputError (one sentence) for anything wrong."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            return _parse(_Reader(path, handle, size))
    except OSError as error:
        raise InputError(f"{path} could not be read: {error.strerror or error}.") from None


def _parse(reader: _Reader) -> GgufFile:
    if reader.take(4, "the magic") != MAGIC:
        raise reader.fail("it does not start with GGUF")
    version = reader.unpack("<I", "the version")
    if version not in VERSIONS:
        swapped = struct.unpack(">I", struct.pack("<I", version))[0]
        if swapped in VERSIONS:
            raise reader.fail("it is a big-endian GGUF file, which is not supported")
        raise reader.fail(f"version {version} is not supported (only 2 and 3)")
    tensor_count = reader.count("the tensor count", MAX_TENSORS, 4 * 8)
    key_count = reader.count("the key/value count", MAX_KEYS, 8 + 4 + 1)
    metadata: dict[str, Value] = {}
    for _ in range(key_count):
        key = reader.text("a metadata key", MAX_NAME)
        if key in metadata:
            raise reader.fail(f"key {key!r} appears twice")
        code = reader.unpack("<I", f"the value type of {key!r}")
        start = reader.position
        kind, shown = _read_value(reader, code, key)
        raw = bytes(reader.buffer[start - 4:reader.position])  # the type code and the value
        metadata[key] = Value(kind, hashlib.sha256(raw).hexdigest(), _render(kind, shown, raw))
    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in metadata:
        value = metadata["general.alignment"]
        number = json.loads(value.text) if value.type == "UINT32" else None
        if not (isinstance(number, int) and number > 0 and number & (number - 1) == 0):
            raise reader.fail("general.alignment is not a UINT32 power of two")
        alignment = number
    entries = []
    names: set[str] = set()
    for _ in range(tensor_count):
        entry = _tensor(reader)
        if entry[0] in names:
            raise reader.fail(f"tensor {entry[0]!r} appears twice")
        names.add(entry[0])
        entries.append(entry)
    data_start = -(-reader.position // alignment) * alignment
    if data_start > reader.size and not entries:
        data_start = reader.position  # no tensors: a writer may leave the padding out
    if data_start > reader.size:
        raise reader.fail("the padding after the header runs past the end of the file")
    tensors = {}
    for name, code, ne, offset in entries:
        tensors[name] = _place(reader, name, code, ne, offset, data_start, alignment)
    prefix = bytes(reader.buffer[:reader.position])
    if data_start > reader.position:
        reader.handle.seek(reader.position)
        prefix += reader.handle.read(data_start - reader.position)
    return GgufFile(version, alignment, metadata, tensors, data_start, prefix)


def _place(reader: _Reader, name: str, code: int, ne: list[int], offset: int,
           data_start: int, alignment: int) -> Tensor:
    kind, block, block_bytes = GGML_TYPES[code]
    if ne[0] % block:
        raise reader.fail(f"tensor {name!r} has a first dimension of {ne[0]}, not a multiple "
                          f"of {kind}'s block of {block}")
    if offset % alignment:
        raise reader.fail(f"tensor {name!r} starts at offset {offset}, which is not aligned "
                          f"to {alignment}")
    elements = math.prod(ne)
    need = elements // block * block_bytes
    begin = data_start + offset
    if begin + need > reader.size:
        raise reader.fail(f"tensor {name!r} ({kind} {list(reversed(ne))}) needs {need} bytes "
                          f"at offset {offset}, past the end of the file (truncated)")
    return Tensor(name, kind, list(reversed(ne)), begin, begin + need)


def looks_like_gguf(path: Path) -> bool:
    """True when the file starts with the GGUF magic: it is then read as GGUF (and refused
    when it is not a valid one), never compared as plain bytes."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == MAGIC
    except OSError:
        return False
