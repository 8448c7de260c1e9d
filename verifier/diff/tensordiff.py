"""Compare two files or two directory trees and explain how they differ.

Safetensors and GGUF files (recognised by their header, not their name) are compared tensor by
tensor; two JSON objects or arrays structurally, numbers by value (``verifier.diff.jsondiff``); any
other file byte by byte. GGUF float and integer tensors (F32, F16, BF16, F64, I8-I64) get the same
metrics as safetensors; quantized ones (Q8_0, Q4_K, ...) are compared byte by byte per tensor
(``bit_equal_fraction`` is then the share of equal bytes, and no numeric metric is given). GGUF
metadata is compared key by key, by the exact bytes of each value: it carries the model's
hyperparameters and tokenizer, so a GGUF pair whose tensors are equal but whose metadata differs
is DIVERGED, not CANONICALLY-IDENTICAL. So is a safetensors pair whose ``__metadata__`` maps
differ (loaders read its ``format``, and it can hold any text); CANONICALLY-IDENTICAL is left for
a header written in another key order or spacing, another data layout, or other padding.
"""

from __future__ import annotations

import enum
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from verifier.diff import gguf
from verifier.diff.compare import TensorDiff as TensorDiff
from verifier.diff.compare import _diff_tensors, _tolerance
from verifier.diff.compare import within_tolerance as within_tolerance  # quorum reads it here
from verifier.diff.jsondiff import MAX_BYTES as _MAX_JSON_BYTES
from verifier.diff.jsondiff import JsonDiff, compare_json, parse_container
from verifier.diff.safetensors import (
    _Entry,
    _file_size,
    _Header,
    _header_or_none,
    _unreadable,
)
from verifier.diff.safetensors import _read_header as _read_header  # the fuzz tests read it here
from verifier.diff.safetensors import is_safetensors as is_safetensors
from verifier.errors import InputError
from verifier.formats.terminal import clean

_BLOCK_BYTES = 1 << 20  # block size of the streaming byte comparison



class Verdict(enum.StrEnum):
    IDENTICAL = "IDENTICAL"  # bytes equal
    CANONICALLY_IDENTICAL = "CANONICALLY-IDENTICAL"  # same tensors; header/metadata/padding differ
    WITHIN_TOLERANCE = "WITHIN-TOLERANCE"  # every tensor passes |a-b| <= atol + rtol*|b|
    DIVERGED = "DIVERGED"
    MISSING = "MISSING"  # present on one side only (directory diffs)


_SEVERITY = {
    Verdict.IDENTICAL: 0, Verdict.CANONICALLY_IDENTICAL: 1, Verdict.WITHIN_TOLERANCE: 2,
    Verdict.DIVERGED: 3, Verdict.MISSING: 3,
}  # fmt: skip


@dataclass(frozen=True)
class FileDiff:
    path_a: str
    path_b: str
    kind: str  # "safetensors" | "gguf" | "json" | "bytes"
    verdict: Verdict
    size_a: int
    size_b: int
    first_difference_offset: int | None
    tensors: list[TensorDiff]  # worst first
    metadata_a: dict[str, str] | None
    metadata_b: dict[str, str] | None
    # GGUF only: the keys whose values (type and bytes) differ or are on one side only
    metadata_changed: list[str] | None = None
    json: JsonDiff | None = None  # kind "json": the structural comparison

    def changed_tensors(self) -> list[TensorDiff]:
        return [t for t in self.tensors if t.status != "equal"]

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items()
               if k not in ("tensors", "json") and not (k == "metadata_changed" and v is None)}
        out["verdict"] = self.verdict.value
        out["tensors"] = [t.to_dict() for t in self.tensors]
        if self.json is not None:
            out["json"] = self.json.to_dict()
        return out


@dataclass(frozen=True)
class DirDiff:
    path_a: str
    path_b: str
    verdict: Verdict
    # A is the side being checked (the rebuilt or new one), B the reference:
    added: list[str]  # only in a: extra, the reference has no such file
    removed: list[str]  # only in b: missing from a
    changed: list[FileDiff]  # common files that are not byte-identical
    unchanged: int

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "changed"}
        out["verdict"] = self.verdict.value
        out["changed"] = [d.to_dict() for d in self.changed]
        return out


# ---------------------------------------------------------------- two files, two trees


def _first_difference(a: Path, b: Path) -> int | None:
    """Offset of the first differing byte (the shorter length for a prefix); None if equal."""
    offset = 0
    try:
        with a.open("rb") as fa, b.open("rb") as fb:
            while True:
                ba, bb = fa.read(_BLOCK_BYTES), fb.read(_BLOCK_BYTES)
                if ba != bb:
                    n = min(len(ba), len(bb))
                    neq = np.frombuffer(ba, np.uint8, n) != np.frombuffer(bb, np.uint8, n)
                    return offset + (int(neq.argmax()) if neq.any() else n)
                if not ba:
                    return None
                offset += len(ba)
    except OSError as err:
        raise _unreadable(a, err) from err


