"""The update-relative distance of a replayed checkpoint (verifier.diff.update) read in spans and
pieces on worker threads: the same figures as numpy over whole tensors, whatever the span, piece
and thread count, for every float dtype a checkpoint holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from verifier.diff import compare, update
from verifier.diff.update import compare_checkpoints
from verifier.errors import InputError

# bfloat16 as safetensors stores it (the upper half of a float32); numpy has no such dtype.
BF16_HEADER_DTYPE = "BF16"


def _values(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == BF16_HEADER_DTYPE:
        return (raw.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return raw.astype(np.float64)


def _write_bf16(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """A safetensors file of uint16 tensors declared BF16 (safetensors.numpy cannot write it)."""
    header, data, offset = {}, b"", 0
    for name, raw in tensors.items():
        header[name] = {"dtype": "BF16", "shape": list(raw.shape),
                        "data_offsets": [offset, offset + raw.nbytes]}
        data += raw.astype("<u2").tobytes()
        offset += raw.nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """start, logged end and replayed end of one checkpoint: float32, float16, float64 and
    bfloat16 tensors of several pieces each, some pieces bit-equal in the replay, a NaN equal
    bit for bit in a late piece, a tensor the segment did not move, a non-tensor file alike."""
    root = tmp_path_factory.mktemp("update")
    rng = np.random.default_rng(7)
    start: dict[str, np.ndarray] = {}
    for name, dtype in (("f32", np.float32), ("f16", np.float16), ("f64", np.float64)):
        start[name] = rng.standard_normal(1000).astype(dtype)
    start["frozen"] = rng.standard_normal(300).astype(np.float32)
    end = {k: (v + (rng.standard_normal(v.size) * 0.01).astype(v.dtype)) for k, v in start.items()}
    end["frozen"] = start["frozen"].copy()
    start["f32"][900] = end["f32"][900] = np.nan
    replayed = {k: v.copy() for k, v in end.items()}
    for name in ("f32", "f16", "f64"):
        noise = (rng.standard_normal(400) * 1e-3).astype(replayed[name].dtype)
        replayed[name][100:500] += noise  # pieces before 100 and after 500 stay bit-equal
    bf16 = {"s": rng.integers(0x3F00, 0x3F80, 500, dtype=np.uint16)}
    bf16["e"] = bf16["s"] + np.uint16(3)
    bf16["r"] = bf16["e"].copy()
    bf16["r"][200:260] += np.uint16(1)
    for side, tensors, key in (("s", start, "s"), ("e", end, "e"), ("r", replayed, "r")):
        (root / side).mkdir()
        save_file(tensors, str(root / side / "weights.safetensors"))
        _write_bf16(root / side / "half.safetensors", {"h": bf16[key]})
        (root / side / "state.json").write_text("same")
    expected: dict = {}
    for name in start:
        r, e, s = (_values(t[name], "F") for t in (replayed, end, start))
        d, u = r - e, e - s
        d[np.isnan(d) & np.isnan(r) & np.isnan(e)] = 0.0
        u[np.isnan(u) & np.isnan(e) & np.isnan(s)] = 0.0
        expected[name] = (float(d @ d), float(u @ u), float(np.abs(d).max()))
    r, e, s = (_values(bf16[k], BF16_HEADER_DTYPE) for k in ("r", "e", "s"))
    expected["h"] = (float((r - e) @ (r - e)), float((e - s) @ (e - s)),
                     float(np.abs(r - e).max()))
    return root, expected


@pytest.mark.parametrize(("span", "piece", "workers"),
                         [(1 << 20, 1 << 16, 1), (256, 64, 1), (256, 64, 2), (100, 7, 2)])
def test_the_distances_are_numpy_s_whatever_the_spans_pieces_and_threads(
        checkpoints: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch,
        span: int, piece: int, workers: int) -> None:
    root, expected = checkpoints
    monkeypatch.setattr(update, "_SPAN", span)
    monkeypatch.setattr(update, "_PIECE", piece)
    monkeypatch.setattr(compare, "_WORKERS", workers)
    found = compare_checkpoints(root / "r", root / "e", root / "s")
    assert found.files == []
    by_name = {t.tensor: t for t in found.tensors}
    assert set(by_name) == {"f32", "f16", "f64", "h"}  # frozen: not replayed differently
    for name, (replay, moved, worst) in expected.items():
        if name == "frozen":
            continue
        assert by_name[name].replay_distance == pytest.approx(np.sqrt(replay), rel=1e-12)
        assert by_name[name].update_size == pytest.approx(np.sqrt(moved), rel=1e-12)
        assert by_name[name].max_abs_diff == worst
    assert found.replay_distance == pytest.approx(
        np.sqrt(sum(v[0] for v in expected.values())), rel=1e-12)
    assert found.update_size == pytest.approx(
        np.sqrt(sum(v[1] for v in expected.values())), rel=1e-12)


def test_the_sums_do_not_depend_on_the_thread_count(
        checkpoints: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = checkpoints
    monkeypatch.setattr(update, "_SPAN", 128)
    monkeypatch.setattr(update, "_PIECE", 32)
    figures = []
    for workers in (1, 2, 3):
        monkeypatch.setattr(compare, "_WORKERS", workers)
        found = compare_checkpoints(root / "r", root / "e", root / "s")
        figures.append((found.replay_distance, found.update_size,
                        [(t.tensor, t.replay_distance, t.update_size) for t in found.tensors]))
    assert figures[0] == figures[1] == figures[2]


def test_a_file_reproduced_exactly_still_counts_its_update(tmp_path: Path) -> None:
    """The replay reproduced the tensor file bit for bit, but the start holds one tensor fewer:
    the others' update counts, the missing one adds nothing; a non-tensor file that differs in
    its last byte only is named."""
    for side in ("r", "e", "s"):
        (tmp_path / side).mkdir()
    tensors = {"a": np.arange(5000, dtype=np.float32), "b": np.ones(3, np.float32)}
    for side in ("r", "e"):
        save_file(tensors, str(tmp_path / side / "w.safetensors"))
    save_file({"a": np.zeros(5000, np.float32)}, str(tmp_path / "s" / "w.safetensors"))
    blob = bytes(range(256)) * 40000
    (tmp_path / "r" / "blob.bin").write_bytes(blob)
    (tmp_path / "e" / "blob.bin").write_bytes(blob[:-1] + b"\x00")
    found = compare_checkpoints(tmp_path / "r", tmp_path / "e", tmp_path / "s")
    assert found.tensors == []
    assert found.files == [{"name": "blob.bin", "verdict": "DIFFERS"}]
    a = tensors["a"].astype(np.float64)
    assert found.update_size == pytest.approx(np.sqrt(a @ a), rel=1e-12)
    assert found.replay_distance == 0.0


@pytest.mark.parametrize("forged", ["metadata", "tail"])
def test_a_tensor_file_whose_bytes_outside_the_tensors_differ_is_named(
        tmp_path: Path, forged: str) -> None:
    """The logged checkpoint's weights are the honest ones, but its safetensors header carries
    other __metadata__, or bytes no tensor claims follow the data: not weights, so no update
    ratio may let them through (before, the segment was WITHIN-TOLERANCE at ratio 0)."""
    rng = np.random.default_rng(3)
    start = {"w": rng.standard_normal(64).astype(np.float32)}
    end = {"w": start["w"] + np.float32(0.1)}
    for side in ("r", "e", "s"):
        (tmp_path / side).mkdir()
    save_file(start, str(tmp_path / "s" / "w.safetensors"))
    save_file(end, str(tmp_path / "r" / "w.safetensors"), metadata={"format": "np"})
    logged = tmp_path / "e" / "w.safetensors"
    if forged == "metadata":
        save_file(end, str(logged), metadata={"format": "xx"})  # same length, same offsets
    else:
        save_file(end, str(logged), metadata={"format": "np"})
        for side in ("r", "e"):  # the same size, other trailing bytes
            with (tmp_path / side / "w.safetensors").open("ab") as f:
                f.write(b"honest!!" if side == "r" else b"forged!!")
    found = compare_checkpoints(tmp_path / "r", tmp_path / "e", tmp_path / "s")
    assert found.tensors == [] and found.replay_distance == 0.0
    assert found.files == [{"name": "w.safetensors", "verdict": "DIFFERS"}]
    assert not found.within(0.1)


@pytest.mark.parametrize("where", ["file", "folder"])
def test_a_link_in_the_start_checkpoint_is_refused_not_followed(tmp_path: Path,
                                                                where: str) -> None:
    """A start file reached through a link (to weights far from the end, outside the
    checkpoint) would make the update as large as its author liked and the replay's miss look
    small beside it: the forged end below would pass a 0.1 tolerance. The link is refused."""
    end = {"w": np.ones(64, np.float32)}
    replayed = {"w": np.full(64, 1.5, np.float32)}  # half the honest update off
    far = tmp_path / "far"
    far.mkdir()
    save_file({"w": np.full(64, -1000.0, np.float32)}, str(far / "w.safetensors"))
    for side, tensors in (("r", replayed), ("e", end)):
        (tmp_path / side).mkdir()
        save_file(tensors, str(tmp_path / side / "w.safetensors"))
    (tmp_path / "s").mkdir()
    if where == "file":
        (tmp_path / "s" / "w.safetensors").symlink_to(far / "w.safetensors")
    else:
        for side in ("r", "e"):
            (tmp_path / side / "sub").mkdir()
            (tmp_path / side / "w.safetensors").rename(tmp_path / side / "sub" / "w.safetensors")
        (tmp_path / "s" / "sub").symlink_to(far)
    with pytest.raises(InputError, match="symbolic link"):
        compare_checkpoints(tmp_path / "r", tmp_path / "e", tmp_path / "s")
