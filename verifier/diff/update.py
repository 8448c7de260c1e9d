"""How far a replayed checkpoint lies from the logged one, measured against the segment's update.

A replayed segment ends at W'ₑ; the log says the run reached Wₑ from Wₛ. Their distance means
little on its own (weights of norm 100 moved by 1e-6 is noise; an update of norm 1e-6 moved by
1e-6 is a different update), so it is measured against the update the segment made:
ratio = ‖W'ₑ - Wₑ‖ / ‖Wₑ - Wₛ‖, per tensor and over every floating-point tensor of the
checkpoint together. Integer and boolean tensors (step counters, masks, data positions) are
compared exactly, and so is every file that is not a safetensors file.

The safetensors parsing is verifier.diff.safetensors' (one parser, one set of checks on
headers and offsets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verifier.diff.compare import _FLOAT_VIEW
from verifier.diff.safetensors import _DTYPES, _read_header, is_safetensors
from verifier.errors import InputError
from verifier.formats.digest import Hasher, list_files

# A tolerance that allows the replay to miss by more than this share of the segment's own
# update lets a forged update hide inside it.
MAX_UPDATE_RTOL = 0.1
TENSORS_KEPT = 20
_CHUNK = 1 << 22  # elements per pass, so a large tensor never needs three float64 copies whole


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


def compare_checkpoints(replayed: Path, logged: Path, start: Path,
                        hasher: Hasher) -> CheckpointComparison:
    """Compare three checkpoint directories (each file listed without following links)."""
    out = CheckpointComparison()
    ours, theirs = set(list_files(replayed)), set(list_files(logged))
    for name in sorted(ours ^ theirs):
        out.files.append({"name": name, "verdict": "MISSING" if name in theirs else "EXTRA"})
    common = sorted(ours & theirs)
    a_sha = hasher.hash_files([replayed / n for n in common])
    b_sha = hasher.hash_files([logged / n for n in common])
    sq_replay = sq_update = 0.0
    for name, sha_a, sha_b in zip(common, a_sha, b_sha, strict=True):
        if sha_a == sha_b:
            # Identical files still moved: their update counts in the overall size.
            if name.endswith(".safetensors") and (start / name).is_file():
                sq_update += _update_only(replayed / name, start / name)
            continue
        if not (name.endswith(".safetensors") and is_safetensors(replayed / name)
                and is_safetensors(logged / name) and (start / name).is_file()
                and is_safetensors(start / name)):
            out.files.append({"name": name, "verdict": "DIFFERS"})
            continue
        found = _compare_file(name, replayed / name, logged / name, start / name)
        if found is None:
            out.files.append({"name": name, "verdict": "DIFFERS"})
            continue
        distances, file_replay, file_update = found
        out.tensors.extend(d for d in distances if d.replay_distance > 0)
        sq_replay += file_replay
        sq_update += file_update
    out.replay_distance, out.update_size = math.sqrt(sq_replay), math.sqrt(sq_update)
    return out


def _compare_file(name: str, a: Path, b: Path, s: Path
                  ) -> tuple[list[TensorDistance], float, float] | None:
    """Per-tensor distances and the file's squared sums; None when the three files do not
    hold the same tensors with the same dtypes and shapes (then no ratio means anything)."""
    ha, hb, hs = _read_header(a), _read_header(b), _read_header(s)
    if not (ha.tensors.keys() == hb.tensors.keys() == hs.tensors.keys()):
        return None
    distances: list[TensorDistance] = []
    sq_replay = sq_update = 0.0
    with a.open("rb") as fa, b.open("rb") as fb, s.open("rb") as fs:
        for tensor in sorted(ha.tensors):
            ea, eb, es = ha.tensors[tensor], hb.tensors[tensor], hs.tensors[tensor]
            if not (ea.dtype == eb.dtype == es.dtype and ea.shape == eb.shape == es.shape):
                return None
            ra, rb, rs = (_raw(f, e) for f, e in ((fa, ea), (fb, eb), (fs, es)))
            kind = _DTYPES[ea.dtype][1]
            if kind != "float":
                if ra.tobytes() != rb.tobytes():
                    distances.append(TensorDistance(name, tensor, math.inf, 0.0, math.inf))
                continue
            replay, update, worst = _float_sums(ea.dtype, ra, rb, rs)
            sq_replay += replay
            sq_update += update
            distances.append(TensorDistance(name, tensor, math.sqrt(replay),
                                            math.sqrt(update), worst))
    return distances, sq_replay, sq_update


def _update_only(end: Path, start: Path) -> float:
    """‖Wₑ - Wₛ‖² of a tensor file the replay reproduced exactly (0 when it cannot be read as
    the same tensors: it then adds nothing to the update, which only makes ratios larger)."""
    try:
        he, hs = _read_header(end), _read_header(start)
    except InputError:
        return 0.0
    total = 0.0
    with end.open("rb") as fe, start.open("rb") as fs:
        for tensor, ee in he.tensors.items():
            es = hs.tensors.get(tensor)
            if (es is None or es.dtype != ee.dtype or es.shape != ee.shape
                    or _DTYPES[ee.dtype][1] != "float"):
                continue
            re_, rs = _raw(fe, ee), _raw(fs, es)
            total += _float_sums(ee.dtype, re_, re_, rs)[1]
    return total


def _raw(handle: Any, entry: Any) -> np.ndarray:
    handle.seek(entry.begin)
    data = handle.read(entry.end - entry.begin)
    return np.frombuffer(data, dtype=_DTYPES[entry.dtype][0])


def _as_f64(dtype: str, raw: np.ndarray) -> np.ndarray:
    if dtype == "BF16":
        return (raw.astype(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(
            np.float64)
    return raw.view(_FLOAT_VIEW[dtype]).astype(np.float64)


def _float_sums(dtype: str, ra: np.ndarray, rb: np.ndarray, rs: np.ndarray
                ) -> tuple[float, float, float]:
    """(||a - b||^2, ||b - s||^2, max |a - b|); a NaN or infinity that is not bit-equal on both
    sides makes them infinite.

    One pass per sum: a NaN or infinity anywhere shows in the dot product itself, and only then
    is the chunk looked at again, to let bit-equal elements (NaN payloads included) count as
    no distance and no update."""
    replay = update = worst = 0.0
    for begin in range(0, len(ra), _CHUNK):
        raw_a, raw_b = ra[begin:begin + _CHUNK], rb[begin:begin + _CHUNK]
        b = _as_f64(dtype, raw_b)
        d = _as_f64(dtype, raw_a)
        d -= b
        part = float(np.dot(d, d))
        if not math.isfinite(part):
            d[_bits(raw_a) == _bits(raw_b)] = 0.0
            part = float(np.dot(d, d))
        replay += part if math.isfinite(part) else math.inf
        if d.size:
            low, high = float(d.min()), float(d.max())
            worst = max(worst, -low, high) if math.isfinite(part) else math.inf
        raw_s = rs[begin:begin + _CHUNK]
        b -= _as_f64(dtype, raw_s)
        moved = float(np.dot(b, b))
        if not math.isfinite(moved):
            b[_bits(raw_b) == _bits(raw_s)] = 0.0
            moved = float(np.dot(b, b))
        update += moved if math.isfinite(moved) else math.inf
    return replay, update, worst


def _bits(raw: np.ndarray) -> np.ndarray:
    """The elements as unsigned integers of their width: equal exactly when bit-equal (a NaN
    equals itself, 0.0 is not -0.0)."""
    return raw.view(f"u{raw.dtype.itemsize}")


def _ratio(distance: float, size: float) -> float:
    if distance == 0:
        return 0.0
    if size == 0 or not math.isfinite(size):
        return math.inf
    return distance / size


def _finite(value: float) -> float | None:
    """JSON has no infinity: an infinite distance is written as null (and judged as one)."""
    return value if math.isfinite(value) else None
