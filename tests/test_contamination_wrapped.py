"""Contamination over hard-wrapped text: 13-grams run over a record's word stream.

The case of issue 23: a corpus wrapped at 8 words a line holds no 13-gram within one line, so
when records were lines, three verbatim benchmark passages of 13 to 20 words crossing the wraps
gave `0/3 items overlap` and PASS. The corpus here is generated the same way (paragraphs of
prose-like documents, 8 words a line, about 5,000 lines) and recorded with the real CLI; the
benchmark's passages are cut from the middle of lines, so each crosses at least one wrap.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_error, make_keys, record_step, run, write_policy

from verifier.errors import InputError
from verifier.formats import recorddigests

WORDS = [f"v{n:04d}" for n in range(5000)]
COPY = ("import pathlib; pathlib.Path('data').mkdir(exist_ok=True); "
        "pathlib.Path('data/corpus.txt').write_text(pathlib.Path('raw.txt').read_text())")
FAST = ["--sandbox", "none", "--no-trace"]
WRAP = 8


def wrapped_corpus(rng: random.Random, documents: int) -> tuple[str, list[list[str]]]:
    """Documents of 40 to 120 words, each a paragraph wrapped at WRAP words a line."""
    docs = [[rng.choice(WORDS) for _ in range(rng.randint(40, 120))] for _ in range(documents)]
    text = "\n\n".join("\n".join(" ".join(d[i:i + WRAP]) for i in range(0, len(d), WRAP))
                       for d in docs)
    return text + "\n", docs


def passages(rng: random.Random, docs: list[list[str]], count: int) -> list[str]:
    """Verbatim runs of 13 to 20 words starting mid-line: each crosses a line break."""
    found = []
    for doc in rng.sample(docs, count):
        length = rng.randint(13, 20)
        start = rng.choice([i for i in range(len(doc) - length) if i % WRAP])
        found.append(" ".join(doc[start:start + length]))
    return found


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wrapped")
    make_keys(root / "keys", "builder")
    rng = random.Random(23)
    text, docs = wrapped_corpus(rng, 470)
    assert 4500 < len([x for x in text.splitlines() if x]) < 5500  # ~5,000 as reported
    policies = {}
    for unit in ("default", "line"):
        work = root / unit
        work.mkdir()
        (work / "raw.txt").write_text(text, encoding="utf-8")
        extra = [*FAST, "--record-digests", "data/corpus.txt"]
        extra += [] if unit == "default" else ["--record-unit", unit]
        result = record_step(work, "prepare", root / "keys/builder.key", ["raw.txt"],
                             ["data/corpus.txt"], COPY, extra=extra)
        assert result.code == 0, result.output
        policies[unit] = write_policy(work / "policy.yaml", {
            "version": 1, "name": "wrapped",
            "signers": {"builder": {"key": "../keys/builder.pub"}},
            "sources": [{"name": "raw.txt",
                         "sha256": hashlib.sha256(text.encode()).hexdigest()}],
            "steps": [{"name": "prepare", "signed_by": ["builder"]}],
        })
        (work / "bench.txt").write_text("\n".join(passages(random.Random(5), docs, 3)) + "\n",
                                        encoding="utf-8")
        clean_rng = random.Random(77)
        (work / "clean.txt").write_text("\n".join(
            " ".join(clean_rng.choice(WORDS) for _ in range(16)) for _ in range(500)) + "\n",
            encoding="utf-8")
    return {"root": root, **{f"work-{u}": root / u for u in policies}}


def contamination(work: Path, benchmark: str, *extra: str):
    return run(["contamination", "data/corpus.txt", "--policy", "policy.yaml",
                "--attestations", "attestations", "--digests-from", "attestations",
                "--benchmark", benchmark, *extra], cwd=work)


def test_passages_wrapped_across_lines_are_found(chain: dict[str, Path]) -> None:
    result = contamination(chain["work-default"], "bench.txt", "--json")
    assert result.code == 1, result.output  # 3 of 3 is over the policy's 0 threshold
    report = json.loads(result.stdout)
    [bench] = report["benchmarks"]
    assert (bench["items"], bench["overlapping_items"], bench["ngram_items"]) == (3, 3, 3)
    [source] = report["record_digests"]
    assert source["unit"] == "paragraph" and source["format_version"] == 2
    assert report["notes"] == []
    text = contamination(chain["work-default"], "bench.txt")
    assert "3/3 items overlap" in text.stdout and "records by paragraph" in text.stdout


def test_fresh_items_are_not_found_over_the_word_stream(chain: dict[str, Path]) -> None:
    """Running 13-grams across lines (and paragraphs) finds no false overlap: 0 of 500."""
    result = contamination(chain["work-default"], "clean.txt", "--json")
    assert result.code == 0, result.output
    [bench] = json.loads(result.stdout)["benchmarks"]
    assert (bench["items"], bench["overlapping_items"]) == (500, 0)


def test_line_records_miss_them_and_the_report_says_so(chain: dict[str, Path]) -> None:
    """The old unit, chosen explicitly: the same passages are missed, and the PASS carries a
    note that wrapped text was not looked at."""
    result = contamination(chain["work-line"], "bench.txt")
    assert result.code == 0, result.output
    assert "0/3 items overlap" in result.stdout
    assert "records by line" in result.stdout
    assert "13-grams stop at line ends" in result.stdout


def test_record_refuses_a_unit_the_file_cannot_have(chain: dict[str, Path]) -> None:
    work = chain["work-default"]
    result = record_step(work, "other", chain["root"] / "keys/builder.key", ["raw.txt"],
                         ["data/corpus.txt"], COPY, out="other",
                         extra=[*FAST, "--record-digests", "data/corpus.txt",
                                "--record-unit", "field"])
    assert_error(result, 2, "--record-unit field", "data/corpus.txt",
                 "cannot be split into 'field' records")
    assert not (work / "other").exists()
    for extra, said in ((["--record-digests", "data/corpus.txt", "--record-unit", "word"],
                         "is none of line, paragraph, field"),
                        (["--record-unit", "line"], "none is given")):
        result = record_step(work, "other", chain["root"] / "keys/builder.key", ["raw.txt"],
                             ["data/corpus.txt"], COPY, out="other", extra=[*FAST, *extra])
        assert_error(result, 2, "--record-unit", said)


def test_paragraph_digests_hold_every_line_digest(tmp_path: Path) -> None:
    """A paragraph record adds to what line records hold, so nothing `line` finds is lost:
    each line of 5 words or more is a record of its own too."""
    data = tmp_path / "d.txt"
    data.write_text("one two three four five six\nseven eight nine ten eleven twelve\n\n"
                    "thirteen fourteen fifteen sixteen seventeen\n", encoding="utf-8")
    source = recorddigests.file_sha256(data)
    lines = recorddigests.compute(data, source, "line")
    paragraphs = recorddigests.compute(data, source)
    assert paragraphs.unit == "paragraph" and lines.unit == "line"
    assert set(lines.records.tolist()) < set(paragraphs.records.tolist())
    assert len(paragraphs.records) == len(lines.records) + 1  # the first paragraph, whole
    assert len(lines.grams) == 0 and len(paragraphs.grams) == 0  # 12 and 5 words: no 13-gram


def test_a_v1_file_still_reads_and_equals_line_records(tmp_path: Path) -> None:
    """Backward compatibility: a v1 file (MVRDIG01, no unit) is read as line records; the v2
    line-unit digests of the same data are the same numbers."""
    data = tmp_path / "d.txt"
    rng = random.Random(1)
    data.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(15))
                              for _ in range(50)) + "\n", encoding="utf-8")
    source = recorddigests.file_sha256(data)
    now = recorddigests.compute(data, source, "line")
    v1 = (b"MVRDIG01" + bytes.fromhex(source) + recorddigests.salt_for(source)
          + len(now.records).to_bytes(8, "little") + len(now.grams).to_bytes(8, "little")
          + now.records.astype("<u8").tobytes() + now.grams.astype("<u8").tobytes())
    parsed = recorddigests.parse(v1, "old.mvrd")
    assert (parsed.unit, parsed.version) == ("line", 1)
    assert np.array_equal(parsed.records, now.records)
    assert np.array_equal(parsed.grams, now.grams)
    v2 = now.to_bytes()
    assert v2[:8] == b"MVRDIG02" and v2[88:96] == (1).to_bytes(8, "little")
    with pytest.raises(InputError, match="unknown record unit"):
        recorddigests.parse(v2[:88] + (9).to_bytes(8, "little") + v2[96:], "f")
