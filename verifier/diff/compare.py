"""Comparing the tensors of two files, element by element, into a TensorDiff each: the part of
a tensor diff that a checkpoint comparison reuses without the verdict on whole files
(tensordiff) or the reading of their frames (safetensors).

Tensor data is read with positional reads into reused buffers, ``_READ_CHUNKS`` chunks of
``_CHUNK_ELEMENTS`` elements at a time, on up to ``_WORKERS`` threads, so memory stays bounded
(a few MB per thread) whatever the file size, and files larger than RAM can be compared.  Each
chunk is first compared as integers; where few pairs differ only those are worked on in float64
(the bit-equal rest adds only ``b*b`` to the norms).  Chunks are merged in file order, so sums
(float64) do not depend on the thread count.  Two files with the same header bytes are read
once: the first differing byte is found during the tensor pass (and in any padding outside the
tensors); otherwise the byte scan stops at the first difference, inside the headers.

Metric semantics (``b`` is the second, reference argument):

* An element pair is *bit-equal* when its raw bits are identical (two NaNs with the same bits
  are bit-equal; ``0.0`` and ``-0.0`` are not).
* The per-element difference is 0 when ``a == b`` or both are NaN, and ``|a - b|`` otherwise;
  a NaN against a non-NaN, or an infinity against any other value, is an infinite difference.
  ``max_abs_diff``, ``mean_abs_diff``, ``rel_l2`` and ``max_rel_diff`` use this difference, so
  they become ``math.inf`` (serialised as ``None`` and listed under ``"infinite"``).
* ``||b||2`` and ``cosine`` are taken over the elements where both sides are finite.
* ``max_rel_diff`` is ``max |a-b|/|b|``; a difference against ``b == 0`` makes it infinite.
* ``median_ulp`` is the median of ``|ia - ib|`` where ``ia``/``ib`` are the bit patterns read as
  signed integers of the dtype's width (16 bits for BF16), over elements whose sign bits agree;
  NaN and infinity patterns take part as plain bit patterns.  It is exact for every tensor
  size, in bounded memory: distances are counted (``verifier.diff.ulp_median``), and a tensor whose
  median is 65536 ULPs or more is read again to narrow it down (at most twice for float32).
* Integer and BOOL tensors are compared exactly; their metrics are computed in float64, with
  any differing pair counted as a difference of at least 1 (I64/U64 magnitudes above 2**53 are
  approximate).  F8 tensors are compared by bits only.
* A tolerance (rtol/atol) applies to floating-point tensors alone: an integer, BOOL, F8 or
  quantized tensor (packed int32 GPTQ weights, GGUF Q* blocks) passes it only when bit-equal.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from verifier.diff import ulp_median
from verifier.diff.safetensors import _DTYPES, _Entry, _Header, _unreadable
from verifier.errors import InputError

_CHUNK_ELEMENTS = 1 << 16  # elements of one tensor compared at a time
_READ_CHUNKS = 8  # chunks read at a time
_DENSE_SHARE = 4  # a chunk is worked on whole when more than 1/4 of its pairs differ
_KEPT_ULPS_PER_CHUNK = 4096  # more ULP distances than this are counted by the worker
# Threads for the tensor pass. The work streams through memory: on a two-vCPU machine a second
# thread (or process) added no throughput and 30-60% more CPU time, so half the CPUs, up to 4.
_WORKERS = max(1, min(4, (os.cpu_count() or 1) // 2))
_FLOAT_VIEW = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}


def _json_float(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class TensorDiff:
    """One tensor.  ``status`` is "equal" (bit-equal), "changed", "only-in-a", "only-in-b",
    "dtype-differs" or "shape-differs"; ``elements`` counts a's elements (b's if only in b).
    ``passes_tolerance`` is None unless rtol/atol were given."""

    name: str
    status: str
    dtype_a: str | None
    dtype_b: str | None
    shape_a: list[int] | None
    shape_b: list[int] | None
    elements: int
    bit_equal_fraction: float | None
    max_abs_diff: float | None
    mean_abs_diff: float | None
    rel_l2: float | None
    cosine: float | None
    median_ulp: float | None
    max_rel_diff: float | None
    passes_tolerance: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: infinite metrics become None and their names are listed in "infinite"."""
        raw = asdict(self)
        out = {k: _json_float(v) if isinstance(v, float) else v for k, v in raw.items()}
        out["infinite"] = [k for k, v in raw.items() if isinstance(v, float) and math.isinf(v)]
        return out


