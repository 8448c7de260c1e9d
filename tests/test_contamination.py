"""The benchmark-contamination check: signed record digests, exact and 13-gram overlap.

A two-step chain (prepare writes data/train.jsonl and signs its record digests; train reads it)
is recorded with the real CLI. Benchmark items planted in the training data must be found, by
exact record and by 13-gram; fresh items must not (the measured false-positive rate is 0 of
the clean items, against a bound of N/2^64 per lookup).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_error, make_keys, record_step, run, write_policy

from verifier.errors import InputError
from verifier.formats import recorddigests

WORDS = [f"w{n:04d}" for n in range(5000)]
PREPARE = ("import pathlib; pathlib.Path('data').mkdir(exist_ok=True); "
           "pathlib.Path('data/train.jsonl').write_text("
           "pathlib.Path('raw.jsonl').read_text() + '{\"text\": \"end\"}\\n')")
TRAIN = ("import hashlib, pathlib; pathlib.Path('model.bin').write_bytes("
         "hashlib.sha256(pathlib.Path('data/train.jsonl').read_bytes()).digest())")
FAST = ["--sandbox", "none", "--no-trace"]


def sentence(rng: random.Random, words: int = 20) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


PLANTED_EXACT = "What is the  capital of FRANCE, asked the benchmark's first question?"
PLANTED_NGRAM = ("the quick brown fox jumps over the lazy dog while thirteen words make a "
                 "gram and more follow here")


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("contamination")
    keys = root / "keys"
    make_keys(keys, "builder")
    work = root / "work"
    work.mkdir()
    rng = random.Random(15)
    lines = [json.dumps({"text": sentence(rng)}) for _ in range(3000)]
    # Planted: one benchmark question verbatim (other case and spacing), and one benchmark
    # passage inside a longer training record (only its 13-grams can find it).
    lines.insert(100, json.dumps({"text": "what is the capital of france, asked the "
                                          "benchmark's first QUESTION?", "id": 7}))
    lines.insert(2000, json.dumps({"text": "preamble words " + PLANTED_NGRAM.upper()
                                   + " and a tail"}))
    (work / "raw.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = record_step(work, "prepare", keys / "builder.key", ["raw.jsonl"],
                         ["data/train.jsonl"], PREPARE,
                         extra=[*FAST, "--record-digests", "data/train.jsonl"])
    assert result.code == 0, result.output
    result = record_step(work, "train", keys / "builder.key", ["data/train.jsonl"],
                         ["model.bin"], TRAIN, extra=FAST)
    assert result.code == 0, result.output
    raw_sha = hashlib.sha256((work / "raw.jsonl").read_bytes()).hexdigest()
    policy = write_policy(work / "policy.yaml", {
        "version": 1, "name": "data",
        "signers": {"builder": {"key": "../keys/builder.pub"}},
        "sources": [{"name": "raw.jsonl", "sha256": raw_sha}],
        "steps": [{"name": "prepare", "signed_by": ["builder"]},
                  {"name": "train", "signed_by": ["builder"], "after": ["prepare"]}],
        "data": {"max_benchmark_overlap": 0.01},
    })
    clean_rng = random.Random(99)
    clean = [json.dumps({"question": sentence(clean_rng), "answer": "B"}) for _ in range(2000)]
    (work / "clean.jsonl").write_text("\n".join(clean) + "\n", encoding="utf-8")
    planted = [json.dumps({"question": PLANTED_EXACT, "answer": "Paris"}),
               json.dumps({"question": "prefix " + PLANTED_NGRAM, "answer": "a"}),
               *clean[:8]]
    (work / "planted.jsonl").write_text("\n".join(planted) + "\n", encoding="utf-8")
    return {"work": work, "policy": policy, "keys": keys}


def contamination(chain: dict[str, Path], *extra: str, benchmark: str = "planted.jsonl"):
    return run(["contamination", "model.bin", "--policy", chain["policy"], "--attestations",
                "attestations", "--digests-from", "attestations", "--benchmark", benchmark,
                "--json", *extra], cwd=chain["work"])


def test_the_digest_file_is_a_signed_byproduct_of_the_data_step(chain: dict[str, Path]
                                                                 ) -> None:
    bundle = json.loads((chain["work"] / "attestations/prepare.intoto.json").read_text())
    import base64

    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    [entry] = [b for b in statement["predicate"]["runDetails"]["byproducts"]
               if b["name"].startswith("record-digests/")]
    assert entry["name"] == "record-digests/data/train.jsonl"
    schema = json.loads((Path(__file__).parents[1] / "attestations"
                         / "step-statement.schema.json").read_text(encoding="utf-8"))
    from jsonschema import Draft202012Validator

    assert [e.message for e in Draft202012Validator(schema).iter_errors(statement)] == []
    file = chain["work"] / "attestations/record-digests/prepare/data/train.jsonl.mvrd"
    assert entry["digest"]["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    # Computed from the attested data: the header names its sha256, the salt derives from it.
    data_sha = hashlib.sha256((chain["work"] / "data/train.jsonl").read_bytes()).hexdigest()
    parsed = recorddigests.parse(file.read_bytes(), str(file))
    assert parsed.source_sha256 == data_sha
    # The training text itself is nowhere in the file.
    assert b"capital" not in file.read_bytes()


def test_planted_items_are_found_by_exact_record_and_by_13_gram(chain: dict[str, Path]) -> None:
    result = contamination(chain)
    assert result.code == 1, result.output  # 2 of 10 items is over the 1% threshold
    report = json.loads(result.stdout)
    [bench] = report["benchmarks"]
    assert bench["items"] == 10
    assert bench["overlapping_items"] == 2
    assert bench["exact_items"] == 1  # the question, despite case and spacing
    assert bench["ngram_items"] == 1  # the passage, inside a longer record (the question has
    # 11 words: too short for a 13-gram, so only the exact match finds it)
    [source] = bench["sources"]
    assert source["step"] == "prepare" and source["data"] == "data/train.jsonl"
    assert source["first_items"] == [1, 2]


def test_clean_benchmark_has_no_overlap_measured_false_positive_rate(chain: dict[str, Path]
                                                                      ) -> None:
    result = contamination(chain, benchmark="clean.jsonl")
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    [bench] = report["benchmarks"]
    # 2,000 clean items, each 1 record and 8 13-grams looked up: no false positive.
    assert bench["items"] == 2000
    assert bench["overlapping_items"] == 0
    [digests] = report["record_digests"]
    stored = digests["records"] + digests["ngrams"]
    lookups = 2000 * 9
    # The bound for 64-bit digests: stored / 2^64 per lookup; measured 0 / lookups.
    assert stored * lookups / 2**64 < 1e-9


def test_threshold_from_the_policy_decides_the_exit(chain: dict[str, Path], tmp_path: Path
                                                    ) -> None:
    policy = chain["policy"].read_text().replace("max_benchmark_overlap: 0.01",
                                                 "max_benchmark_overlap: 0.2")
    loose = chain["work"] / "loose.yaml"
    loose.write_text(policy)
    result = run(["contamination", "model.bin", "--policy", loose, "--digests-from",
                  "attestations", "--benchmark", "planted.jsonl"], cwd=chain["work"])
    assert result.code == 0, result.output
    assert "2/10 items overlap (20.00%): 1 exact, 1 by 13-gram" in result.stdout
    assert "in data/train.jsonl (step 'prepare')" in result.stdout


def test_digest_file_is_found_by_signed_digest_not_by_name(chain: dict[str, Path],
                                                          tmp_path: Path) -> None:
    # Another file of the same name (digests of other data) in the directory searched.
    elsewhere = tmp_path / "digests"
    elsewhere.mkdir()
    other = tmp_path / "other.txt"
    other.write_text(PLANTED_EXACT + "\n", encoding="utf-8")
    fake = recorddigests.compute(other, recorddigests.file_sha256(other)).to_bytes()
    (elsewhere / "train.jsonl.mvrd").write_bytes(fake)
    result = contamination(chain, "--digests-from", str(elsewhere))
    # attestations/ is still searched too, and the signed file is found there.
    assert result.code == 1, result.output
    only = run(["contamination", "model.bin", "--policy", chain["policy"], "--digests-from",
                elsewhere, "--benchmark", "planted.jsonl"], cwd=chain["work"])
    assert_error(only, 2, "record digests of data/train.jsonl", "prepare", "no file there")


def test_a_failing_chain_is_not_checked(chain: dict[str, Path], tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(chain["work"], work)
    (work / "raw.jsonl").write_text("changed\n")  # no longer the pinned source...
    policy = (work / "policy.yaml").read_text()
    sha = hashlib.sha256(b"changed\n").hexdigest()
    old = hashlib.sha256((chain["work"] / "raw.jsonl").read_bytes()).hexdigest()
    (work / "policy.yaml").write_text(policy.replace(old, sha))  # ...so the pin fails
    (work / "policy.yaml").write_text((work / "policy.yaml").read_text().replace(
        "../keys", str(chain["keys"])))
    result = run(["contamination", "model.bin", "--policy", "policy.yaml", "--digests-from",
                  "attestations", "--benchmark", "planted.jsonl"], cwd=work)
    assert result.code == 1, result.output
    assert "not checked" in result.stdout


def test_normalisation_is_nfc_casefold_and_whitespace() -> None:
    assert recorddigests.normalise("  Caf\u0065\u0301\tSTRASSE\n ") == "caf\u00e9 strasse"
    assert recorddigests.normalise("Straße") == recorddigests.normalise("STRASSE")


def test_records_of_text_jsonl_and_csv(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    (tmp_path / "a.jsonl").write_text('{"q": "x", "c": ["y", {"d": "z"}], "n": 3}\n\n')
    (tmp_path / "a.csv").write_text('h1,h2\na,"b, c"\nd,e\n')
    assert list(recorddigests.items(tmp_path / "a.txt")) == [["one\n"], ["two\n"]]
    assert list(recorddigests.items(tmp_path / "a.jsonl")) == [["y", "z", "x"]]
    assert list(recorddigests.items(tmp_path / "a.csv")) == [["a b, c"], ["d e"]]
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(InputError, match="line 1 is not JSON"):
        list(recorddigests.items(tmp_path / "bad.jsonl"))
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\n")
    with pytest.raises(InputError, match="not UTF-8"):
        list(recorddigests.items(tmp_path / "bad.txt"))


def test_hostile_digest_files_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "d.txt"
    data.write_text("one two three four five six seven\n")
    good = recorddigests.compute(data, recorddigests.file_sha256(data))
    raw = good.to_bytes()
    assert recorddigests.parse(raw, "f").records.tolist() == good.records.tolist()
    with pytest.raises(InputError, match="no MVRDIG02 or MVRDIG01 header"):
        recorddigests.parse(b"junk", "f")
    with pytest.raises(InputError, match="length does not match"):
        recorddigests.parse(raw + b"\0" * 8, "f")
    with pytest.raises(InputError, match="salt"):
        recorddigests.parse(raw[:40] + bytes(32) + raw[72:], "f")
    unsorted = recorddigests.DigestSet(good.source_sha256, np.array([5, 3], dtype=np.uint64),
                                       np.zeros(0, dtype=np.uint64))
    with pytest.raises(InputError, match="not sorted"):
        recorddigests.parse(unsorted.to_bytes(), "f")
    huge_count = raw[:72] + (2**63).to_bytes(8, "little") + raw[80:]
    with pytest.raises(InputError, match="length does not match"):
        recorddigests.parse(huge_count, "f")


def test_short_records_are_neither_stored_nor_matched(tmp_path: Path) -> None:
    data = tmp_path / "d.txt"
    data.write_text("yes\n\nB\n\nfour words are here\n")
    for unit in ("line", "paragraph"):
        digests = recorddigests.compute(data, recorddigests.file_sha256(data), unit)
        assert len(digests.records) == 0 and len(digests.grams) == 0


def test_record_refuses_digests_of_an_undeclared_file(chain: dict[str, Path]) -> None:
    result = record_step(chain["work"], "other", chain["keys"] / "builder.key", ["raw.jsonl"],
                         ["out.txt"], "open('out.txt','w').write('x')",
                         extra=[*FAST, "--record-digests", "elsewhere.txt"], out="other")
    assert_error(result, 2, "--record-digests", "neither a --material nor a --product")
    assert not (chain["work"] / "other").exists()


def test_the_file_follows_its_documented_construction(tmp_path: Path) -> None:
    """Recomputed from the format's description with hashlib alone."""
    words = [f"t{n}" for n in range(14)]
    data = tmp_path / "d.txt"
    data.write_text("  " + " ".join(words).upper() + "\n", encoding="utf-8")
    source = hashlib.sha256(data.read_bytes()).hexdigest()
    raw = recorddigests.compute(data, source).to_bytes()
    salt = hashlib.blake2b(b"model-verifier record digests v1\x00" + bytes.fromhex(source),
                           digest_size=32).digest()
    assert raw[:8] == b"MVRDIG02" and raw[8:40] == bytes.fromhex(source) and raw[40:72] == salt

    def digest(text: str, person: bytes) -> bytes:
        return hashlib.blake2b(text.encode(), key=salt, digest_size=8, person=person).digest()

    record = digest(" ".join(words), b"record")
    grams = sorted([digest(" ".join(words[:13]), b"13gram"),
                    digest(" ".join(words[1:]), b"13gram")],
                   key=lambda b: int.from_bytes(b, "little"))
    assert raw[72:88] == (1).to_bytes(8, "little") + (2).to_bytes(8, "little")
    assert raw[88:96] == (2).to_bytes(8, "little")  # the unit: paragraph, a text's default
    assert raw[96:] == record + b"".join(grams)