def _first_difference_outside_tensors(a: Path, b: Path, header: _Header, size: int) -> int | None:
    """For two files with the same header bytes and size: the first differing byte that no
    tensor covers (padding between tensors or after the last one)."""
    spans = sorted((e.begin, e.end) for e in header.tensors.values())
    gaps, position = [], len(header.prefix)
    for begin, end in spans:
        if begin > position:
            gaps.append((position, begin))
        position = max(position, end)
    if position < size:
        gaps.append((position, size))
    if not gaps:
        return None
    try:
        with a.open("rb") as fa, b.open("rb") as fb:
            for begin, end in gaps:
                fa.seek(begin)
                fb.seek(begin)
                for offset in range(begin, end, _BLOCK_BYTES):
                    length = min(_BLOCK_BYTES, end - offset)
                    ba, bb = fa.read(length), fb.read(length)
                    if ba != bb:
                        n = min(len(ba), len(bb))
                        neq = np.frombuffer(ba, np.uint8, n) != np.frombuffer(bb, np.uint8, n)
                        return offset + (int(neq.argmax()) if neq.any() else n)
    except OSError as err:
        raise _unreadable(a, err) from err
    return None


def diff_files(
    a: Path, b: Path, *, rtol: float | None = None, atol: float | None = None
) -> FileDiff:
    """Compare two files; safetensors pairs tensor by tensor, two JSON documents structurally,
    anything else byte by byte."""
    a, b = Path(a), Path(b)
    tol = _tolerance(rtol, atol)
    size_a, size_b = _file_size(a), _file_size(b)
    if gguf.looks_like_gguf(a) and gguf.looks_like_gguf(b):
        return _diff_gguf(a, b, gguf.read(a), gguf.read(b), tol, size_a, size_b)
    ha, hb = _header_or_none(a), _header_or_none(b)
    if ha is None or hb is None:
        first = _first_difference(a, b)
        verdict = Verdict.IDENTICAL if first is None else Verdict.DIVERGED
        structural = _json_diff(a, b, size_a, size_b, tol) if first is not None else None
        if structural is not None:
            if structural.equal:
                verdict = Verdict.CANONICALLY_IDENTICAL
            elif structural.passes_tolerance:
                verdict = Verdict.WITHIN_TOLERANCE
            return FileDiff(str(a), str(b), "json", verdict, size_a, size_b, first, [], None,
                            None, json=structural)
        return FileDiff(str(a), str(b), "bytes", verdict, size_a, size_b, first, [], None, None)
    tensors, first_in_tensors = _diff_tensors(a, b, ha, hb, tol)
    if size_a == size_b and ha.prefix == hb.prefix:
        # The same header bytes, so the same layout: the bytes differ first either in a
        # tensor (the pass above saw every one) or in padding outside them; no second read.
        outside = _first_difference_outside_tensors(a, b, ha, size_a)
        first = min((o for o in (first_in_tensors, outside) if o is not None), default=None)
    else:  # the headers differ, and the scan stops at their first difference
        first = _first_difference(a, b)
    verdict = _tensor_verdict(first, tensors, tol)
    if (ha.metadata or {}) != (hb.metadata or {}):
        # Loaders read __metadata__ (transformers goes by its "format") and it can carry any
        # text: a difference there is one, as in GGUF. Key order, layout and padding are not.
        verdict = Verdict.DIVERGED
    return FileDiff(
        str(a), str(b), "safetensors", verdict, size_a, size_b, first, tensors,
        ha.metadata, hb.metadata,
    )  # fmt: skip


def _json_diff(a: Path, b: Path, size_a: int, size_b: int,
               tol: tuple[float, float] | None) -> JsonDiff | None:
    """The structural comparison when both files are JSON objects or arrays, else None."""
    if max(size_a, size_b) > _MAX_JSON_BYTES:
        return None
    try:
        doc_a = parse_container(a.read_bytes())
        doc_b = parse_container(b.read_bytes()) if doc_a is not None else None
    except OSError as err:
        raise _unreadable(a, err) from err
    if doc_a is None or doc_b is None:
        return None
    rtol, atol = tol if tol is not None else (None, None)
    return compare_json(doc_a, doc_b, rtol, atol)


