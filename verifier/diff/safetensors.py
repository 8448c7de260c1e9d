"""Reading a safetensors file's frame: the header (its length, then a JSON object of tensors)
and each tensor's dtype, shape and byte span, checked against the file's size. The comparison
of tensors and the verdict on two files (tensordiff) read files through this alone.
"""

from __future__ import annotations

import json
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from verifier.errors import InputError
from verifier.formats.readers import MAX_SAFETENSORS_HEADER_BYTES, brief

_MAX_HEADER_BYTES = MAX_SAFETENSORS_HEADER_BYTES  # the safetensors library's own limit
# safetensors dtype -> (little-endian dtype of the raw bits, kind)
_DTYPES: dict[str, tuple[str, str]] = {
    "F64": ("<i8", "float"), "F32": ("<i4", "float"), "F16": ("<i2", "float"),
    "BF16": ("<i2", "float"), "I8": ("i1", "int"), "U8": ("u1", "int"), "I16": ("<i2", "int"),
    "U16": ("<u2", "int"), "I32": ("<i4", "int"), "U32": ("<u4", "int"), "I64": ("<i8", "int"),
    "U64": ("<u8", "int"), "BOOL": ("u1", "int"), "F8_E4M3": ("u1", "raw"),
    "F8_E5M2": ("u1", "raw"),
}  # fmt: skip


class _NotSafetensors(InputError):
    """The file is not framed as a safetensors file at all (length + JSON object of tensors)."""


@dataclass(frozen=True)
class _Entry:
    dtype: str
    shape: list[int]
    begin: int  # absolute file offsets
    end: int


@dataclass(frozen=True)
class _Header:
    tensors: dict[str, _Entry]
    metadata: dict[str, str] | None
    prefix: bytes  # the file's first bytes: header length and header


def _unreadable(path: Path, err: OSError) -> InputError:
    return InputError(f"{err.filename or path} could not be read: {err.strerror or err}.")


def _file_size(path: Path) -> int:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path} does not exist.") from None
    except OSError as err:
        raise _unreadable(path, err) from err
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path} is a directory, but a file was expected.")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path} is not a regular file.")
    return st.st_size


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_header(path: Path) -> _Header:
    size = _file_size(path)
    try:
        with path.open("rb") as f:
            head = f.read(9)
            if len(head) < 9 or head[8:9] != b"{":
                raise _NotSafetensors(f"{path} does not start with a safetensors header.")
            (length,) = struct.unpack("<Q", head[:8])
            if length > size - 8 or length > _MAX_HEADER_BYTES:
                raise _NotSafetensors(
                    f"{path} declares a safetensors header of {length} bytes, but only "
                    f"{size - 8} bytes follow (and the limit is {_MAX_HEADER_BYTES})."
                )
            f.seek(8)
            raw = f.read(length)
    except OSError as err:
        raise _unreadable(path, err) from err

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) != len(pairs):
            raise InputError(f"{path} has a safetensors header with duplicate keys.")
        return dict(pairs)

    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError) as err:
        raise _NotSafetensors(f"{path} has a safetensors header that is not valid JSON.") from err
    except RecursionError:
        raise _NotSafetensors(f"{path} has a safetensors header nested too deeply to be one.")\
            from None
    keys = {"dtype", "shape", "data_offsets"}
    if not isinstance(obj, dict) or not all(
        k == "__metadata__" or (isinstance(v, dict) and keys <= v.keys()) for k, v in obj.items()
    ):
        raise _NotSafetensors(f"{path} has a JSON header that does not describe tensors.")
    meta = obj.pop("__metadata__", None)
    if meta is not None and not (
        isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())
    ):
        raise InputError(f"{path} has a __metadata__ entry that is not a map of strings.")
    start, data_len = 8 + length, size - 8 - length
    entries = {n: _entry(path, n, s, start, data_len) for n, s in obj.items()}
    return _Header(entries, meta, head[:8] + raw)


def _entry(path: Path, name: str, spec: dict[str, Any], start: int, data_len: int) -> _Entry:
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    shown = brief(name)
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise InputError(f"Tensor {shown} in {path} has unsupported dtype {brief(dtype)}.")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise InputError(f"Tensor {shown} in {path} has an invalid shape {brief(shape)}.")
    if not (
        isinstance(offsets, list) and len(offsets) == 2
        and all(_is_count(o) for o in offsets) and offsets[0] <= offsets[1]
    ):  # fmt: skip
        raise InputError(f"Tensor {shown} in {path} has invalid data_offsets {brief(offsets)}.")
    begin, end = offsets
    if end > data_len:
        raise InputError(
            f"{path} is truncated: tensor {shown} ends at byte {end} of the data section, "
            f"which holds only {data_len} bytes."
        )
    need = _bytes_needed(shape, np.dtype(_DTYPES[dtype][0]).itemsize, end - begin)
    if end - begin != need:
        needs = f"needs {need}" if need <= data_len else "needs more than the data section holds"
        dims = shape if len(shape) <= 8 else f"of {len(shape)} dimensions"
        raise InputError(
            f"Tensor {shown} in {path} has {end - begin} data bytes, but {dtype} {dims} {needs}."
        )
    return _Entry(dtype, shape, start + begin, start + end)


def _bytes_needed(shape: list[int], itemsize: int, available: int) -> int:
    """Bytes a tensor of this shape takes, computed only as far as it can still fit in
    `available` bytes: a hostile shape of a million large dimensions costs linear time, not
    the multiplication of a million-digit number."""
    if 0 in shape:
        return 0
    need = itemsize
    for dim in shape:
        need *= dim
        if need > available:
            return need
    return need


def _header_or_none(path: Path) -> _Header | None:
    """The parsed header; None for a file that is not framed as safetensors (unless its name
    says it is one); InputError for a safetensors file whose header or data is defective."""
    try:
        return _read_header(path)
    except _NotSafetensors:
        if path.suffix.lower() == ".safetensors":
            raise
        return None


def is_safetensors(path: Path) -> bool:
    """True when the file parses as a valid safetensors file (header and offsets checked)."""
    try:
        _read_header(Path(path))
    except InputError:
        return False
    return True