def test_a_signed_digest_file_of_other_data_is_refused(chain: dict[str, Path],
                                                       tmp_path: Path) -> None:
    """The trusted signer signs a digest file computed from other (clean) data: its header
    names that data's sha256, not the one the step attests, so it is refused."""
    import base64

    from helpers import sign_bundle

    work = tmp_path / "work"
    shutil.copytree(chain["work"], work)
    other = tmp_path / "other.txt"
    other.write_text("nothing of the benchmark is in these seven words\n", encoding="utf-8")
    forged = recorddigests.compute(other, recorddigests.file_sha256(other)).to_bytes()
    (work / "forged.mvrd").write_bytes(forged)
    path = work / "attestations" / "prepare.intoto.json"
    statement = json.loads(base64.b64decode(json.loads(path.read_text())["dsseEnvelope"]
                                            ["payload"]))
    for entry in statement["predicate"]["runDetails"]["byproducts"]:
        if entry["name"].startswith("record-digests/"):
            entry["digest"]["sha256"] = hashlib.sha256(forged).hexdigest()
    payload = json.dumps(statement, sort_keys=True).encode()
    path.write_text(json.dumps(sign_bundle(payload, "application/vnd.in-toto+json",
                                           chain["keys"] / "builder.key")))
    result = run(["contamination", "model.bin", "--policy", chain["policy"], "--digests-from",
                  "forged.mvrd", "--benchmark", "planted.jsonl"], cwd=work)
    assert_error(result, 2, "forged.mvrd", "was computed from data with sha256",
                 "step 'prepare' attests data/train.jsonl")


