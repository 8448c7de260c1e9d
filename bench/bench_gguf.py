"""Benchmark: `diff` of two GGUF files against the same tensors in safetensors, and the header
reader on a large vocabulary.

Two pairs of files hold the same float tensors (F16 and F32, a small change in every element of
one file of each pair): one pair written by llama.cpp's `gguf` library, one by safetensors. The
GGUF pair also holds Q8_0 tensors (compared byte by byte). The ratio of the GGUF diff to the
safetensors diff of the same float data is the cost of the GGUF path; each time is the best of
a few runs. Then the reader alone on a header with a 150,000-token vocabulary and as many
merges (the size of current LLM tokenizers). Needs the `gguf` package (a dev dependency).

    python bench/bench_gguf.py [--megabytes 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from verifier.diff import gguf as reader
from verifier.diff.tensordiff import diff_files


def _best(action, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    try:
        import gguf
        from gguf.quants import quantize
    except ImportError:
        print("bench_gguf: the gguf package is not installed; nothing to measure")
        return 0
    rng = np.random.default_rng(0)
    columns = 4096
    rows = max(32, args.megabytes * (1 << 20) // (columns * 6) // 32 * 32)  # F32 + F16 bytes
    base = rng.standard_normal((rows, columns)).astype(np.float32)
    moved = base + np.float32(1e-4) * rng.standard_normal(base.shape).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="bench-gguf-") as temporary:
        work = Path(temporary)
        for name, weights in (("a", base), ("b", moved)):
            writer = gguf.GGUFWriter(work / f"{name}.gguf", "llama")
            writer.add_tensor("w.f32", weights)
            writer.add_tensor("w.f16", weights.astype(np.float16))
            blocks = quantize(weights[:rows // 4], gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor("w.q8_0", blocks, raw_shape=blocks.shape,
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
            save_file({"w.f32": weights, "w.f16": weights.astype(np.float16)},
                      work / f"{name}.safetensors")
        float_bytes = base.nbytes + base.size * 2
        ggufs = _best(lambda: diff_files(work / "a.gguf", work / "b.gguf"), args.repeat)
        safetensors = _best(lambda: diff_files(work / "a.safetensors", work / "b.safetensors"),
                            args.repeat)
        print(f"diff of {float_bytes / 2**20:.0f} MiB of float tensors per file "
              f"(+{(work / 'a.gguf').stat().st_size - float_bytes >> 20} MiB of Q8_0 in GGUF):")
        print(f"  safetensors {safetensors:.3f}s ({float_bytes / safetensors / 2**20:.0f} MiB/s)")
        print(f"  gguf        {ggufs:.3f}s  ratio {ggufs / safetensors:.2f}x")

        writer = gguf.GGUFWriter(work / "vocab.gguf", "llama")
        tokens = [f"token-{i}" for i in range(150_000)]
        writer.add_token_list(tokens)
        writer.add_token_merges([f"t{i} k{i}" for i in range(150_000)])
        writer.add_token_scores([0.0] * 150_000)
        writer.add_tensor("w", np.zeros(32, np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        size = (work / "vocab.gguf").stat().st_size
        parse = _best(lambda: reader.read(work / "vocab.gguf"), args.repeat)
        print(f"header of {size / 2**20:.1f} MiB (150,000 tokens, merges and scores): "
              f"read in {parse:.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