def within_tolerance(
    max_abs_diff: float | None, max_rel_diff: float | None, rtol: float, atol: float
) -> bool:
    """Decide tolerance from recorded metrics alone; conservative (sound, not complete).

    True when ``max_abs_diff <= atol`` or ``max_rel_diff <= rtol``: either implies
    ``|a-b| <= atol + rtol*|b|`` for every element.  It may return False for tensors that pass
    the elementwise check (one element needs atol, another rtol); a missing (None) metric never
    counts as satisfied.
    """
    return (max_abs_diff is not None and max_abs_diff <= atol) or (
        max_rel_diff is not None and max_rel_diff <= rtol
    )


def _tolerance(rtol: float | None, atol: float | None) -> tuple[float, float] | None:
    if rtol is None and atol is None:
        return None
    pair = (0.0 if rtol is None else float(rtol), 0.0 if atol is None else float(atol))
    if not all(math.isfinite(v) and v >= 0 for v in pair):
        raise InputError(
            f"Tolerances must be finite and non-negative, got rtol={rtol}, atol={atol}."
        )
    return pair


def _as_float64(
    bits: np.ndarray, dtype: str, out: np.ndarray | None = None, wide: np.ndarray | None = None
) -> np.ndarray:
    """The values that raw bits encode, exactly, as float64 (into ``out`` when given; BF16
    also needs ``wide``, a uint32 buffer of the same length)."""
    out = np.empty(bits.shape, np.float64) if out is None else out
    if dtype == "BF16":  # bfloat16 is the upper half of a float32
        wide = np.empty(bits.shape, np.uint32) if wide is None else wide
        np.left_shift(bits.view(np.uint16), 16, out=wide, dtype=np.uint32)
        np.copyto(out, wide.view(np.float32))
    else:
        np.copyto(out, bits.view(_FLOAT_VIEW.get(dtype, bits.dtype)), casting="unsafe")
    return out


def _ratio(num: float, den: float) -> float | None:
    if den == 0:
        return 0.0 if num == 0 else None
    return num / den if math.isfinite(den) else None


def _cosine(aa: float, bb: float, ab: float) -> float | None:
    if aa == 0 or bb == 0 or not all(math.isfinite(v) for v in (aa, bb, ab)):
        return None
    return max(-1.0, min(1.0, ab / (math.sqrt(aa) * math.sqrt(bb))))


class _Files:
    """The files (a and b; a checkpoint comparison adds the start) opened for positional reads,
    which the worker threads share (a positional read moves no shared file offset), and each
    thread's reusable buffers."""

    def __init__(self, *paths: Path) -> None:
        self.paths = paths
        self._fds: list[int] = []
        self._buffers: dict[int, dict[str, np.ndarray]] = {}
        for path in self.paths:
            try:
                self._fds.append(os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0)))
            except OSError as err:
                self.close()
                raise _unreadable(path, err) from err

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def size(self, side: int) -> int:
        """The size of file ``side`` as opened."""
        return os.fstat(self._fds[side]).st_size

    def buffer(self, name: str, count: int, dtype: Any) -> np.ndarray:
        """``count`` items of this thread's buffer ``name`` (contents undefined)."""
        mine = self._buffers.setdefault(threading.get_ident(), {})
        nbytes = count * np.dtype(dtype).itemsize
        buf = mine.get(name)
        if buf is None or buf.size < nbytes:
            buf = mine[name] = np.empty(nbytes, np.uint8)
        return buf[:nbytes].view(dtype)

    def read(self, side: int, offset: int, nbytes: int, name: str) -> np.ndarray:
        """``nbytes`` bytes at ``offset`` of file ``side`` (0: a, 1: b, ...), in buffer ``name``."""
        out = self.buffer(name, nbytes, np.uint8)
        view, done = memoryview(out), 0
        try:
            while done < nbytes:
                got = _pread_into(self._fds[side], view[done:], offset + done)
                if got == 0:
                    raise InputError(f"{self.paths[side]} became shorter while it was compared.")
                done += got
        except OSError as err:
            raise _unreadable(self.paths[side], err) from err
        return out


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)  # platforms without preadv: one copy more
    view[: len(data)] = data
    return len(data)