def _tensor_verdict(first: int | None, tensors: list[TensorDiff],
                    tol: tuple[float, float] | None) -> Verdict:
    """The verdict on two tensor files from their first differing byte and their tensors."""
    if first is None:
        return Verdict.IDENTICAL
    if all(t.status == "equal" for t in tensors):
        return Verdict.CANONICALLY_IDENTICAL
    if tol is not None and all(t.passes_tolerance for t in tensors):
        return Verdict.WITHIN_TOLERANCE
    return Verdict.DIVERGED


def _diff_gguf(a: Path, b: Path, ga: gguf.GgufFile, gb: gguf.GgufFile,
               tol: tuple[float, float] | None, size_a: int, size_b: int) -> FileDiff:
    """Two GGUF files: tensors by name through the safetensors machinery (their offsets were
    checked by verifier.diff.gguf), metadata by the exact bytes of each value."""
    ha, hb = (_Header({n: _Entry(t.type, t.shape, t.begin, t.end) for n, t in g.tensors.items()},
                      None, g.prefix) for g in (ga, gb))
    compared, first_in_tensors = _diff_tensors(a, b, ha, hb, tol)
    # A quantized tensor's bytes were compared; its element count is still its elements'.
    tensors = [replace(t, elements=(ga.tensors.get(t.name) or gb.tensors[t.name]).elements)
               for t in compared]
    if size_a == size_b and ha.prefix == hb.prefix:
        outside = _first_difference_outside_tensors(a, b, ha, size_a)
        first = min((o for o in (first_in_tensors, outside) if o is not None), default=None)
    else:
        first = _first_difference(a, b)
    changed_keys = sorted(k for k in ga.metadata.keys() | gb.metadata.keys()
                          if ga.metadata.get(k) != gb.metadata.get(k))
    # GGUF metadata holds hyperparameters and the tokenizer: a difference there is one.
    verdict = (Verdict.DIVERGED if first is not None and changed_keys
               else _tensor_verdict(first, tensors, tol))
    return FileDiff(
        str(a), str(b), "gguf", verdict, size_a, size_b, first, tensors,
        {k: v.text for k, v in sorted(ga.metadata.items())},
        {k: v.text for k, v in sorted(gb.metadata.items())}, changed_keys,
    )  # fmt: skip


def _list_files(root: Path) -> dict[str, Path]:
    """Regular files under root keyed by relative POSIX path; links and special files refused."""
    found: dict[str, Path] = {}
    pending = [(root, "")]
    while pending:
        folder, prefix = pending.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as err:
            raise _unreadable(folder, err) from err
        for entry in entries:
            if entry.is_symlink():
                raise InputError(f"{entry.path} is a symbolic link, which is not compared.")
            if entry.is_dir(follow_symlinks=False):
                pending.append((Path(entry.path), f"{prefix}{entry.name}/"))
            elif entry.is_file(follow_symlinks=False):
                found[prefix + entry.name] = Path(entry.path)
            else:
                raise InputError(f"{entry.path} is neither a regular file nor a directory.")
    return found


def diff_paths(
    a: Path, b: Path, *, rtol: float | None = None, atol: float | None = None
) -> FileDiff | DirDiff:
    """Compare two files or two directories (recursively); anything else is an InputError."""
    a, b = Path(a), Path(b)
    _tolerance(rtol, atol)
    for path in (a, b):
        if not path.exists():
            raise InputError(f"{path} does not exist.")
    if not (a.is_dir() and b.is_dir()):
        if a.is_dir() or b.is_dir():
            raise InputError(f"{a} and {b} cannot be compared: only one is a directory.")
        return diff_files(a, b, rtol=rtol, atol=atol)
    files_a, files_b = _list_files(a), _list_files(b)
    changed, unchanged = [], 0
    for rel in sorted(files_a.keys() & files_b.keys()):
        fd = diff_files(files_a[rel], files_b[rel], rtol=rtol, atol=atol)
        if fd.verdict is Verdict.IDENTICAL:
            unchanged += 1
        else:
            changed.append(fd)
    added = sorted(files_a.keys() - files_b.keys())
    removed = sorted(files_b.keys() - files_a.keys())
    verdict = max(
        (d.verdict for d in changed), key=_SEVERITY.__getitem__, default=Verdict.IDENTICAL
    )
    if added or removed:
        verdict = Verdict.DIVERGED
    return DirDiff(str(a), str(b), verdict, added, removed, changed, unchanged)


# ---------------------------------------------------------------- text rendering


