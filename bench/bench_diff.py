"""Benchmark: `model-verifier diff` of two large safetensors files; one line per case.

Generates pairs of safetensors files of --size-gib each (16 tensors per file, written tensor by
tensor, never whole in memory) and times `model-verifier diff --json` on each pair as a user runs
it, start-up included. The cases:

  f32-sparse   float32, one element in 1000 of every tensor one ULP apart (mostly bit-equal);
  f32-dense    float32, every element moved by a random -4..4 ULPs (8 in 9 elements differ);
  bf16-dense   the same in bfloat16;
  f16-dense    the same in float16;
  f32-unrelated  float32, unrelated values (two different models: large ULP distances);
  identical    float32, byte-identical copies.

Throughput counts the bytes of both files. Each figure is the median of --runs runs after one
untimed run that also warms the page cache (in-memory figures, not disk figures); peak RSS is the
largest of the runs. The data is written by a child process, and this one does not import
numpy: a child started from a large process counts that process's memory in its own peak.
--against TREE times the `verifier` package of another source tree (an older checkout, say) on
the same data in the same run, for before/after figures.

    python bench/bench_diff.py [--size-gib 1.0] [--runs 3] [--cases f32-dense,identical]
                               [--tmp DIR] [--against TREE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported by the child that writes the data alone (see above)
    import numpy as np

GIB = 1 << 30
TENSORS = 16
ROOT = Path(__file__).resolve().parent.parent
CASES = {  # name -> (safetensors dtype, perturbation)
    "f32-sparse": ("F32", "sparse"),
    "f32-dense": ("F32", "dense"),
    "bf16-dense": ("BF16", "dense"),
    "f16-dense": ("F16", "dense"),
    "f32-unrelated": ("F32", "unrelated"),
    "identical": ("F32", "none"),
}
RUN_CLI = "import sys; sys.argv[0] = 'model-verifier'; from verifier.cli import main; main()"


@dataclass(frozen=True)
class Sample:
    wall_s: float
    peak_rss_mb: float
    verdict: str


def _bits(values: np.ndarray, dtype: str) -> np.ndarray:
    """The file's bit patterns: bfloat16 is float32's upper half (truncated)."""
    import numpy as np

    if dtype == "BF16":
        return (values.astype(np.float32).view(np.uint32) >> 16).astype("<u2").view("<i2")
    return values.view({2: "<i2", 4: "<i4"}[values.itemsize])


def _perturb(bits: np.ndarray, how: str, rng: np.random.Generator) -> np.ndarray:
    import numpy as np

    if how == "unrelated":
        return rng.standard_normal(bits.size, dtype=np.float32).view(bits.dtype)
    if how == "sparse":
        out = bits.copy()
        out[::1000] += 1  # one ULP away from zero: positive grows, negative shrinks in value
        return out
    steps = rng.integers(-4, 5, size=bits.size).astype(bits.dtype)
    magnitude = bits & np.array(0x7FFF if bits.itemsize == 2 else 0x7FFFFFFF, bits.dtype)
    steps[magnitude < 16] = 0  # keep zeros and the smallest values from crossing the sign bit
    return bits + steps


def write_pair(left: Path, right: Path, dtype: str, how: str, size_bytes: int) -> None:
    """Two safetensors files of `size_bytes` each; the right one perturbed as `how` says."""
    import numpy as np

    numpy_dtype = np.float16 if dtype == "F16" else np.float32
    width = 2 if dtype in ("BF16", "F16") else 4
    elements = max(size_bytes // TENSORS // width // 1024 * 1024, 1024)
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    for index in range(TENSORS):
        start = index * elements * width
        header[f"layers.{index}.weight"] = {
            "dtype": dtype, "shape": [elements // 1024, 1024],
            "data_offsets": [start, start + elements * width]}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    rng = np.random.default_rng(11)
    base = rng.standard_normal(elements, dtype=np.float32).astype(numpy_dtype)
    with open(left, "wb") as out_a, open(right, "wb") as out_b:
        for out in (out_a, out_b):
            out.write(struct.pack("<Q", len(text)) + text)
        for index in range(TENSORS):
            bits = _bits(base * numpy_dtype(1 + index / 100), dtype)
            out_a.write(bits.tobytes())
            out_b.write((bits if how == "none" else _perturb(bits, how, rng)).tobytes())


def run_once(tree: Path, left: Path, right: Path) -> Sample:
    """`model-verifier diff --json` with `tree`'s verifier package; wall time and peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        # Started in the data's folder: `python -c` puts its working directory first on the
        # import path, which would shadow PYTHONPATH when run from a source tree.
        process = subprocess.Popen([sys.executable, "-c", RUN_CLI, "diff", "--json", str(left),
                                    str(right)], env=env, cwd=left.parent,
                                   stdin=subprocess.DEVNULL, stdout=output, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)  # the rusage of this child alone
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        errors.seek(0)
        if process.returncode not in (0, 1):
            raise SystemExit(f"bench_diff: diff exited with {process.returncode}: "
                             f"{errors.read().decode(errors='replace').strip()}")
        verdict = json.loads(output.read())["verdict"]
    return Sample(wall, usage.ru_maxrss / 1024, verdict)


def measure(tree: Path, left: Path, right: Path, runs: int) -> Sample:
    run_once(tree, left, right)  # untimed: warms the page cache
    samples = [run_once(tree, left, right) for _ in range(runs)]
    return Sample(statistics.median(s.wall_s for s in samples),
                  max(s.peak_rss_mb for s in samples), samples[0].verdict)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument("--against", type=Path, default=None,
                        help="another source tree whose verifier package is timed too")
    parser.add_argument("--write", nargs=4, metavar=("CASE", "LEFT", "RIGHT", "BYTES"),
                        help=argparse.SUPPRESS)  # the child process that writes the data
    args = parser.parse_args()
    if args.write:
        case, left, right, size = args.write
        write_pair(Path(left), Path(right), *CASES[case], int(size))
        return
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise SystemExit(f"bench_diff: unknown case(s) {', '.join(unknown)}; "
                         f"known: {', '.join(CASES)}")
    size = int(args.size_gib * GIB)
    work = Path(tempfile.mkdtemp(prefix="bench-diff-", dir=args.tmp))
    try:
        free = shutil.disk_usage(work).free
        if free < 2 * size + 256 * (1 << 20):
            raise SystemExit(f"bench_diff: {2 * size / GIB:.2f} GiB of free disk needed in "
                             f"{work.parent}, {free / GIB:.2f} GiB available.")
        for case in cases:
            left, right = work / "a.safetensors", work / "b.safetensors"
            subprocess.run([sys.executable, __file__, "--write", case, str(left), str(right),
                            str(size)], check=True)
            input_bytes = left.stat().st_size + right.stat().st_size
            line = describe(case, input_bytes, measure(ROOT, left, right, args.runs))
            if args.against is not None:
                before = measure(args.against.resolve(), left, right, args.runs)
                line += f"  | {args.against.name}: " + describe("", input_bytes, before).strip()
            print(line, flush=True)
            left.unlink()
            right.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def describe(case: str, input_bytes: int, sample: Sample) -> str:
    return (f"{case:<13} {input_bytes / GIB:.2f} GiB in {sample.wall_s:6.2f} s = "
            f"{input_bytes / sample.wall_s / 1e9:5.2f} GB/s of input, peak RSS "
            f"{sample.peak_rss_mb:5.0f} MB, {sample.verdict}")


if __name__ == "__main__":
    main()