def _layout(dtype: str) -> tuple[str, str]:
    """(raw bits, kind) of a dtype; GGUF's quantized blocks are compared as bytes."""
    return _DTYPES.get(dtype, ("u1", "raw"))


@dataclass(frozen=True)
class _Job:
    """A tensor present in both files with the same dtype and shape."""

    name: str
    a: _Entry
    b: _Entry
    files: _Files
    tol: tuple[float, float] | None

    @property
    def bits(self) -> np.dtype:
        return np.dtype(_layout(self.a.dtype)[0])

    @property
    def kind(self) -> str:
        return _layout(self.a.dtype)[1]

    def spans(self) -> list[tuple[int, int]]:
        """(first element, element count) of each read: _READ_CHUNKS chunks at a time."""
        n = (self.a.end - self.a.begin) // self.bits.itemsize
        step = max(1, _CHUNK_ELEMENTS) * _READ_CHUNKS
        return [(s, min(step, n - s)) for s in range(0, n, step)]

    def read(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw bytes of elements start..start+count of both tensors."""
        width = self.bits.itemsize
        raw_a = self.files.read(0, self.a.begin + start * width, count * width, "raw a")
        raw_b = self.files.read(1, self.b.begin + start * width, count * width, "raw b")
        return raw_a, raw_b

    def ulp_distances(self) -> Iterator[np.ndarray]:
        """Every chunk's ULP distances once more, for an exact median of a large tensor (-1
        for pairs of different sign, which it leaves out)."""
        for start, count in self.spans():
            raw_a, raw_b = self.read(start, count)
            yield _ulp_distances(raw_a.view(self.bits), raw_b.view(self.bits), self.files)


@dataclass
class _Part:
    """What one chunk of a tensor contributes to its metrics."""

    equal: int
    first_difference: int | None = None  # byte offset in the tensor
    max_abs: float = 0.0
    sum_abs: float = 0.0
    sum_sq: float = 0.0
    aa: float = 0.0  # sums of a*a, b*b and a*b over pairs where both are finite
    bb: float = 0.0
    ab: float = 0.0
    max_rel: float = 0.0
    passes: bool = True
    zero_ulps: int = 0  # bit-equal pairs, at ULP distance 0
    ulps: np.ndarray | None = None  # the other ULP distances when few, else
    ulp_counts: np.ndarray | None = None  # their ulp_median.bucket_counts


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    """x . y without BLAS: its own threads fight the workers for the cores (a hundredfold
    slowdown measured on two cores), and its sums would depend on its thread count."""
    return float(np.einsum("i,i->", x, y))


def _ulp_distances(ia: np.ndarray, ib: np.ndarray, files: _Files | None = None) -> np.ndarray:
    """|ia - ib| of each pair, or -1 where the sign bits differ: the difference of such a pair
    may wrap around, and no median counts it. (-1 rather than leaving them out: selecting
    them branches on each pair, several times slower when the signs are mixed.) With
    ``files``, in its buffers."""
    count = ia.size
    distance = np.subtract(ia, ib, out=files.buffer("ulps", count, ia.dtype) if files else None)
    np.abs(distance, out=distance)
    signs = np.bitwise_xor(ia, ib, out=files.buffer("signs", count, ia.dtype) if files else None)
    np.right_shift(signs, 8 * ia.itemsize - 1, out=signs)  # -1 where the signs differ, else 0
    np.bitwise_or(distance, signs, out=distance)
    return distance


def _ulp_counts(ia: np.ndarray, ib: np.ndarray, files: _Files) -> np.ndarray:
    """bucket_counts of the ULP distances of a whole chunk's pairs whose signs agree: the
    others are counted as distance 0 and taken off again (cheaper than leaving them out)."""
    count = ia.size
    distance = np.subtract(ia, ib, out=files.buffer("ulps", count, ia.dtype))
    np.abs(distance, out=distance)
    signs = np.bitwise_xor(ia, ib, out=files.buffer("signs", count, ia.dtype))
    agree = np.greater_equal(signs, 0, out=files.buffer("agree", count, np.bool_))
    np.multiply(distance, agree, out=distance)
    counts = ulp_median.bucket_counts(distance, files.buffer("ulp index", count, np.int64))
    counts[0] -= count - int(np.count_nonzero(agree))
    return counts


def _span_parts(job: _Job, start: int, count: int) -> list[_Part]:
    """Metrics of the chunks of one read; runs on a worker thread (numpy releases the GIL in
    its loops). A read covers several chunks, as the arrays of a smaller chunk stay in the
    core's cache while it is worked on (a quarter faster than 1 MiB chunks)."""
    raw_a, raw_b = job.read(start, count)
    step, width = max(1, _CHUNK_ELEMENTS), job.bits.itemsize
    return [
        _chunk_part(job, start + s, raw_a[s * width : (s + step) * width],
                    raw_b[s * width : (s + step) * width])
        for s in range(0, count, step)
    ]  # fmt: skip


