"""Benchmark: record digests for a million training records, written and checked.

A text file of N records (default 1,000,000 lines of 16 words drawn from a 50,000-word
vocabulary, so each has four word 13-grams) is digested as `record --record-digests` digests
it, the file is read back and checked as `contamination` checks it, and a benchmark of planted
and fresh items is looked up. The baseline, in the same run, is sha256 over the same data file
(what `record` does to it anyway). Reported: times, ratios against the baseline, the digest
file's size per record, and the false-positive rate measured on the fresh items (with the
64-bit bound beside it).

    python bench/bench_contamination.py [--records 1000000] [--benchmark 20000]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import tempfile
import time
from pathlib import Path

from verifier.formats import recorddigests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--benchmark", type=int, default=20_000)
    args = parser.parse_args()
    rng = random.Random(15)
    vocabulary = [f"word{n}" for n in range(50_000)]
    with tempfile.TemporaryDirectory(prefix="bench-contamination-") as temporary:
        data = Path(temporary) / "train.txt"
        planted: list[str] = []
        with data.open("w", encoding="utf-8") as out:
            for index in range(args.records):
                line = " ".join(rng.choices(vocabulary, k=16))
                if index % (args.records // max(1, args.benchmark // 2)) == 0:
                    planted.append(line)
                out.write(line + "\n")
        size = data.stat().st_size

        start = time.perf_counter()
        source = hashlib.sha256(data.read_bytes()).hexdigest()
        baseline = time.perf_counter() - start

        start = time.perf_counter()
        digests = recorddigests.compute(data, source, "line")  # one record a line, as written
        blob = digests.to_bytes()
        target = Path(temporary) / "train.txt.mvrd"
        recorddigests.write(target, blob, overwrite=False)
        written = time.perf_counter() - start

        start = time.perf_counter()
        read = recorddigests.read_file(target)
        hashlib.sha256(read).hexdigest()  # found by its signed digest, as contamination does
        parsed = recorddigests.parse(read, str(target))
        loaded = time.perf_counter() - start

        fresh_rng = random.Random(99)
        fresh = [" ".join(fresh_rng.choices(vocabulary, k=16))
                 for _ in range(args.benchmark - len(planted))]
        items = [[text] for text in planted + fresh]
        start = time.perf_counter()
        _, matches = recorddigests.match(parsed, items)
        checked = time.perf_counter() - start

    found = {m.number for m in matches}
    planted_found = sum(1 for n in range(1, len(planted) + 1) if n in found)
    false_positives = sum(1 for n in found if n > len(planted))
    lookups = len(fresh) * (1 + 4)
    stored = len(parsed.records) + len(parsed.grams)
    print(f"bench_contamination: {args.records:,} records, {size / 1e6:.1f} MB of text")
    print(f"  baseline sha256 of the data:  {baseline:7.2f} s")
    print(f"  write record digests:         {written:7.2f} s  ({written / baseline:.0f}x the "
          f"baseline; {args.records / written:,.0f} records/s)")
    print(f"  digest file: {len(blob) / 1e6:.1f} MB, {len(parsed.records):,} record and "
          f"{len(parsed.grams):,} 13-gram digests ({len(blob) / args.records:.1f} bytes per "
          f"record, {len(blob) / size:.2f}x the text)")
    print(f"  read, hash and check the file: {loaded:6.2f} s")
    print(f"  look up {len(items):,} benchmark items: {checked:.2f} s "
          f"({len(items) / checked:,.0f} items/s)")
    print(f"  planted items found: {planted_found}/{len(planted)}; false positives among "
          f"{len(fresh):,} fresh items: {false_positives} (measured rate "
          f"{false_positives / max(1, len(fresh)):.1g}; bound {stored / 2**64 * lookups:.1g} "
          f"for {lookups:,} lookups of 64-bit digests)")
    return 0 if planted_found == len(planted) and false_positives == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
