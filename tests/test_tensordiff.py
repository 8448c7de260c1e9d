"""Tests for verifier.diff.tensordiff: verdicts, per-tensor metrics, errors and rendering."""

from __future__ import annotations

import json
import math
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from verifier.diff import compare, tensordiff, ulp_median
from verifier.diff.tensordiff import (
    DirDiff,
    FileDiff,
    Verdict,
    diff_files,
    diff_paths,
    is_safetensors,
    render_text,
    within_tolerance,
)
from verifier.errors import InputError


def save(
    path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None
) -> Path:
    save_file(tensors, str(path), metadata=metadata)
    return path


def write_st(
    path: Path,
    tensors: dict[str, tuple[str, list[int], bytes]],
    *,
    data_order: list[str] | None = None,
    metadata: dict[str, str] | None = None,
    pad: int = 0,
) -> Path:
    """Write a safetensors file by hand: JSON keys in dict order, data in data_order."""
    offsets, blob = {}, b""
    for name in data_order or list(tensors):
        raw = tensors[name][2]
        offsets[name] = [len(blob), len(blob) + len(raw)]
        blob += raw
    header: dict[str, object] = {}
    for name, (dtype, shape, _) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": offsets[name]}
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, indent=1).encode() + b" " * pad
    path.write_bytes(struct.pack("<Q", len(text)) + text + blob)
    return path


def bf16_bits(values: list[float]) -> np.ndarray:
    """bfloat16 bit patterns of values that are exactly representable in bfloat16."""
    bits = np.array(values, dtype=np.float32).view(np.uint32)
    assert not np.any(bits & 0xFFFF), "values must be exact in bfloat16"
    return (bits >> 16).astype("<u2")


def by_name(diff: FileDiff) -> dict[str, tensordiff.TensorDiff]:
    return {t.name: t for t in diff.tensors}


# ------------------------------------------------------------------ verdicts and metrics


def test_identical_files(tmp_path: Path) -> None:
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}
    d = diff_files(
        save(tmp_path / "a.safetensors", tensors), save(tmp_path / "b.safetensors", tensors)
    )
    assert d.kind == "safetensors"
    assert d.verdict is Verdict.IDENTICAL
    assert d.first_difference_offset is None
    assert [t.status for t in d.tensors] == ["equal", "equal"]
    assert d.changed_tensors() == []
    assert by_name(d)["w"].bit_equal_fraction == 1.0
    assert by_name(d)["w"].max_abs_diff == 0.0


def test_one_element_changed_listed_first_with_metrics(tmp_path: Path) -> None:
    w = np.arange(10, dtype=np.float32)
    w2 = w.copy()
    w2[3] = 3.5
    other = np.full(4, 2.0, np.float32)
    a = save(tmp_path / "a.safetensors", {"alpha": other, "mid": w, "zeta": other})
    b = save(tmp_path / "b.safetensors", {"alpha": other, "mid": w2, "zeta": other})
    d = diff_files(a, b)
    assert d.verdict is Verdict.DIVERGED
    assert d.first_difference_offset is not None
    assert [t.name for t in d.tensors] == ["mid", "alpha", "zeta"]
    t = d.tensors[0]
    assert t.status == "changed" and t.dtype_a == "F32" and t.shape_a == [10]
    assert t.elements == 10
    assert t.bit_equal_fraction == pytest.approx(9 / 10)
    assert t.max_abs_diff == 0.5
    assert t.mean_abs_diff == pytest.approx(0.05)
    assert t.max_rel_diff == pytest.approx(0.5 / 3.5)
    assert t.median_ulp == 0.0
    assert [c.name for c in d.changed_tensors()] == ["mid"]


def test_median_ulp_hand_computed_ignores_sign_disagreement(tmp_path: Path) -> None:
    a = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], dtype=np.float32)
    b_bits = a.view(np.int32) + np.array([0, 1, 2, 5, 7, 0], dtype=np.int32)
    b = b_bits.view(np.float32).copy()
    b[5] = -1.0  # sign differs: excluded, otherwise the median would be 3.5
    d = diff_files(
        save(tmp_path / "a.safetensors", {"t": a}), save(tmp_path / "b.safetensors", {"t": b})
    )
    t = d.tensors[0]
    assert t.median_ulp == 2.0
    fa, fb = a.astype(np.float64), b.astype(np.float64)
    assert t.rel_l2 == pytest.approx(np.linalg.norm(fa - fb) / np.linalg.norm(fb))
    assert t.cosine == pytest.approx(fa @ fb / (np.linalg.norm(fa) * np.linalg.norm(fb)))
    assert t.max_abs_diff == 2.0


def test_a_metadata_only_change_diverges(tmp_path: Path) -> None:
    # Loaders read __metadata__ (its "format" above all) and it can carry any text, so a
    # header-only change is a difference, in the verdict too (issue 20).
    tensors = {"w": np.arange(4, dtype=np.float32)}
    a = save(tmp_path / "a.safetensors", tensors, {"format": "np", "run": "1"})
    b = save(tmp_path / "b.safetensors", tensors, {"format": "np", "run": "2"})
    d = diff_files(a, b, rtol=1e-3, atol=0)
    assert d.verdict is Verdict.DIVERGED and not d.changed_tensors()
    assert d.metadata_a == {"format": "np", "run": "1"}
    assert d.metadata_b == {"format": "np", "run": "2"}
    assert "__metadata__ differs in keys: run" in render_text(d)
    pt = save(tmp_path / "pt.safetensors", tensors, {"format": "pt"})
    tf = save(tmp_path / "tf.safetensors", tensors, {"format": "tf"})
    big = save(tmp_path / "big.safetensors", tensors, {"format": "pt", "note": "x" * (1 << 20)})
    for other in (tf, big):
        assert diff_files(other, pt).verdict is Verdict.DIVERGED