def _chunk_part(job: _Job, start: int, raw_a: np.ndarray, raw_b: np.ndarray) -> _Part:
    """Metrics of one chunk: elements start.. of the tensor, in raw bytes."""
    files, dtype, kind = job.files, job.a.dtype, job.kind
    ia, ib = raw_a.view(job.bits), raw_b.view(job.bits)
    count = ia.size
    differs = np.not_equal(ia, ib, out=files.buffer("differs", count, np.bool_))
    differing = int(np.count_nonzero(differs))
    part = _Part(count - differing)
    if differing:
        width, first = job.bits.itemsize, int(differs.argmax())
        element = slice(first * width, (first + 1) * width)
        part.first_difference = (start + first) * width + int(
            (raw_a[element] != raw_b[element]).argmax()
        )
    if kind == "raw":
        return part
    wide = files.buffer("bf16 wide", count, np.uint32) if dtype == "BF16" else None
    fb = _as_float64(ib, dtype, files.buffer("b values", count, np.float64), wide)
    if differing * _DENSE_SHARE > count:  # most pairs differ: work on the whole chunk
        fa = _as_float64(ia, dtype, files.buffer("a values", count, np.float64), wide)
        diff = files.buffer("diff", count, np.float64)
        _pair_stats(part, fa, fb, diff, differs if kind == "int" else None, job.tol)
        if kind == "float":
            part.ulp_counts = _ulp_counts(ia, ib, files)
        return part
    # Few pairs differ: the metrics of those alone, plus b*b of the bit-equal rest (a == b).
    with np.errstate(all="ignore"):
        everything = _dot(fb, fb)
    if differing:
        where = np.flatnonzero(differs)
        sa, sb = ia[where], ib[where]
        finite = _pair_stats(
            part, _as_float64(sa, dtype), _as_float64(sb, dtype), np.empty(where.size),
            True if kind == "int" else None, job.tol,
        )  # fmt: skip
        if kind == "float":
            part.zero_ulps = part.equal
            distances = _ulp_distances(sa, sb)
            distances = distances[distances >= 0]
            if distances.size <= _KEPT_ULPS_PER_CHUNK:
                part.ulps = distances
            else:
                part.ulp_counts = ulp_median.bucket_counts(distances)
    else:
        finite = True
        part.zero_ulps = count if kind == "float" else 0
    if finite and math.isfinite(everything):
        equal_sq = everything - part.bb  # part.bb holds the differing pairs' b*b
    else:  # infinities or NaNs: sum over the finite bit-equal pairs only
        fb[differs | ~np.isfinite(fb)] = 0.0
        with np.errstate(all="ignore"):
            equal_sq = _dot(fb, fb)
    part.aa, part.bb, part.ab = part.aa + equal_sq, part.bb + equal_sq, part.ab + equal_sq
    return part