def _num(value: float | None, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else format(value, spec)


def _pct(fraction: float | None) -> str:
    if fraction is None:
        return "-"
    text = f"{100 * fraction:.2f}"
    return ("99.99" if fraction < 1 and text == "100.00" else text) + "%"


def _pair(x: Any, y: Any) -> str:
    return str(x) if x == y else f"{x if x is not None else '-'}/{y if y is not None else '-'}"


def _row(t: TensorDiff, with_tol: bool) -> list[str]:
    shape_a = None if t.shape_a is None else "[" + ",".join(map(str, t.shape_a)) + "]"
    shape_b = None if t.shape_b is None else "[" + ",".join(map(str, t.shape_b)) + "]"
    row = [
        clean(t.name), t.status, _pair(t.dtype_a, t.dtype_b), _pair(shape_a, shape_b),
        _pct(t.bit_equal_fraction), _num(t.max_abs_diff), _num(t.mean_abs_diff), _num(t.rel_l2),
        _num(t.cosine, ".6f"), _num(t.median_ulp),
    ]  # fmt: skip
    return [*row, "ok" if t.passes_tolerance else "FAIL"] if with_tol else row


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _render_file(d: FileDiff, limit: int) -> list[str]:
    lines = [
        f"{d.verdict.value}: {clean(d.path_a)} vs {clean(d.path_b)} ({d.kind}, {d.size_a} vs "
        f"{d.size_b} bytes)"
    ]
    if d.first_difference_offset is not None:
        prefix = d.size_a != d.size_b and d.first_difference_offset == min(d.size_a, d.size_b)
        note = " (the shorter file is a prefix of the longer)" if prefix else ""
        lines.append(f"first differing byte at offset {d.first_difference_offset}{note}")
    ma, mb = d.metadata_a or {}, d.metadata_b or {}
    if d.kind == "gguf":
        for key in d.metadata_changed or []:
            lines.append(clean(f"metadata {key}: {ma.get(key, '(absent)')} vs "
                               f"{mb.get(key, '(absent)')}"))
    else:
        keys = sorted(k for k in ma.keys() | mb.keys() if ma.get(k) != mb.get(k))
        if keys:
            lines.append("__metadata__ differs in keys: " + ", ".join(map(clean, keys)))
    if d.kind == "json" and d.json is not None:
        return lines + _render_json(d.json)
    if d.kind not in ("safetensors", "gguf"):
        return lines
    lines.append(f"{len(d.tensors)} tensors, {len(d.changed_tensors())} not bit-equal")
    if not d.tensors:
        return lines
    with_tol = any(t.passes_tolerance is not None for t in d.tensors)
    head = ["name", "status", "dtype", "shape", "bit-equal", "max abs", "mean abs", "rel L2",
            "cosine", "median ULP"] + (["tol"] if with_tol else [])  # fmt: skip
    lines += _table([head] + [_row(t, with_tol) for t in d.tensors[: max(0, limit)]])
    if len(d.tensors) > limit:
        lines.append(f"... {len(d.tensors) - max(0, limit)} more tensors not shown")
    return lines


def _render_json(j: JsonDiff) -> list[str]:
    lines = [f"JSON: {j.values} values, {j.numbers} numbers, {j.numbers_differing} numbers "
             f"differ, {j.other_differences} other values differ"]
    if not j.structure_equal:
        lines.append(f"structure differs first at {clean(str(j.first_structural_difference))}")
    if j.numbers_differing:
        worst_abs = math.inf if j.max_abs_diff is None else j.max_abs_diff
        worst_rel = math.inf if j.max_rel_diff is None else j.max_rel_diff
        lines.append(f"numbers: max abs {_num(worst_abs)}, max rel {_num(worst_rel)}; first at "
                     f"{clean(str(j.first_number_difference))}")
    if j.other_differences:
        lines.append(f"first other difference at {clean(str(j.first_other_difference))}")
    if j.passes_tolerance is not None:
        lines.append("within the tolerance" if j.passes_tolerance else "outside the tolerance")
    return lines


def render_text(diff: FileDiff | DirDiff, *, limit: int = 20) -> str:
    """A readable report: verdict header, then the worst ``limit`` tensors of each file. Names
    from the files (tensor and metadata names, file names) are escaped for a terminal."""
    if isinstance(diff, FileDiff):
        return "\n".join(_render_file(diff, limit)) + "\n"
    lines = [
        f"{diff.verdict.value}: {clean(diff.path_a)} vs {clean(diff.path_b)} "
        f"({len(diff.added)} added, "
        f"{len(diff.removed)} missing, {len(diff.changed)} changed, {diff.unchanged} unchanged)"
    ]
    lines += [f"ADDED: {clean(p)} (only in {clean(diff.path_a)}; the reference "
              f"{clean(diff.path_b)} has no such file)" for p in diff.added]
    lines += [f"{Verdict.MISSING.value}: {clean(p)} (only in the reference {clean(diff.path_b)}; "
              f"missing from {clean(diff.path_a)})" for p in diff.removed]
    for fd in diff.changed:
        lines += [""] + ["  " + line for line in _render_file(fd, limit)]
    return "\n".join(lines) + "\n"