def test_reordered_header_and_data_is_canonically_identical(tmp_path: Path) -> None:
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    y = np.array([1, -2, 3], dtype=np.int64)
    a = save(tmp_path / "a.safetensors", {"x": x, "y": y})
    b = write_st(
        tmp_path / "b.safetensors",
        {"y": ("I64", [3], y.astype("<i8").tobytes()), "x": ("F32", [3, 2], x.tobytes())},
        data_order=["y", "x"],
        pad=5,
    )
    assert a.read_bytes() != b.read_bytes()
    d = diff_files(a, b)
    assert d.verdict is Verdict.CANONICALLY_IDENTICAL
    assert all(t.status == "equal" for t in d.tensors)


def test_bf16_one_ulp_change(tmp_path: Path) -> None:
    bits = bf16_bits([1.0, 2.0, -3.5, 0.15625])
    a = write_st(tmp_path / "a.safetensors", {"t": ("BF16", [2, 2], bits.tobytes())})
    b = write_st(tmp_path / "b.safetensors", {"t": ("BF16", [2, 2], (bits + 1).tobytes())})
    d = diff_files(a, b)
    t = d.tensors[0]
    assert d.verdict is Verdict.DIVERGED
    assert t.dtype_a == "BF16" and t.status == "changed"
    assert t.median_ulp == 1.0
    assert t.bit_equal_fraction == 0.0
    # one bf16 ULP (8 significand bits): 1.0 -> 1.0078125, 2.0 -> 2.015625, -3.5 -> -3.515625
    assert t.max_abs_diff == 0.015625
    assert t.mean_abs_diff == pytest.approx((0.0078125 + 0.015625 + 0.015625 + 0.0009765625) / 4)
    assert diff_files(a, b, rtol=1e-2).verdict is Verdict.WITHIN_TOLERANCE
    assert diff_files(a, b, rtol=1e-3).verdict is Verdict.DIVERGED


def test_float16_comparison(tmp_path: Path) -> None:
    a = np.array([0.5, -1.0, 2.0, 1000.0], dtype=np.float16)
    b = a.copy()
    b[3] = np.float16(1001.0)  # spacing at 1000 is 0.5 -> 2 ULPs
    d = diff_files(
        save(tmp_path / "a.safetensors", {"h": a}), save(tmp_path / "b.safetensors", {"h": b})
    )
    t = d.tensors[0]
    assert t.dtype_a == "F16"
    assert t.max_abs_diff == 1.0
    assert t.bit_equal_fraction == 0.75
    assert t.max_rel_diff == pytest.approx(1 / 1001)
    ulps = np.abs(a.view(np.int16).astype(int) - b.view(np.int16).astype(int))
    assert ulps.tolist() == [0, 0, 0, 2]
    assert t.median_ulp == 0.0
    assert diff_files(tmp_path / "a.safetensors", tmp_path / "b.safetensors", atol=1.0).verdict is (
        Verdict.WITHIN_TOLERANCE
    )


def test_tolerance_boundary_is_inclusive(tmp_path: Path) -> None:
    a = save(tmp_path / "a.safetensors", {"t": np.array([1.0, 3.0])})
    b = save(tmp_path / "b.safetensors", {"t": np.array([1.0, 4.0])})  # |a-b| = 1, |b| = 4
    assert diff_files(a, b, atol=1.0).verdict is Verdict.WITHIN_TOLERANCE
    assert diff_files(a, b, atol=0.999).verdict is Verdict.DIVERGED
    assert diff_files(a, b, rtol=0.25).verdict is Verdict.WITHIN_TOLERANCE
    assert diff_files(a, b, rtol=0.24).verdict is Verdict.DIVERGED
    both = diff_files(a, b, rtol=0.125, atol=0.5)  # 0.5 + 0.125 * 4 == 1
    assert both.verdict is Verdict.WITHIN_TOLERANCE
    assert both.tensors[0].passes_tolerance is True
    # ...which the conservative function, seeing only the recorded maxima, cannot confirm
    t = both.tensors[0]
    assert not within_tolerance(t.max_abs_diff, t.max_rel_diff, rtol=0.125, atol=0.5)
    refused = diff_files(a, b, rtol=0.125, atol=0.49)
    assert refused.verdict is Verdict.DIVERGED
    assert refused.tensors[0].passes_tolerance is False
    assert diff_files(a, b).tensors[0].passes_tolerance is None


def test_within_tolerance_function_cases() -> None:
    assert within_tolerance(0.1, None, rtol=0.0, atol=0.1)
    assert within_tolerance(5.0, 0.01, rtol=0.01, atol=0.0)
    assert not within_tolerance(0.2, 0.02, rtol=0.01, atol=0.1)
    assert not within_tolerance(None, None, rtol=1.0, atol=1.0)
    assert not within_tolerance(math.inf, math.inf, rtol=1.0, atol=1.0)


