"""GGUF: the bounded reader (verifier.diff.gguf) and `diff` of GGUF files tensor by tensor.

Files are written with llama.cpp's own Python library (`gguf`, a dev dependency), so the reader
is checked against an independent writer; its tensor bytes are checked against gguf's own
reader on well-formed files. Hostile files are built by hand, byte by byte.
"""

from __future__ import annotations

import contextlib
import json
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import assert_error, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from verifier.diff import gguf as reader
from verifier.diff.tensordiff import Verdict, diff_files, render_text
from verifier.errors import InputError

gguf = pytest.importorskip("gguf")
from gguf.quants import quantize  # noqa: E402

RNG = np.random.default_rng(7)
WEIGHT = RNG.standard_normal((64, 96)).astype(np.float32)
BIAS = RNG.standard_normal(96).astype(np.float32)


def write(path: Path, *, weight: np.ndarray = WEIGHT, name: str = "tiny",
          order: tuple[str, ...] = ("w.f32", "w.f16", "w.q8_0", "b.f32", "ids"),
          alignment: int | None = None) -> Path:
    """A small llama-architecture GGUF: f32, f16, Q8_0 and integer tensors, with metadata."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(name)
    writer.add_block_count(2)
    writer.add_context_length(256)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(40)])
    writer.add_array("tiny.flags", [True, False, True])
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    tensors: dict[str, Any] = {
        "w.f32": (weight, None),
        "w.f16": (weight.astype(np.float16), None),
        "w.q8_0": (quantize(weight, gguf.GGMLQuantizationType.Q8_0),
                   gguf.GGMLQuantizationType.Q8_0),
        "b.f32": (BIAS, None),
        "ids": (np.arange(12, dtype=np.int32), None),
    }
    for key in order:
        data, kind = tensors[key]
        if kind is None:
            writer.add_tensor(key, data)
        else:
            writer.add_tensor(key, data, raw_shape=data.shape, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write(tmp_path / "a.gguf")


# ------------------------------------------------------------------ the reader


def test_type_table_matches_llama_cpps_own() -> None:
    for code, (name, block, size) in reader.GGML_TYPES.items():
        kind = gguf.GGMLQuantizationType(code)
        assert kind.name == name
        assert gguf.GGML_QUANT_SIZES[kind] == (block, size)


def test_reader_agrees_with_gguf_on_names_shapes_types_and_bytes(model: Path) -> None:
    parsed = reader.read(model)
    theirs = gguf.GGUFReader(model)
    assert parsed.version == 3 and parsed.alignment == 32
    assert sorted(parsed.tensors) == sorted(t.name for t in theirs.tensors)
    raw = model.read_bytes()
    for tensor in theirs.tensors:
        mine = parsed.tensors[tensor.name]
        assert mine.type == tensor.tensor_type.name
        assert mine.shape == [int(n) for n in reversed(tensor.shape)]
        assert raw[mine.begin:mine.end] == tensor.data.tobytes()
    assert parsed.metadata["general.name"].text == '"tiny"'
    assert parsed.metadata["llama.block_count"].type == "UINT32"
    assert parsed.metadata["tokenizer.ggml.tokens"].type == "ARRAY[STRING]"
    assert parsed.metadata["tiny.flags"].text == "[1, 0, 1]"
    assert parsed.prefix == raw[:parsed.data_start]


def test_a_file_without_tensors_needs_no_padding(tmp_path: Path) -> None:
    path = tmp_path / "meta.gguf"
    path.write_bytes(header(keys=1) + gguf_string(b"general.name") + struct.pack("<I", 8)
                     + gguf_string(b"x"))
    parsed = reader.read(path)
    assert parsed.tensors == {} and parsed.metadata["general.name"].text == '"x"'
    assert parsed.data_start == path.stat().st_size


def test_a_custom_alignment_is_honoured(tmp_path: Path) -> None:
    parsed = reader.read(write(tmp_path / "a.gguf", alignment=64))
    assert parsed.alignment == 64
    assert all(t.begin % 64 == 0 for t in parsed.tensors.values())


# ------------------------------------------------------------------ diff


def test_the_same_conversion_twice_is_identical(tmp_path: Path, model: Path) -> None:
    again = write(tmp_path / "b.gguf")
    result = diff_files(model, again)
    assert result.kind == "gguf" and result.verdict is Verdict.IDENTICAL
    assert result.first_difference_offset is None
    assert {t.name: t.status for t in result.tensors} == dict.fromkeys(
        ["w.f32", "w.f16", "w.q8_0", "b.f32", "ids"], "equal")


def test_float_tensors_get_the_same_metrics_as_safetensors(tmp_path: Path, model: Path) -> None:
    moved = WEIGHT + np.float32(1e-3) * RNG.standard_normal(WEIGHT.shape).astype(np.float32)
    other = write(tmp_path / "b.gguf", weight=moved)
    result = diff_files(model, other)
    assert result.verdict is Verdict.DIVERGED
    by_name = {t.name: t for t in result.tensors}
    save_file({"w.f32": WEIGHT, "w.f16": WEIGHT.astype(np.float16)}, tmp_path / "a.safetensors")
    save_file({"w.f32": moved, "w.f16": moved.astype(np.float16)}, tmp_path / "b.safetensors")
    reference = {t.name: t for t in
                 diff_files(tmp_path / "a.safetensors", tmp_path / "b.safetensors").tensors}
    for name in ("w.f32", "w.f16"):
        mine, theirs = by_name[name].to_dict(), reference[name].to_dict()
        assert mine == theirs
        assert mine["max_abs_diff"] > 0
    assert by_name["b.f32"].status == "equal"


def test_quantized_tensors_are_compared_bytewise(tmp_path: Path, model: Path) -> None:
    moved = WEIGHT.copy()
    moved[0, :32] += 0.5  # one Q8_0 block of 32 values changes
    result = diff_files(model, write(tmp_path / "b.gguf", weight=moved))
    q8 = next(t for t in result.tensors if t.name == "w.q8_0")
    assert q8.status == "changed" and q8.dtype_a == "Q8_0"
    assert q8.elements == WEIGHT.size
    assert q8.max_abs_diff is None and q8.median_ulp is None
    blocks = WEIGHT.size // 32
    assert 1 - 1 / blocks <= q8.bit_equal_fraction < 1  # at most one 34-byte block differs


def test_metadata_differences_are_listed_and_diverge(tmp_path: Path, model: Path) -> None:
    result = diff_files(model, write(tmp_path / "b.gguf", name="other"))
    assert all(t.status == "equal" for t in result.tensors)
    assert result.metadata_changed == ["general.name"]
    assert result.verdict is Verdict.DIVERGED
    text = render_text(result)
    assert 'metadata general.name: "tiny" vs "other"' in text


def test_another_layout_of_the_same_model_is_canonically_identical(tmp_path: Path,
                                                                     model: Path) -> None:
    reordered = write(tmp_path / "b.gguf", order=("ids", "b.f32", "w.q8_0", "w.f16", "w.f32"))
    result = diff_files(model, reordered)
    assert result.verdict is Verdict.CANONICALLY_IDENTICAL
    assert result.metadata_changed == []


def test_a_missing_tensor_and_a_type_change_are_named(tmp_path: Path, model: Path) -> None:
    other = write(tmp_path / "b.gguf", order=("w.f32", "w.f16", "b.f32", "ids"))
    result = diff_files(model, other)
    assert {t.name: t.status for t in result.tensors}["w.q8_0"] == "only-in-a"
    assert result.verdict is Verdict.DIVERGED


def test_diff_cli_json_and_text(tmp_path: Path, model: Path) -> None:
    other = write(tmp_path / "b.gguf", name="other")
    done = run(["diff", model, other, "--json"])
    assert done.code == 1, done.output
    report = json.loads(done.stdout)
    assert report["kind"] == "gguf" and report["metadata_changed"] == ["general.name"]
    done = run(["diff", model, write(tmp_path / "c.gguf")])
    assert done.code == 0 and "IDENTICAL" in done.stdout and "gguf" in done.stdout


# ------------------------------------------------------------------ hostile files


def header(*, version: int = 3, tensors: int = 0, keys: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensors, keys)


def gguf_string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def tensor_info(name: bytes, dims: list[int], kind: int, offset: int) -> bytes:
    return (gguf_string(name) + struct.pack("<I", len(dims))
            + struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", kind, offset))


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 32)


HOSTILE: dict[str, tuple[bytes, str]] = {
    "truncated header": (b"GGUF\x03\x00", "truncated"),
    "version 1": (header(version=1), "version 1"),
    "big-endian": (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian"),
    "2**60 tensors": (header(tensors=1 << 60), "limit"),
    "more tensors than bytes": (header(tensors=1000), "more than the file can hold"),
    "2**40 keys": (header(keys=1 << 40), "limit"),
    "huge key length": (header(keys=1) + struct.pack("<Q", 1 << 62) + b"\0" * 16, "limit"),
    "unknown value type": (header(keys=1) + gguf_string(b"k") + struct.pack("<I", 99),
                           "unknown value type"),
    "huge array": (header(keys=1) + gguf_string(b"k") + struct.pack("<IIQ", 9, 4, 1 << 40),
                   "limit"),
    "bool not 0/1": (header(keys=1) + gguf_string(b"k") + struct.pack("<IB", 7, 2),
                     "BOOL"),
    "duplicate key": (header(keys=2) + (gguf_string(b"k") + struct.pack("<IB", 0, 1)) * 2,
                      "appears twice"),
    "non-UTF-8 key": (header(keys=1) + gguf_string(b"\xff\xfe") + struct.pack("<IB", 0, 1),
                      "UTF-8"),
    "bad alignment": (header(keys=1) + gguf_string(b"general.alignment")
                      + struct.pack("<II", 4, 3), "power of two"),
    "alignment of the wrong type": (header(keys=1) + gguf_string(b"general.alignment")
                                    + struct.pack("<IQ", 10, 32), "power of two"),
    "nested arrays": (header(keys=1) + gguf_string(b"k")
                      + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 4, "deep"),
    "unknown tensor type": (padded(header(tensors=1) + tensor_info(b"t", [4], 77, 0)),
                            "unknown ggml type"),
    "zero dimensions": (padded(header(tensors=1) + tensor_info(b"t", [], 0, 0)),
                        "dimensions"),
    "tensor past the end": (padded(header(tensors=1) + tensor_info(b"t", [1 << 40], 0, 0)),
                            "past the end"),
    "misaligned tensor": (padded(header(tensors=1) + tensor_info(b"t", [1], 0, 4)) + b"\0" * 8,
                          "not aligned"),
    "partial quantized block": (padded(header(tensors=1) + tensor_info(b"t", [33], 8, 0))
                                + b"\0" * 128, "block"),
    "duplicate tensor": (padded(header(tensors=2) + tensor_info(b"t", [1], 0, 0) * 2)
                         + b"\0" * 8, "appears twice"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_file_is_one_sentence_naming_it(tmp_path: Path, name: str) -> None:
    data, fragment = HOSTILE[name]
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    started = time.monotonic()
    with pytest.raises(InputError) as caught:
        reader.read(path)
    assert time.monotonic() - started < 5  # generous: refused before reading or allocating
    message = str(caught.value)
    assert str(path) in message and fragment in message
    assert "\n" not in message
    good = tmp_path / "good.gguf"
    write(good)
    assert_error(run(["diff", good, path]), 2, "bad.gguf", fragment)


def test_a_file_merely_starting_with_the_magic_is_refused_not_compared(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"GGUF is a format")
    (tmp_path / "b.bin").write_bytes(b"GGUF is a format")
    with pytest.raises(InputError, match="not a valid GGUF file"):
        diff_files(tmp_path / "a.bin", tmp_path / "b.bin")


SEED = None


def _valid_bytes() -> bytes:
    global SEED
    if SEED is None:
        import tempfile

        with tempfile.TemporaryDirectory() as directory:
            weight = WEIGHT[:32, :32].copy()
            SEED = write(Path(directory) / "seed.gguf", weight=weight).read_bytes()
    return SEED


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_only_input_error_escapes(data: st.DataObject, tmp_path_factory: Any) -> None:
    original = bytearray(_valid_bytes())
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        choice = data.draw(st.sampled_from(["flip", "byte", "cut", "word"]))
        if choice == "flip":
            mutated[position] ^= 1 << data.draw(st.integers(0, 7))
        elif choice == "byte":
            mutated[position] = data.draw(st.integers(0, 255))
        elif choice == "word" and position + 8 <= len(mutated):
            mutated[position:position + 8] = struct.pack(
                "<Q", data.draw(st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1])))
        else:
            del mutated[position:]
            if len(mutated) < 4:
                mutated = bytearray(b"GGUF")
    directory = tmp_path_factory.mktemp("fuzz")
    path = directory / "m.gguf"
    path.write_bytes(bytes(mutated))
    try:
        parsed = reader.read(path)
    except InputError as error:
        assert str(path) in str(error)
        return
    for tensor in parsed.tensors.values():
        assert parsed.data_start <= tensor.begin <= tensor.end <= len(mutated)
    (directory / "o.gguf").write_bytes(bytes(original))
    with contextlib.suppress(InputError):
        diff_files(path, directory / "o.gguf")


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=400))
def test_fuzz_random_bodies_after_the_magic(body: bytes, tmp_path_factory: Any) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "r.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + body)
    with contextlib.suppress(InputError):
        reader.read(path)


def _write_tensors(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    writer = gguf.GGUFWriter(path, "llama")
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_diff_metrics_match_numpy_for_any_layout(data: st.DataObject,
                                                 tmp_path_factory: Any) -> None:
    """Whatever the shapes, dtypes and tensor order, each tensor's bytes are the ones compared:
    the bit-equal share and the largest difference are numpy's on the same arrays."""
    count = data.draw(st.integers(1, 4))
    pairs = {}
    for index in range(count):
        shape = tuple(data.draw(st.lists(st.integers(1, 9), min_size=1, max_size=3)))
        dtype = data.draw(st.sampled_from([np.float32, np.float16, np.int32]))
        seed = data.draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        a = (rng.standard_normal(shape) * 100).astype(dtype)
        b = a.copy()
        changed = rng.random(shape) < data.draw(st.sampled_from([0.0, 0.3, 1.0]))
        b[changed] = (b[changed] + 1).astype(dtype)
        pairs[f"t{index}"] = (a, b)
    order = data.draw(st.permutations(sorted(pairs)))
    directory = tmp_path_factory.mktemp("layout")
    left = _write_tensors(directory / "a.gguf", {n: pairs[n][0] for n in sorted(pairs)})
    right = _write_tensors(directory / "b.gguf", {n: pairs[n][1] for n in order})
    result = {t.name: t for t in diff_files(left, right).tensors}
    for name, (a, b) in pairs.items():
        tensor = result[name]
        width = {1: np.uint8, 2: np.uint16, 4: np.uint32}[a.itemsize]
        assert tensor.bit_equal_fraction == pytest.approx(
            float(np.mean(a.view(width) == b.view(width))))
        assert tensor.shape_a == list(a.shape)
        assert tensor.max_abs_diff == pytest.approx(
            float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