def _pair_stats(
    part: _Part, fa: np.ndarray, fb: np.ndarray, diff: np.ndarray,
    differing: np.ndarray | bool | None, tol: tuple[float, float] | None,
) -> bool:  # fmt: skip
    """Sets part's metrics of the pairs (fa[i], fb[i]), overwriting fa, fb and diff (a buffer).
    ``differing`` marks integer pairs whose bits differ (True: all), None for floats. True when
    every value was finite; otherwise the slower path that masks the others ran instead."""
    with np.errstate(all="ignore"):
        np.subtract(fa, fb, out=diff)
        np.abs(diff, out=diff)
        if differing is not None:  # integers beyond 2**53 may round to equal floats
            np.maximum(diff, differing, out=diff)
        sums = (
            float(np.add.reduce(diff)), _dot(diff, diff), _dot(fa, fa), _dot(fb, fb),
            _dot(fa, fb),
        )  # fmt: skip
        if not all(math.isfinite(s) for s in sums):
            _masked_pair_stats(part, fa, fb, tol)
            return False
        part.sum_abs, part.sum_sq, part.aa, part.bb, part.ab = sums
        part.max_abs = float(diff.max())
        abs_b = np.abs(fb, out=fb)
        ratio = np.divide(diff, abs_b, out=fa)  # 0/0 (equal pairs) is NaN, which fmax skips
        top = float(np.fmax.reduce(ratio))
        part.max_rel = 0.0 if math.isnan(top) else top
        if tol is not None and part.max_abs > tol[1]:  # else atol alone admits every pair
            bound = np.multiply(abs_b, tol[0], out=fa)
            bound += tol[1]
            part.passes = bool(np.all(diff <= bound))
    return True


def _masked_pair_stats(
    part: _Part, fa: np.ndarray, fb: np.ndarray, tol: tuple[float, float] | None
) -> None:
    """_pair_stats for float pairs where some value is infinite or NaN (see the module)."""
    with np.errstate(all="ignore"):
        diff = np.abs(fa - fb)
        diff[(fa == fb) | (np.isnan(fa) & np.isnan(fb))] = 0.0
        diff[np.isnan(diff)] = np.inf
        abs_b = np.abs(fb)
        rel = diff / abs_b
        rel[diff == 0] = 0.0
        rel[np.isnan(rel)] = np.inf
        if tol is not None:
            bound = tol[1] + tol[0] * abs_b
            part.passes = bool(np.all((diff == 0) | ((diff <= bound) & np.isfinite(diff))))
        finite = np.isfinite(fa) & np.isfinite(fb)
        fa[~finite] = 0.0
        fb[~finite] = 0.0
        part.max_abs, part.max_rel = float(diff.max()), float(rel.max())
        part.sum_abs, part.sum_sq = float(diff.sum()), _dot(diff, diff)
        part.aa, part.bb, part.ab = _dot(fa, fa), _dot(fb, fb), _dot(fa, fb)


class _Totals:
    """A tensor's metrics, merged from its chunks in order (so the sums never depend on which
    thread finished first)."""

    def __init__(self, job: _Job) -> None:
        self.job = job
        self.equal = 0
        self.first_difference: int | None = None
        self.max_abs = self.sum_abs = self.sum_sq = self.aa = self.bb = self.ab = 0.0
        self.max_rel = 0.0
        self.passes = True
        self.median = ulp_median.MedianUlp()

    def add(self, part: _Part) -> None:
        self.equal += part.equal
        if self.first_difference is None:
            self.first_difference = part.first_difference
        self.max_abs = max(self.max_abs, part.max_abs)
        self.max_rel = max(self.max_rel, part.max_rel)
        self.sum_abs, self.sum_sq = self.sum_abs + part.sum_abs, self.sum_sq + part.sum_sq
        self.aa, self.bb, self.ab = self.aa + part.aa, self.bb + part.bb, self.ab + part.ab
        self.passes = self.passes and part.passes
        self.median.add_zeros(part.zero_ulps)
        if part.ulps is not None:
            self.median.add(part.ulps)
        if part.ulp_counts is not None:
            self.median.add_counts(part.ulp_counts)

    def result(self) -> TensorDiff:
        job, n = self.job, (self.job.a.end - self.job.a.begin) // self.job.bits.itemsize
        numeric = n > 0 and job.kind != "raw"
        try:
            median = self.median.median(job.ulp_distances) if job.kind == "float" else None
        except ulp_median.Changed:
            raise InputError(
                f"{job.files.paths[0]} or {job.files.paths[1]} changed while it was compared."
            ) from None
        return TensorDiff(
            job.name, "equal" if self.equal == n else "changed", job.a.dtype, job.b.dtype,
            job.a.shape, job.b.shape, n,
            bit_equal_fraction=self.equal / n if n else None,
            max_abs_diff=self.max_abs if numeric else None,
            mean_abs_diff=self.sum_abs / n if numeric else None,
            rel_l2=_ratio(math.sqrt(self.sum_sq), math.sqrt(self.bb)) if numeric else None,
            cosine=_cosine(self.aa, self.bb, self.ab) if numeric else None,
            median_ulp=median,
            max_rel_diff=self.max_rel if numeric else None,
            # A tolerance is for rounding: an integer, boolean or packed (quantized) value
            # that changed is a different value, under every rule.
            passes_tolerance=None if job.tol is None else (
                self.passes if job.kind == "float" else self.equal == n),
        )  # fmt: skip


