"""Benchmark: contamination recall by record unit (line or paragraph), on wrapped text.

Two corpora of the same documents (60 to 200 words each, from a 50,000-word vocabulary): one
hard-wrapped at 8 words a line with a blank line between documents, as plain-text dumps often
are, and one with each document on a line of its own. From the documents, P passages of 13 to
20 consecutive words are planted in a benchmark (their start drawn anywhere, so in the wrapped
corpus almost all cross a line break), beside P fresh passages that no document holds. Each
corpus is digested with both record units and the benchmark looked up in each digest set, as
`record --record-digests` and `contamination` do. Reported per corpus and unit: recall on the
planted passages, false positives on the fresh ones, digests stored and the time to write them.

    python bench/bench_contamination_units.py [--documents 20000] [--planted 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import tempfile
import time
from pathlib import Path

from verifier.formats import recorddigests

WRAP = 8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--planted", type=int, default=1_000)
    args = parser.parse_args()
    rng = random.Random(23)
    vocabulary = [f"word{n}" for n in range(50_000)]
    documents = [rng.choices(vocabulary, k=rng.randint(60, 200)) for _ in range(args.documents)]
    planted = []
    for document in rng.sample(documents, args.planted):
        length = rng.randint(13, 20)
        start = rng.randrange(len(document) - length)
        planted.append(" ".join(document[start:start + length]))
    fresh = [" ".join(rng.choices(vocabulary, k=rng.randint(13, 20)))
             for _ in range(args.planted)]
    items = [[text] for text in planted + fresh]
    corpora = {
        "wrapped at 8 words": "\n\n".join(
            "\n".join(" ".join(d[i:i + WRAP]) for i in range(0, len(d), WRAP))
            for d in documents) + "\n",
        "one document a line": "\n".join(" ".join(d) for d in documents) + "\n",
    }
    words = sum(len(d) for d in documents)
    print(f"bench_contamination_units: {args.documents:,} documents, {words:,} words; "
          f"{args.planted:,} planted passages of 13-20 words, {args.planted:,} fresh")
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-units-") as temporary:
        for name, text in corpora.items():
            data = Path(temporary) / "corpus.txt"
            data.write_text(text, encoding="utf-8")
            source = hashlib.sha256(data.read_bytes()).hexdigest()
            print(f"  corpus {name} ({len(text) / 1e6:.1f} MB, "
                  f"{text.count(chr(10)):,} lines):")
            for unit in ("line", "paragraph"):
                start = time.perf_counter()
                digests = recorddigests.compute(data, source, unit)
                written = time.perf_counter() - start
                _, matches = recorddigests.match(digests, items)
                found = {m.number for m in matches}
                recall = sum(1 for n in range(1, len(planted) + 1) if n in found)
                false_positives = sum(1 for n in found if n > len(planted))
                failed |= false_positives > 0 or (unit == "paragraph"
                                                   and recall != len(planted))
                print(f"    {unit:<9} recall {recall:>5,}/{len(planted):,} "
                      f"({recall / len(planted):6.1%}); false positives {false_positives}/"
                      f"{len(fresh):,}; {len(digests.records):,} record and "
                      f"{len(digests.grams):,} 13-gram digests "
                      f"({len(digests.to_bytes()) / 1e6:.1f} MB); written in {written:.2f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
