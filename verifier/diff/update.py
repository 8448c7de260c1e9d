"""How far a replayed checkpoint lies from the logged one, measured against the segment's update.

A replayed segment ends at W'ₑ; the log says the run reached Wₑ from Wₛ. Their distance means
little on its own (weights of norm 100 moved by 1e-6 is noise; an update of norm 1e-6 moved by
1e-6 is a different update), so it is measured against the update the segment made:
ratio = ‖W'ₑ - Wₑ‖ / ‖Wₑ - Wₛ‖, per tensor and over every floating-point tensor of the
checkpoint together. Integer and boolean tensors (step counters, masks, data positions) are
compared exactly, and so is every file that is not a safetensors file.

The safetensors parsing is verifier.diff.safetensors' (one parser, one set of checks on
headers and offsets); the reading is verifier.diff.compare's (positional reads into each
thread's buffers, spans worked on by its threads, results merged in file order).

How a span is summed (chosen by measurement, docs/benchmarks.md): each piece of a tensor is
first compared as bytes, and a bit-equal piece adds no distance (or, against the start, no
update) at the cost of one memory comparison. Otherwise both sides are subtracted straight into
a float64 buffer (each value exact, one rounding) and squared and summed in one dot product; a
NaN or infinity shows in that sum, and only then are bit-equal elements (NaN payloads included)
masked out. A NaN or infinity that is not bit-equal on both sides makes the sums infinite.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verifier.diff.compare import _FLOAT_VIEW, _as_float64, _dot, _Files, _in_order
from verifier.diff.safetensors import _DTYPES, _Entry, _Header, _read_header
from verifier.errors import InputError
from verifier.formats.digest import list_files

# A tolerance that allows the replay to miss by more than this share of the segment's own
# update lets a forged update hide inside it.
MAX_UPDATE_RTOL = 0.1
TENSORS_KEPT = 20
# Elements read at a time from each file (positional reads into each thread's buffers, so
# memory stays a few MB whatever the checkpoint's size), and worked on at a time: a piece's
# float64 buffer stays in the core's cache between the subtraction and the sums.
_SPAN = 1 << 20
_PIECE = 1 << 16


@dataclass
class TensorDistance:
    file: str
    tensor: str
    replay_distance: float  # ‖W'ₑ - Wₑ‖ (for integer tensors: inf when any element differs)
    update_size: float  # ‖Wₑ - Wₛ‖
    max_abs_diff: float

    @property
    def ratio(self) -> float:
        return _ratio(self.replay_distance, self.update_size)

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "tensor": self.tensor, "ratio": _finite(self.ratio),
                "maxAbsDiff": _finite(self.max_abs_diff)}


@dataclass
class CheckpointComparison:
    """The replayed end checkpoint against the logged one (start: the segment's start)."""

    tensors: list[TensorDistance] = field(default_factory=list)  # the tensors that differ
    files: list[dict[str, str]] = field(default_factory=list)  # files that differ, not tensors
    replay_distance: float = 0.0
    update_size: float = 0.0

    @property
    def ratio(self) -> float:
        return _ratio(self.replay_distance, self.update_size)

    def worst(self) -> list[TensorDistance]:
        return sorted(self.tensors, key=lambda t: (-t.ratio, t.file, t.tensor))[:TENSORS_KEPT]

    def within(self, update_rtol: float | None) -> bool:
        """Whether the difference is inside the tolerance: every file but tensor files
        identical, and the overall and every tensor's ratio at most update_rtol."""
        if update_rtol is None or self.files:
            return False
        return self.ratio <= update_rtol and all(t.ratio <= update_rtol for t in self.tensors)

    def update_json(self) -> dict[str, Any]:
        return {"ratio": _finite(self.ratio), "replayDistance": _finite(self.replay_distance),
                "updateSize": _finite(self.update_size)}


def check_update_rtol(value: float, where: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise InputError(f"{where}: the update tolerance {value!r} is not a number from 0 to "
                         f"{MAX_UPDATE_RTOL}.")
    if value > MAX_UPDATE_RTOL:
        raise InputError(f"{where}: an update tolerance of {value:g} lets the replay miss by "
                         f"more than {MAX_UPDATE_RTOL:g} of the segment's own update, so a "
                         "forged update could hide in it; refusing it.")
    return value


def compare_checkpoints(replayed: Path, logged: Path, start: Path) -> CheckpointComparison:
    """Compare three checkpoint directories (each file listed without following links).

    Nothing is hashed here: a replay hashes its checkpoints anyway, to find a MATCH and to check
    the logged one against the log, and the bytes are compared as they are read. Bit-equal
    pieces cost one memory comparison; the rest is summed in float64 (one pass, module doc)."""
    out = CheckpointComparison()
    ours, theirs = set(list_files(replayed)), set(list_files(logged))
    # The start is listed like the other two, so a link there is refused rather than followed:
    # a start file read through a link could make the update look as large as its author liked,
    # and any replay distance small beside it.
    if start.is_symlink():
        raise InputError(f"{start}: is a symbolic link; links are refused.")
    starts = set(list_files(start))
    for name in sorted(ours ^ theirs):
        out.files.append({"name": name, "verdict": "MISSING" if name in theirs else "EXTRA"})
    sq_replay = sq_update = 0.0
    for name in sorted(ours & theirs):
        a, b, s = replayed / name, logged / name, start / name
        headers = _headers(a, b, s) if name.endswith(".safetensors") and name in starts else None
        if headers is not None and _same_tensors(*headers):
            distances, file_replay, file_update = _tensor_pass(name, (a, b, s), headers)
            out.tensors.extend(d for d in distances if d.replay_distance > 0)
            if not _same_outside_tensors(a, b, headers[0], headers[1]):
                # Its header (__metadata__, layout) or bytes no tensor claims: not weights,
                # so they must match exactly like any non-tensor file, whatever the ratio.
                out.files.append({"name": name, "verdict": "DIFFERS"})
            sq_replay += file_replay
            sq_update += file_update
        elif not _same_bytes(a, b):
            out.files.append({"name": name, "verdict": "DIFFERS"})
        elif headers is not None and headers[1] is not None and headers[2] is not None:
            # The replay reproduced it exactly; its tensors that the start holds alike still
            # moved, and count in the overall update (the others add nothing, which only
            # makes ratios larger).
            update = _tensor_pass(name, (b, b, s), (headers[1], headers[1], headers[2]))[2]
            sq_update += update
    out.replay_distance, out.update_size = math.sqrt(sq_replay), math.sqrt(sq_update)
    return out


def _headers(a: Path, b: Path, s: Path) -> tuple[_Header | None, _Header | None,
                                                  _Header | None]:
    """Each file's safetensors header, or None where it is not a safetensors file."""
    found: list[_Header | None] = []
    for path in (a, b, s):
        try:
            found.append(_read_header(path))
        except InputError:
            found.append(None)
    return found[0], found[1], found[2]


def _same_tensors(ha: _Header | None, hb: _Header | None, hs: _Header | None) -> bool:
    """Whether the three files hold the same tensors with the same dtypes and shapes (else no
    ratio means anything)."""
    if ha is None or hb is None or hs is None:
        return False
    if not (ha.tensors.keys() == hb.tensors.keys() == hs.tensors.keys()):
        return False
    return all(ha.tensors[t].dtype == hb.tensors[t].dtype == hs.tensors[t].dtype
               and ha.tensors[t].shape == hb.tensors[t].shape == hs.tensors[t].shape
               for t in ha.tensors)


def _same_outside_tensors(a: Path, b: Path, ha: _Header, hb: _Header) -> bool:
    """Whether two safetensors files hold the same bytes outside their tensors' data: the same
    header bytes (so the same offsets) and the same bytes in any gap or tail."""
    if ha.prefix != hb.prefix:
        return False
    files = _Files(a, b)
    try:
        size = files.size(0)
        if size != files.size(1):
            return False
        position = len(ha.prefix)
        for begin, end in [*sorted((e.begin, e.end) for e in ha.tensors.values()), (size, size)]:
            if begin > position and not _same_range(files, position, begin - position):
                return False
            position = max(position, end)
        return True
    finally:
        files.close()


def _tensor_pass(name: str, paths: tuple[Path, Path, Path],
                 headers: tuple[_Header, _Header, _Header]
                 ) -> tuple[list[TensorDistance], float, float]:
    """Per-tensor distances and the file's squared sums over the tensors all three hold alike.

    Each tensor is read in spans of _SPAN elements on compare's worker threads; the spans'
    sums are added in file order, so the figures do not depend on the thread count."""
    ha, hb, hs = headers
    files = _Files(*paths)
    try:
        jobs: list[tuple[str, _Entry, _Entry, _Entry]] = []
        for tensor in sorted(hb.tensors):
            ea, eb, es = ha.tensors[tensor], hb.tensors[tensor], hs.tensors.get(tensor)
            if es is not None and eb.dtype == es.dtype and eb.shape == es.shape:
                jobs.append((tensor, ea, eb, es))
        tasks = [functools.partial(_span, files, ea, eb, es, first, count)
                 for _, ea, eb, es in jobs for first, count in _spans(eb)]
        results = iter(list(_in_order(tasks)))  # three floats a span
        distances: list[TensorDistance] = []
        sq_replay = sq_update = 0.0
        for tensor, _ea, eb, _es in jobs:
            replay = update = worst = 0.0
            for _ in _spans(eb):
                part = next(results)
                replay, update, worst = replay + part[0], update + part[1], max(worst, part[2])
            if _DTYPES[eb.dtype][1] != "float":
                if replay:
                    distances.append(TensorDistance(name, tensor, math.inf, 0.0, math.inf))
                continue
            sq_replay += replay
            sq_update += update
            distances.append(TensorDistance(name, tensor, math.sqrt(replay), math.sqrt(update),
                                            worst))
        return distances, sq_replay, sq_update
    finally:
        files.close()


def _spans(entry: _Entry) -> list[tuple[int, int]]:
    count = (entry.end - entry.begin) // np.dtype(_DTYPES[entry.dtype][0]).itemsize
    return [(first, min(_SPAN, count - first)) for first in range(0, count, _SPAN)]


def _span(files: _Files, ea: _Entry, eb: _Entry, es: _Entry, first: int, count: int
          ) -> tuple[float, float, float]:
    """(‖a - b‖², ‖b - s‖², max |a - b|) of elements first..first+count of one tensor; for an
    integer or boolean tensor the first is 1 when any element differs. Runs on a worker
    thread: numpy releases the GIL in its loops."""
    bits = np.dtype(_DTYPES[eb.dtype][0])
    width = bits.itemsize
    raw_a = files.read(0, ea.begin + first * width, count * width, "a").view(bits)
    raw_b = files.read(1, eb.begin + first * width, count * width, "b").view(bits)
    raw_s = files.read(2, es.begin + first * width, count * width, "s").view(bits)
    if _DTYPES[eb.dtype][1] != "float":
        return float(not np.array_equal(raw_a, raw_b)), 0.0, 0.0
    replay = update = worst = 0.0
    for begin in range(0, count, _PIECE):
        pa, pb, ps = (r[begin:begin + _PIECE] for r in (raw_a, raw_b, raw_s))
        ua, ub, us = (p.view(f"u{width}") for p in (pa, pb, ps))
        n = pa.size
        d = files.buffer("d", n, np.float64)
        if not np.array_equal(ua, ub):
            _difference(pa, pb, eb.dtype, d, files)
            part = _dot(d, d)
            if not math.isfinite(part):
                d[ua == ub] = 0.0
                part = _dot(d, d)
            if math.isfinite(part):
                replay += part
                worst = max(worst, -float(d.min()), float(d.max()))
            else:
                replay = worst = math.inf
        if not np.array_equal(ub, us):
            _difference(pb, ps, eb.dtype, d, files)
            moved = _dot(d, d)
            if not math.isfinite(moved):
                d[ub == us] = 0.0
                moved = _dot(d, d)
            update += moved if math.isfinite(moved) else math.inf
    return replay, update, worst


def _difference(x: np.ndarray, y: np.ndarray, dtype: str, out: np.ndarray, files: _Files
                ) -> None:
    """x - y in float64 (exact values of either side, then one rounding), into out."""
    if dtype == "BF16":  # numpy has no bfloat16: widen both sides first
        wide = files.buffer("wide", x.size, np.uint32)
        _as_float64(x, dtype, out, wide)
        other = _as_float64(y, dtype, files.buffer("other", x.size, np.float64), wide)
        np.subtract(out, other, out=out)
        return
    view = _FLOAT_VIEW[dtype]
    np.subtract(x.view(view), y.view(view), out=out, dtype=np.float64)


def _same_bytes(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes."""
    files = _Files(a, b)
    try:
        size = files.size(0)
        return size == files.size(1) and _same_range(files, 0, size)
    finally:
        files.close()


def _same_range(files: _Files, offset: int, length: int) -> bool:
    """Whether both files hold the same bytes at offset..offset+length, read a span at a time
    (a hostile gap is never read whole into memory)."""
    step = _SPAN * 4
    for at in range(offset, offset + length, step):
        n = min(step, offset + length - at)
        if not np.array_equal(files.read(0, at, n, "a"), files.read(1, at, n, "b")):
            return False
    return True


def _ratio(distance: float, size: float) -> float:
    if distance == 0:
        return 0.0
    if size == 0 or not math.isfinite(size):
        return math.inf
    return distance / size


def _finite(value: float) -> float | None:
    """JSON has no infinity: an infinite distance is written as null (and judged as one)."""
    return value if math.isfinite(value) else None