def _in_order(tasks: Iterable[Callable[[], list[_Part]]]) -> Iterator[list[_Part]]:
    """The tasks' results in order, computed on up to _WORKERS threads a few tasks ahead."""
    if _WORKERS <= 1:
        yield from (task() for task in tasks)
        return
    pending: deque[Future[list[_Part]]] = deque()
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        try:
            for task in tasks:
                pending.append(pool.submit(task))
                if len(pending) > 2 * _WORKERS:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # on an error or an early stop: no new work; running tasks finish
            for future in pending:
                future.cancel()


def _mismatch(
    name: str, status: str, ea: _Entry | None, eb: _Entry | None, tol: tuple[float, float] | None
) -> TensorDiff:
    present = ea or eb
    assert present is not None
    return TensorDiff(
        name, status, ea.dtype if ea else None, eb.dtype if eb else None,
        ea.shape if ea else None, eb.shape if eb else None, math.prod(present.shape),
        None, None, None, None, None, None, None, None if tol is None else False,
    )  # fmt: skip


def _sort_key(t: TensorDiff) -> tuple[int, float, str]:
    if t.status == "equal":
        return (3, 0.0, t.name)
    if t.status != "changed":
        return (0, 0.0, t.name)
    severity = math.inf if t.rel_l2 is None else t.rel_l2
    return (2 if t.passes_tolerance else 1, -severity, t.name)


def _diff_tensors(
    a: Path, b: Path, ha: _Header, hb: _Header, tol: tuple[float, float] | None
) -> tuple[list[TensorDiff], int | None]:
    """The tensors compared (worst first), and the offset in a of the first differing byte
    of tensor data (None when every common tensor is bit-equal)."""
    out: list[TensorDiff] = []
    files = _Files(a, b)
    jobs: list[_Job] = []
    for name in ha.tensors.keys() | hb.tensors.keys():
        ea, eb = ha.tensors.get(name), hb.tensors.get(name)
        if ea is None or eb is None:
            out.append(_mismatch(name, "only-in-b" if ea is None else "only-in-a", ea, eb, tol))
        elif ea.dtype != eb.dtype:
            out.append(_mismatch(name, "dtype-differs", ea, eb, tol))
        elif ea.shape != eb.shape:
            out.append(_mismatch(name, "shape-differs", ea, eb, tol))
        else:
            jobs.append(_Job(name, ea, eb, files, tol))
    jobs.sort(key=lambda job: (job.a.begin, job.name))  # file a front to back
    first: int | None = None
    parts = _in_order(
        functools.partial(_span_parts, job, start, count)
        for job in jobs for start, count in job.spans()
    )  # fmt: skip
    try:
        for job in jobs:
            totals = _Totals(job)
            for _ in job.spans():
                for part in next(parts):
                    totals.add(part)
            out.append(totals.result())
            if totals.first_difference is not None:
                offset = job.a.begin + totals.first_difference
                first = offset if first is None else min(first, offset)
    finally:
        parts.close()  # stops the workers before their files close
        files.close()
    return sorted(out, key=_sort_key), first