def test_a_doctored_digest_file_is_caught_by_the_rebuilds(chain: dict[str, Path],
                                                          tmp_path: Path) -> None:
    """The attack: the builder signs a digest file of the real data minus the benchmark rows
    (its header still names the real data's sha256, so it parses and binds). The rebuilders
    recompute the record digests from the data they reproduce; theirs differ, so prepare has
    no matching rebuild and nothing is checked against the doctored file."""
    import base64

    from helpers import sign_bundle

    work = tmp_path / "work"
    shutil.copytree(chain["work"], work)
    make_keys(tmp_path / "keys", "ra")
    make_keys(tmp_path / "keys", "rb")

    def rebuild(who: str) -> dict[str, str]:
        result = run(["rebuild", "attestations", "--step", "prepare", "--source", ".",
                      "--trust-key", chain["keys"] / "builder.pub", "--key",
                      tmp_path / "keys" / f"{who}.key", "--out", "rebuilds", "--as", who,
                      "--sandbox", "none", "--force", "--json"], cwd=work)
        [outcome] = json.loads(result.stdout)
        return {r["name"]: r["verdict"] for r in outcome["results"]}

    # Honest: the record digests are reproduced like the data.
    assert rebuild("ra") == {"data/train.jsonl": "IDENTICAL",
                             "record-digests/data/train.jsonl": "IDENTICAL"}
    data = work / "data" / "train.jsonl"
    real_sha = recorddigests.file_sha256(data)
    cleaned = tmp_path / "cleaned.jsonl"
    cleaned.write_text("".join(line for line in data.read_text().splitlines(keepends=True)
                               if "capital" not in line and "QUICK BROWN" not in line))
    doctored = recorddigests.compute(cleaned, real_sha).to_bytes()
    (work / "attestations" / "record-digests" / "prepare" / "data" / "train.jsonl.mvrd"
     ).write_bytes(doctored)
    path = work / "attestations" / "prepare.intoto.json"
    statement = json.loads(base64.b64decode(json.loads(path.read_text())["dsseEnvelope"]
                                            ["payload"]))
    for entry in statement["predicate"]["runDetails"]["byproducts"]:
        if entry["name"].startswith("record-digests/"):
            entry["digest"]["sha256"] = hashlib.sha256(doctored).hexdigest()
    payload = json.dumps(statement, sort_keys=True).encode()
    path.write_text(json.dumps(sign_bundle(payload, "application/vnd.in-toto+json",
                                           chain["keys"] / "builder.key")))
    for who in ("ra", "rb"):
        assert rebuild(who) == {"data/train.jsonl": "IDENTICAL",
                                "record-digests/data/train.jsonl": "DIVERGED"}
    policy = json.loads(json.dumps(__import__("yaml").safe_load(
        (work / "policy.yaml").read_text())))
    policy["signers"] = {"builder": {"key": str(chain["keys"] / "builder.pub")},
                         **{n: {"key": str(tmp_path / "keys" / f"{n}.pub")}
                            for n in ("ra", "rb")}}
    policy["rebuild"] = {"quorum": 2, "rebuilders": ["ra", "rb"], "steps": ["prepare"]}
    write_policy(work / "policy.yaml", policy)
    result = run(["contamination", "model.bin", "--policy", "policy.yaml", "--attestations",
                  "attestations", "--attestations", "rebuilds", "--digests-from",
                  "attestations", "--benchmark", "planted.jsonl"], cwd=work)
    assert result.code == 1, result.output
    assert "not checked" in result.stdout
    assert "0 of 2 required independent matching rebuilds" in result.stdout