def test_within_tolerance_function_is_sound(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    for i in range(20):
        b = rng.normal(size=200)
        a = b + rng.normal(scale=10.0 ** rng.uniform(-6, -1), size=200)
        rtol, atol = 10.0 ** rng.uniform(-5, -1), 10.0 ** rng.uniform(-5, -1)
        pa = save(tmp_path / f"a{i}.safetensors", {"t": a})
        pb = save(tmp_path / f"b{i}.safetensors", {"t": b})
        t = diff_files(pa, pb, rtol=rtol, atol=atol).tensors[0]
        exact = bool(np.all(np.abs(a - b) <= atol + rtol * np.abs(b)))
        assert t.passes_tolerance is exact
        if within_tolerance(t.max_abs_diff, t.max_rel_diff, rtol, atol):
            assert exact


def test_dtype_shape_mismatch_and_one_sided_tensors(tmp_path: Path) -> None:
    same = np.zeros(2, np.float32)
    a = save(
        tmp_path / "a.safetensors",
        {"d": np.zeros(3, np.float32), "s": np.zeros((2, 3), np.float32), "k": same, "x": same},
    )
    b = save(
        tmp_path / "b.safetensors",
        {"d": np.zeros(3, np.float64), "s": np.zeros((3, 2), np.float32), "k": same, "y": same},
    )
    d = diff_files(a, b, rtol=1.0, atol=1.0)
    assert d.verdict is Verdict.DIVERGED
    t = by_name(d)
    assert t["d"].status == "dtype-differs" and (t["d"].dtype_a, t["d"].dtype_b) == ("F32", "F64")
    assert t["s"].status == "shape-differs" and (t["s"].shape_a, t["s"].shape_b) == ([2, 3], [3, 2])
    assert t["x"].status == "only-in-a" and t["x"].dtype_b is None
    assert t["y"].status == "only-in-b" and t["y"].shape_a is None and t["y"].elements == 2
    assert t["k"].status == "equal"
    assert d.tensors[-1].name == "k"
    assert {x.name for x in d.changed_tensors()} == {"d", "s", "x", "y"}


def test_nan_and_inf_semantics(tmp_path: Path) -> None:
    a = save(tmp_path / "a.safetensors", {"t": np.array([np.nan, np.inf, 1.0], np.float32)})
    same = save(tmp_path / "s.safetensors", {"t": np.array([np.nan, np.inf, 1.0], np.float32)})
    d = diff_files(a, same)
    assert d.verdict is Verdict.IDENTICAL and d.tensors[0].bit_equal_fraction == 1.0
    b = save(tmp_path / "b.safetensors", {"t": np.array([1.0, np.inf, 1.0], np.float32)})
    t = diff_files(a, b, atol=1e30).tensors[0]
    assert t.status == "changed" and t.passes_tolerance is False
    assert t.max_abs_diff == math.inf
    out = t.to_dict()
    assert out["max_abs_diff"] is None and "max_abs_diff" in out["infinite"]
    json.dumps(out, allow_nan=False)
    z = save(tmp_path / "z.safetensors", {"t": np.array([np.nan, np.inf, 0.0], np.float32)})
    zt = diff_files(a, z).tensors[0]
    assert zt.max_rel_diff == math.inf and zt.max_abs_diff == 1.0


def test_integer_bool_and_empty_tensors(tmp_path: Path) -> None:
    a = save(
        tmp_path / "a.safetensors",
        {"i": np.array([1, 2, 3], np.int32), "m": np.array([True, False]), "e": np.zeros(0)},
    )
    b = save(
        tmp_path / "b.safetensors",
        {"i": np.array([1, 2, 5], np.int32), "m": np.array([True, True]), "e": np.zeros(0)},
    )
    t = by_name(diff_files(a, b))
    assert t["i"].max_abs_diff == 2.0 and t["i"].median_ulp is None
    assert t["i"].bit_equal_fraction == pytest.approx(2 / 3)
    assert t["m"].dtype_a == "BOOL" and t["m"].bit_equal_fraction == 0.5
    assert t["e"].status == "equal" and t["e"].elements == 0 and t["e"].max_abs_diff is None


def test_large_integers_that_round_to_one_float_still_differ(tmp_path: Path) -> None:
    big = 1 << 60  # big and big + 1 are the same float64
    a = save(tmp_path / "a.safetensors", {"i": np.array([big, 5], np.int64)})
    b = save(tmp_path / "b.safetensors", {"i": np.array([big + 1, 5], np.int64)})
    t = diff_files(a, b, atol=0.5).tensors[0]
    assert (t.bit_equal_fraction, t.max_abs_diff, t.passes_tolerance) == (0.5, 1.0, False)


# ------------------------------------------------------------------ errors


def test_truncated_file_raises_input_error(tmp_path: Path) -> None:
    good = save(tmp_path / "good.safetensors", {"w": np.arange(100, dtype=np.float32)})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(InputError, match=re.escape("cut.safetensors")):
        diff_files(good, cut)
    assert not is_safetensors(cut)
    cut_bin = tmp_path / "cut.bin"  # a valid-looking header is safetensors whatever the name
    cut_bin.write_bytes(cut.read_bytes())
    with pytest.raises(InputError, match="truncated"):
        diff_files(cut_bin, good)


def test_garbage_header_raises_input_error(tmp_path: Path) -> None:
    good = save(tmp_path / "good.safetensors", {"w": np.arange(4, dtype=np.float32)})
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(struct.pack("<Q", 12) + b"{not json!!}" + b"\0" * 8)
    with pytest.raises(InputError, match=re.escape("garbage.safetensors")):
        diff_files(good, bad)
    assert not is_safetensors(bad)


def test_huge_declared_header_length_raises_input_error(tmp_path: Path) -> None:
    good = save(tmp_path / "good.safetensors", {"w": np.arange(4, dtype=np.float32)})
    bad = tmp_path / "huge.safetensors"
    bad.write_bytes(struct.pack("<Q", 1 << 40) + b'{"w": {}}')
    with pytest.raises(InputError, match=re.escape("huge.safetensors")):
        diff_files(bad, good)


def test_header_size_mismatch_raises_input_error(tmp_path: Path) -> None:
    bad = write_st(tmp_path / "lies.safetensors", {"w": ("F32", [3], b"\0" * 8)})
    with pytest.raises(InputError, match=re.escape("lies.safetensors")):
        diff_files(bad, bad)


def test_unusable_paths_raise_input_error(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(b"x")
    with pytest.raises(InputError, match=re.escape("missing.bin")):
        diff_files(f, tmp_path / "missing.bin")
    with pytest.raises(InputError, match="directory"):
        diff_files(f, tmp_path)
    with pytest.raises(InputError, match="directory"):
        diff_paths(f, tmp_path)
    with pytest.raises(InputError, match="nowhere"):
        diff_paths(tmp_path / "nowhere", f)
    with pytest.raises(InputError):
        diff_files(f, f, atol=-1.0)


def _first_differing_byte(a: bytes, b: bytes) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)


def test_first_difference_of_same_headers_comes_from_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same header bytes: the offset is found while comparing tensors (and the padding around
    them), and must equal a plain byte comparison's."""
    monkeypatch.setattr(compare, "_CHUNK_ELEMENTS", 5)
    monkeypatch.setattr(compare, "_READ_CHUNKS", 2)
    y, x = np.arange(30, dtype=np.float32), np.arange(40, dtype=np.float32) + 0.5
    header = {  # y first in the data, 8 bytes of padding, then x, then 4 trailing bytes
        "x": {"dtype": "F32", "shape": [40], "data_offsets": [128, 288]},
        "y": {"dtype": "F32", "shape": [30], "data_offsets": [0, 120]},
    }
    text = json.dumps(header).encode()
    start = 8 + len(text)
    original = struct.pack("<Q", len(text)) + text + y.tobytes() + bytes(8) + x.tobytes()
    original += bytes(4)
    cases = {  # name -> (data offsets to change, verdict)
        "x element 23, third byte": ([128 + 23 * 4 + 2], Verdict.DIVERGED),
        "x and an earlier y element": ([128 + 4, 29 * 4 + 3], Verdict.DIVERGED),
        "x in two chunks": ([128 + 31 * 4, 128 + 3 * 4 + 1], Verdict.DIVERGED),
        "padding before x": ([124, 128 + 4], Verdict.DIVERGED),
        "trailing bytes only": ([290], Verdict.CANONICALLY_IDENTICAL),
        "nothing": ([], Verdict.IDENTICAL),
    }
    a = tmp_path / "a.safetensors"
    a.write_bytes(original)
    for name, (offsets, verdict) in cases.items():
        changed = bytearray(original)
        for offset in offsets:
            changed[start + offset] ^= 0x40
        b = tmp_path / "b.safetensors"
        b.write_bytes(bytes(changed))
        d = diff_files(a, b)
        assert d.first_difference_offset == _first_differing_byte(original, changed), name
        assert d.verdict is verdict, name


@pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads the peak memory from /proc (Linux)"
)
def test_large_files_are_compared_in_bounded_memory(tmp_path: Path) -> None:
    """256 MiB a side (sparse files: no disk written) compared in a small fraction of that."""
    size = 1 << 28
    text = json.dumps(
        {"w": {"dtype": "F32", "shape": [size // 4], "data_offsets": [0, size]}}
    ).encode()
    paths = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    for path in paths:
        with path.open("wb") as f:
            f.write(struct.pack("<Q", len(text)) + text)
            f.truncate(8 + len(text) + size)
    last = 8 + len(text) + size - 4
    with paths[1].open("r+b") as f:  # the last element is 1.5 (bytes 00 00 c0 3f)
        f.seek(last)
        f.write(np.float32(1.5).tobytes())
    script = (
        "import json, sys\n"
        "from verifier.diff.tensordiff import diff_files\n"
        "d = diff_files(sys.argv[1], sys.argv[2])\n"
        "peak = [line for line in open('/proc/self/status') if line.startswith('VmHWM')]\n"
        "t = d.tensors[0]\n"
        "print(json.dumps([d.verdict.value, d.first_difference_offset, t.bit_equal_fraction,"
        " t.max_abs_diff, int(peak[0].split()[1])]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, *map(str, paths)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    verdict, first, fraction, max_abs, peak_kib = json.loads(run.stdout)
    assert (verdict, first, max_abs) == ("DIVERGED", last + 2, 1.5)
    assert fraction == 1 - 4 / size
    assert peak_kib < 200 * 1024, f"peak RSS {peak_kib} KiB"


# ------------------------------------------------------------------ non-safetensors files


def test_bytes_first_difference_and_prefix(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"
    a.write_bytes(b"hello world")
    b.write_bytes(b"hello World")
    c.write_bytes(b"hello world, again")
    d = diff_files(a, b)
    assert (d.kind, d.verdict, d.first_difference_offset) == ("bytes", Verdict.DIVERGED, 6)
    assert d.tensors == [] and d.metadata_a is None
    assert "offset 6" in render_text(d)
    p = diff_files(a, c)
    assert p.first_difference_offset == 11 and (p.size_a, p.size_b) == (11, 18)
    assert "prefix" in render_text(p)
    same = diff_files(a, a)
    assert same.verdict is Verdict.IDENTICAL and same.first_difference_offset is None


def test_first_difference_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tensordiff, "_BLOCK_BYTES", 4)
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(bytes(range(20)))
    b.write_bytes(bytes(range(10)) + b"\xff" + bytes(range(11, 20)))
    assert diff_files(a, b).first_difference_offset == 10


def test_detection_is_by_content_not_name(tmp_path: Path) -> None:
    st = save(tmp_path / "model.bin", {"w": np.arange(3, dtype=np.float32)})
    st2 = save(tmp_path / "other.data", {"w": np.arange(3, dtype=np.float32)}, {"m": "x"})
    text = tmp_path / "notes.txt"
    text.write_text("not a model at all\n")
    assert is_safetensors(st) and not is_safetensors(text)
    assert not is_safetensors(tmp_path / "missing")
    found = diff_files(st, st2)
    assert found.kind == "safetensors" and not found.changed_tensors()
    mixed = diff_files(st, text)
    assert mixed.kind == "bytes" and mixed.verdict is Verdict.DIVERGED


# ------------------------------------------------------------------ directories


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_directory_diff(tmp_path: Path) -> None:
    w = {"w": np.arange(4, dtype=np.float32)}
    save(tmp_path / "m1.safetensors", w, {"run": "1"})
    save(tmp_path / "m2.safetensors", w, {"run": "2"})
    m1, m2 = (tmp_path / "m1.safetensors").read_bytes(), (tmp_path / "m2.safetensors").read_bytes()
    a = _tree(
        tmp_path / "a",
        {"same.txt": b"s", "conf.json": b"{1}", "old.txt": b"o", "sub/m.safetensors": m1},
    )
    b = _tree(
        tmp_path / "b",
        {
            "same.txt": b"s",
            "conf.json": b"{2}",
            "a.txt": b"",
            "Z.txt": b"",
            "sub/m.safetensors": m2,
        },
    )
    (b / "sub" / "new").mkdir()
    (b / "sub" / "new" / "x").write_bytes(b"x")
    d = diff_paths(a, b)
    assert isinstance(d, DirDiff)
    assert d.verdict is Verdict.DIVERGED
    # a is the side checked, b the reference: what only b has is missing from a.
    assert d.removed == ["Z.txt", "a.txt", "sub/new/x"]
    assert d.added == ["old.txt"]
    assert d.unchanged == 1
    assert [(Path(c.path_a).name, c.verdict) for c in d.changed] == [
        ("conf.json", Verdict.DIVERGED),
        ("m.safetensors", Verdict.DIVERGED),  # its __metadata__ differs
    ]
    text = render_text(d)
    assert f"MISSING: sub/new/x (only in the reference {b}; missing from {a})" in text
    assert f"ADDED: old.txt (only in {a}; the reference {b} has no such file)" in text
    assert "(1 added, 3 missing, 2 changed, 1 unchanged)" in text
    assert "first differing byte at offset 1" in text
    json.dumps(d.to_dict(), allow_nan=False)


def test_directory_verdict_is_worst_child(tmp_path: Path) -> None:
    def st(values: list[float]) -> bytes:
        path = tmp_path / "tmp.safetensors"
        save(path, {"w": np.array(values)})
        return path.read_bytes()

    a = _tree(tmp_path / "a", {"x.safetensors": st([1.0, 2.0]), "same": b"1"})
    b = _tree(tmp_path / "b", {"x.safetensors": st([1.0, 2.001]), "same": b"1"})
    assert diff_paths(a, b).verdict is Verdict.DIVERGED
    assert diff_paths(a, b, rtol=1e-2).verdict is Verdict.WITHIN_TOLERANCE
    assert diff_paths(a, a).verdict is Verdict.IDENTICAL
    empty_a, empty_b = tmp_path / "ea", tmp_path / "eb"
    empty_a.mkdir()
    empty_b.mkdir()
    assert diff_paths(empty_a, empty_b).verdict is Verdict.IDENTICAL


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_directory_refuses_symlinks(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a", {"f": b"1"})
    b = _tree(tmp_path / "b", {"f": b"1"})
    (b / "link").symlink_to(b / "f")
    with pytest.raises(InputError, match="link"):
        diff_paths(a, b)


# ------------------------------------------------------------------ chunking


def _reference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Independent numpy reference over the whole tensor at once."""
    fa, fb = a.astype(np.float64), b.astype(np.float64)
    ia, ib = a.view(np.int32).astype(np.int64), b.view(np.int32).astype(np.int64)
    agree = (ia < 0) == (ib < 0)
    return {
        "bit_equal_fraction": float(np.mean(ia == ib)),
        "max_abs_diff": float(np.max(np.abs(fa - fb))),
        "mean_abs_diff": float(np.mean(np.abs(fa - fb))),
        "rel_l2": float(np.linalg.norm(fa - fb) / np.linalg.norm(fb)),
        "cosine": float(fa @ fb / (np.linalg.norm(fa) * np.linalg.norm(fb))),
        "median_ulp": float(np.median(np.abs(ia - ib)[agree])),
        "max_rel_diff": float(np.max(np.abs(fa - fb) / np.abs(fb))),
    }


def test_chunked_metrics_match_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(37, 29)).astype(np.float32)
    b = a.copy()
    picks = rng.random(a.shape) < 0.6
    b[picks] += rng.normal(scale=1e-3, size=int(picks.sum())).astype(np.float32)
    b[0, 0] = -b[0, 0]  # one sign flip
    pa, pb = save(tmp_path / "a.safetensors", {"t": a}), save(tmp_path / "b.safetensors", {"t": b})
    whole = diff_files(pa, pb).tensors[0]
    monkeypatch.setattr(compare, "_CHUNK_ELEMENTS", 7)
    chunked = diff_files(pa, pb).tensors[0]
    ref = _reference(a.ravel(), b.ravel())
    for key, expected in ref.items():
        assert getattr(chunked, key) == pytest.approx(expected, rel=1e-9), key
        assert getattr(chunked, key) == pytest.approx(getattr(whole, key), rel=1e-12), key


def test_large_tensor_median_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted, then narrowed by reading again: exact however wide the distances spread."""
    for name, value in {"EXACT_BITS": 4, "SUB_BITS": 2, "RAW_LIMIT": 8, "COLLECT_LIMIT": 16,
                        "REFINE_BINS": 4}.items():  # fmt: skip
        monkeypatch.setattr(ulp_median, name, value)
    monkeypatch.setattr(compare, "_CHUNK_ELEMENTS", 64)
    monkeypatch.setattr(compare, "_KEPT_ULPS_PER_CHUNK", 4)
    rng = np.random.default_rng(2)
    cases = {  # name -> (dtype, bits dtype, largest offset in ULPs)
        "small": (np.float32, np.int32, 3), "wide": (np.float32, np.int32, 1 << 28),
        "f64": (np.float64, np.int64, 1 << 58), "f16": (np.float16, np.int16, 1 << 9),
    }  # fmt: skip
    for size in (1000, 1001):
        tensors_a, tensors_b = {}, {}
        for name, (dtype, bits, top) in cases.items():
            a = np.abs(rng.normal(size=size)).astype(dtype) + dtype(1)
            offsets = (2.0 ** rng.uniform(0, math.log2(top), size)).astype(np.int64)
            offsets[rng.random(size) < 0.3] = 0
            b = (a.view(bits).astype(np.int64) - offsets).astype(bits).view(dtype)  # stays > 0
            tensors_a[name], tensors_b[name] = a, b
        pa = save(tmp_path / f"a{size}.safetensors", tensors_a)
        pb = save(tmp_path / f"b{size}.safetensors", tensors_b)
        got = by_name(diff_files(pa, pb))
        for name, (_, bits, _) in cases.items():
            ia = tensors_a[name].view(bits).astype(np.int64)
            ib = tensors_b[name].view(bits).astype(np.int64)
            ulps = sorted(int(u) for u in np.abs(ia - ib))  # exact integers, no float rounding
            assert got[name].median_ulp == (ulps[(size - 1) // 2] + ulps[size // 2]) / 2, name


def test_median_ulp_counts_match_sorting() -> None:
    """The counting median against sorting, with tiny buckets so every path is taken."""
    rng = np.random.default_rng(5)
    settings = [(16, 8, 1 << 20, 1 << 21, 1 << 16), (4, 2, 5, 3, 4), (3, 1, 0, 0, 2)]
    saved = [getattr(ulp_median, n) for n in _MEDIAN_SETTINGS]
    try:
        for values in settings:
            for name, value in zip(_MEDIAN_SETTINGS, values, strict=True):
                setattr(ulp_median, name, value)
            for trial in range(100):
                size = int(rng.integers(1, 200))
                data = [
                    rng.integers(0, 10, size), rng.integers(0, 1 << 62, size),
                    (2.0 ** rng.uniform(0, 62.9, size)).astype(np.int64),
                    np.full(size, int(rng.integers(0, 1 << 40))),
                ][trial % 4].astype(np.int64)  # fmt: skip
                groups = np.array_split(data, min(size, 5))
                median = ulp_median.MedianUlp()
                for i, group in enumerate(groups):
                    if i % 2:
                        median.add_counts(ulp_median.bucket_counts(group))
                    else:
                        median.add(group)
                ordered = sorted(data.tolist())
                expected = (ordered[(size - 1) // 2] + ordered[size // 2]) / 2
                assert median.median(lambda g=groups: iter(g)) == expected
    finally:
        for name, value in zip(_MEDIAN_SETTINGS, saved, strict=True):
            setattr(ulp_median, name, value)


_MEDIAN_SETTINGS = ("EXACT_BITS", "SUB_BITS", "RAW_LIMIT", "COLLECT_LIMIT", "REFINE_BINS")


def test_median_ulp_notices_a_changed_second_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ulp_median, "RAW_LIMIT", 0)
    median = ulp_median.MedianUlp()
    median.add(np.array([70000, 70001, 70002], np.int64))  # above the exact buckets
    assert median.median(lambda: [np.array([70000, 70001, 70002])]) == 70001
    with pytest.raises(ulp_median.Changed):
        median.median(lambda: [np.array([70000, 70001])])
    empty = ulp_median.MedianUlp()
    assert empty.median(lambda: []) is None
    empty.add_zeros(3)
    assert empty.median(lambda: []) == 0.0


# ------------------------------------------------------------------ every path against a reference


def _decode(bits: np.ndarray, dtype: str) -> np.ndarray:
    """Independent decoding of raw bits to float64 (bfloat16: the upper half of a float32)."""
    if dtype == "BF16":
        return (bits.view(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if dtype in ("F16", "F32", "F64"):
        return bits.view({"F16": "<f2", "F32": "<f4", "F64": "<f8"}[dtype]).astype(np.float64)
    return bits.astype(np.float64)


def _whole_tensor_reference(
    a_bits: np.ndarray, b_bits: np.ndarray, dtype: str, tol: tuple[float, float] | None
) -> dict[str, object]:
    """The module docstring's semantics, over the whole tensor at once."""
    fa, fb = _decode(a_bits, dtype), _decode(b_bits, dtype)
    same = a_bits == b_bits
    with np.errstate(all="ignore"):
        if dtype.startswith(("F", "BF")):
            diff = np.abs(fa - fb)
            diff[(fa == fb) | (np.isnan(fa) & np.isnan(fb))] = 0.0
            diff[np.isnan(diff)] = np.inf
        else:
            diff = np.where(same, 0.0, np.maximum(np.abs(fa - fb), 1.0))
        rel = np.where(diff == 0, 0.0, diff / np.abs(fb))
        rel[np.isnan(rel)] = np.inf
        passes = None
        if tol is not None:
            bound = tol[1] + tol[0] * np.abs(fb)
            passes = bool(np.all((diff == 0) | ((diff <= bound) & np.isfinite(diff))))
        finite = np.isfinite(fa) & np.isfinite(fb)
        xa, xb = np.where(finite, fa, 0.0), np.where(finite, fb, 0.0)
        aa, bb, ab = float(np.sum(xa * xa)), float(np.sum(xb * xb)), float(np.sum(xa * xb))
        sum_sq = float(np.sum(diff * diff))
        norm_b, norm_diff = math.sqrt(bb), math.sqrt(sum_sq)
    median = None
    if dtype.startswith(("F", "BF")):
        ia, ib = a_bits.astype(np.int64), b_bits.astype(np.int64)
        agree = (ia < 0) == (ib < 0)
        median = float(np.median(np.abs(ia - ib)[agree])) if agree.any() else None
    return {
        "bit_equal_fraction": float(same.mean()),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "rel_l2": (0.0 if norm_diff == 0 else None)
        if norm_b == 0
        else (norm_diff / norm_b if math.isfinite(norm_b) else None),
        "cosine": max(-1.0, min(1.0, ab / (math.sqrt(aa) * math.sqrt(bb))))
        if aa and bb and all(map(math.isfinite, (aa, bb, ab)))
        else None,
        "median_ulp": median,
        "max_rel_diff": float(rel.max()),
        "passes_tolerance": passes,
    }


def _mixed_pair(rng: np.random.Generator, dtype: str, size: int) -> dict[str, tuple]:
    """Tensors of one dtype: some pairs all differ, some few, some with NaN and infinities in
    differing and in bit-equal places, some bit-equal."""
    bits = {"F64": np.int64, "F32": np.int32, "F16": np.int16, "BF16": np.int16,
            "I32": np.int32}[dtype]  # fmt: skip
    if dtype == "BF16":
        base = (rng.normal(size=size).astype(np.float32).view(np.uint32) >> 16).astype(np.int16)
    elif dtype == "I32":
        base = rng.integers(-1000, 1000, size).astype(np.int32)
    else:
        floats = {"F64": np.float64, "F32": np.float32, "F16": np.float16}[dtype]
        base = rng.normal(size=size).astype(floats).view(bits)
    base[rng.choice(size, 40, replace=False)] = 0  # b == 0 in equal pairs: 0/0 is no ratio
    out = {}
    for name, share in (("dense", 0.7), ("sparse", 0.02), ("specials", 0.05), ("equal", 0.0)):
        a = base.copy()
        if name == "specials" and dtype != "I32":
            specials = _decode_specials(dtype)
            spots = rng.choice(size, 12, replace=False)
            a[spots] = rng.choice(specials, 12)
        b = a.copy()
        moved = rng.random(size) < share
        b[moved] = (b[moved].astype(np.int64) + rng.integers(-3, 4, int(moved.sum()))).astype(bits)
        if name == "specials" and dtype != "I32":
            b[spots[:4]] = rng.choice(_decode_specials(dtype), 4)  # specials that differ too
        out[name] = (a, b)
    return out


def _decode_specials(dtype: str) -> np.ndarray:
    """Bit patterns of NaN, +-infinity, +-0 and the largest finite value."""
    values = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -2.5])
    if dtype == "F64":
        return np.append(values, np.finfo(np.float64).max).view(np.int64)
    if dtype == "F32":
        return np.append(values.astype(np.float32), np.finfo(np.float32).max).view(np.int32)
    if dtype == "F16":
        return np.append(values.astype(np.float16), np.finfo(np.float16).max).view(np.int16)
    as32 = values.astype(np.float32).view(np.uint32) >> 16
    return as32.astype(np.uint16).view(np.int16)


@pytest.mark.parametrize("dtype", ["F32", "F64", "F16", "BF16", "I32"])
def test_every_path_matches_whole_tensor_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: str
) -> None:
    """Chunked, dense or sparse chunks, one or several threads: the same metrics as the
    whole-tensor reference; maxima and the median exactly, sums to rounding."""
    rng = np.random.default_rng(len(dtype) * 31 + ord(dtype[-1]))
    pairs = _mixed_pair(rng, dtype, 3001)
    header = {"BF16": "BF16", "F16": "F16", "F32": "F32", "F64": "F64", "I32": "I32"}[dtype]
    pa = write_st(
        tmp_path / "a.safetensors",
        {n: (header, [3001], a.tobytes()) for n, (a, _) in pairs.items()},
    )
    pb = write_st(tmp_path / "b.safetensors",
                  {n: (header, [3001], b.tobytes()) for n, (_, b) in pairs.items()},
                  data_order=list(reversed(pairs)))  # fmt: skip
    tol = (1e-3, 1e-4)
    expected = {n: _whole_tensor_reference(a, b, dtype, tol) for n, (a, b) in pairs.items()}
    for chunk, reads, workers in ((7, 3, 1), (64, 2, 3), (1 << 16, 8, 2)):
        monkeypatch.setattr(compare, "_CHUNK_ELEMENTS", chunk)
        monkeypatch.setattr(compare, "_READ_CHUNKS", reads)
        monkeypatch.setattr(compare, "_WORKERS", workers)
        got = by_name(diff_files(pa, pb, rtol=tol[0], atol=tol[1]))
        for name, ref in expected.items():
            t = got[name]
            for key in ("bit_equal_fraction", "max_abs_diff", "max_rel_diff", "median_ulp",
                        "passes_tolerance"):  # fmt: skip
                assert getattr(t, key) == ref[key], (chunk, name, key)
            for key in ("mean_abs_diff", "rel_l2", "cosine"):
                if ref[key] is None or math.isinf(ref[key]):
                    assert getattr(t, key) == ref[key], (chunk, name, key)
                else:
                    assert getattr(t, key) == pytest.approx(ref[key], rel=1e-12, abs=1e-300), (
                        chunk,
                        name,
                        key,
                    )
        assert got["equal"].status == "equal" and got["dense"].status == "changed"


def test_threads_do_not_change_the_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks are merged in order, so the report is the same to the last bit."""
    rng = np.random.default_rng(9)
    a = rng.normal(size=20000).astype(np.float32)
    b = a.copy()
    b[rng.random(a.size) < 0.5] *= np.float32(1.0001)
    b[:5000][rng.random(5000) < 0.01] += 1  # a sparse stretch
    pa, pb = save(tmp_path / "a.safetensors", {"t": a}), save(tmp_path / "b.safetensors", {"t": b})
    monkeypatch.setattr(compare, "_CHUNK_ELEMENTS", 100)
    reports = []
    for workers in (1, 2, 4):
        monkeypatch.setattr(compare, "_WORKERS", workers)
        reports.append(diff_files(pa, pb).to_dict())
    assert reports[0] == reports[1] == reports[2]


# ------------------------------------------------------------------ rendering and JSON


def test_render_text_lists_changed_tensor_first(tmp_path: Path) -> None:
    same = np.ones(3, np.float32)
    a = save(tmp_path / "a.safetensors", {"aaa": same, "bbb": same, "zzz": np.zeros(3, np.float32)})
    b = save(
        tmp_path / "b.safetensors",
        {"aaa": same, "bbb": same, "zzz": np.array([0, 0, 1], np.float32)},
    )
    d = diff_files(a, b)
    text = render_text(d)
    assert text.splitlines()[0].startswith("DIVERGED: ")
    assert text.index("zzz") < text.index("aaa") < text.index("bbb")
    assert "66.67%" in text and "median ULP" in text
    short = render_text(d, limit=1)
    assert "zzz" in short and "aaa" not in short and "2 more tensors not shown" in short


def test_to_dict_is_json_ready(tmp_path: Path) -> None:
    a = save(tmp_path / "a.safetensors", {"t": np.array([1.0, 1.0])}, {"k": "v"})
    b = save(tmp_path / "b.safetensors", {"t": np.array([0.0, 1.0])})  # b == 0 -> inf rel
    d = diff_files(a, b)
    out = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert out["verdict"] == "DIVERGED" and out["kind"] == "safetensors"
    assert out["metadata_a"] == {"k": "v"} and out["metadata_b"] is None
    t = out["tensors"][0]
    assert t["name"] == "t" and t["max_rel_diff"] is None and t["infinite"] == ["max_rel_diff"]
    assert t["max_abs_diff"] == 1.0 and t["bit_equal_fraction"] == 0.5


def test_tensor_order_worst_first(tmp_path: Path) -> None:
    base = np.ones(4, np.float32)
    small, big = base.copy(), base.copy()
    small[0], big[0] = 1.001, 3.0
    a = save(tmp_path / "a.safetensors", {"a_small": base, "b_big": base, "c_eq": base, "z": base})
    b = save(
        tmp_path / "b.safetensors",
        {"a_small": small, "b_big": big, "c_eq": base, "z": np.ones(5, np.float32)},
    )
    d = diff_files(a, b, atol=0.01)
    assert [t.name for t in d.tensors] == ["z", "b_big", "a_small", "c_eq"]
    assert [t.passes_tolerance for t in d.tensors] == [False, False, True, True]
    assert d.verdict == "DIVERGED" and Verdict.CANONICALLY_IDENTICAL == "CANONICALLY-IDENTICAL"
