"""Fuzzing the parsers of hostile input: bundles and DSSE envelopes, statements (step and
rebuild predicates), the policy loader, safetensors headers and OMS model.sig files. Whatever the
input, the only exception that may escape is the tool's own InputError (one sentence, exit 2):
never a TypeError, AttributeError, KeyError, RecursionError or ValueError, which the CLI could
only report as an internal error.

Inputs are of two kinds: arbitrary JSON (or YAML, or bytes), and a genuine document with one
field somewhere replaced by an arbitrary value, which reaches far deeper than random data does.
"""

from __future__ import annotations

import base64
import copy
import json
import struct
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verifier.diff.tensordiff import _read_header
from verifier.errors import InputError
from verifier.formats.envelope import Bundle, DsseSignature, parse_bundle, read_bundles
from verifier.formats.statement import as_step, parse_statement
from verifier.judgement.policy import load_policy
from verifier.judgement.quorum import as_rebuild
from verifier.judgement.trust import Attribution
from verifier.neighbours.oms import parse_oms

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**20)
           | st.floats(allow_nan=True) | st.text(max_size=12)
           | st.sampled_from(["", "exact", "IDENTICAL", "sha256", "rtol", "\x1b[2J", "\udcff"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)

DIGEST = {"sha256": "a" * 64}
STEP = {
    "_type": "https://in-toto.io/Statement/v1",
    "subject": [{"name": "dist/model.bin", "digest": DIGEST}],
    "predicateType": "https://slsa.dev/provenance/v1",
    "predicate": {
        "buildDefinition": {
            "buildType": "https://model-verifier.dev/buildtypes/step/v1",
            "externalParameters": {"step": "train", "argv": ["python", "train.py"],
                                   "workingDirectory": ".", "env": {"SEED": "1"}},
            "internalParameters": {"environment": {"git": {"commit": "ab", "dirty": False}}},
            "resolvedDependencies": [{"name": "data", "digest": {"dirHash": "b" * 64}}],
        },
        "runDetails": {"builder": {"id": "x"}, "metadata": {"invocationId": "i"},
                       "byproducts": [{"name": "stdout", "digest": DIGEST}]},
    },
}
REBUILD = {
    "_type": "https://in-toto.io/Statement/v1",
    "subject": [{"name": "dist/model.bin", "digest": DIGEST}],
    "predicateType": "https://model-verifier.dev/attestations/rebuild/v1",
    "predicate": {
        "step": "train",
        "rebuiltAttestation": {"name": "train.json", "digest": {"sha256": "c" * 64}},
        "results": [{"name": "dist/model.bin", "verdict": "DIVERGED", "expected": DIGEST,
                     "actual": {"sha256": "d" * 64},
                     "diff": {"kind": "safetensors", "first_difference_offset": 8, "tensors": [
                         {"name": "w", "status": "changed", "max_abs_diff": 0.5,
                          "rel_l2": 0.1}]}}],
        "drift": [{"field": "python", "recorded": "3.11", "current": "3.12"}],
    },
}
POLICY = {
    "version": 1, "name": "fuzzed",
    "signers": {"builder": {"key": "builder.pub"}, "ci": {"key": "ci.pub"}},
    "sources": [{"name": "raw.txt", "sha256": "a" * 64}, {"pattern": "*.py", "unpinned": True}],
    "steps": [{"name": "train", "signed_by": ["builder"]},
              {"name": "package", "signed_by": ["builder"], "after": ["train"]}],
    "rebuild": {"quorum": 1, "rebuilders": ["ci"], "steps": ["train"],
                "match": {"train": {"rtol": 0.1, "atol": 0.0}}},
}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document where a value could be replaced."""
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found.extend(_paths(inner, (*prefix, key)))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found.extend(_paths(inner, (*prefix, index)))
    return found


@st.composite
def mutated(draw: st.DrawFn, document: dict[str, Any]) -> Any:
    """The document with the value at one place replaced (or that key removed)."""
    changed = copy.deepcopy(document)
    path = draw(st.sampled_from(_paths(document)))
    if not path:
        return draw(JSON)
    parent = changed
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and draw(st.booleans()) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON)
    return changed


def _only_input_errors(call: Any, *args: Any) -> None:
    try:
        call(*args)
    except InputError as error:
        assert str(error).strip(), "an InputError must say something"


def _payload(document: Any) -> bytes:
    return json.dumps(document, allow_nan=True).encode("utf-8", "surrogatepass")


def _bundle_of(payload: bytes) -> Bundle:
    return Bundle("fuzzed.json", {}, payload, "application/vnd.in-toto+json",
                  (DsseSignature(b"sig", "k"),), None)


GENUINE_BUNDLE = {
    "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
    "verificationMaterial": {"publicKey": {"hint": "h"}, "tlogEntries": []},
    "dsseEnvelope": {"payload": base64.b64encode(_payload(STEP)).decode(),
                     "payloadType": "application/vnd.in-toto+json",
                     "signatures": [{"sig": "AAAA", "keyid": "h"}]},
}


@FUZZ
@given(JSON | mutated(GENUINE_BUNDLE))
def test_bundle_shapes(data: Any) -> None:
    _only_input_errors(parse_bundle, data, "fuzzed.json")


@FUZZ
@given(st.binary(max_size=300) | mutated(GENUINE_BUNDLE).map(_payload),
       st.sampled_from([".json", ".jsonl"]))
def test_bundle_files(content: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzzed{suffix}"
        path.write_bytes(content)
        _only_input_errors(lambda: list(read_bundles(path, [])))
        _only_input_errors(lambda: list(read_bundles(path)))


def _judge_statement(payload: bytes) -> None:
    statement = parse_statement(payload, "fuzzed.json")
    if statement.predicate_type.endswith("/rebuild/v1"):
        claim = as_rebuild(statement, Attribution(("ci",), ("key:x",)))
        for result in claim.results:  # what quorum and reports then read, unchecked
            assert isinstance(result["name"], str)
    else:
        record = as_step(statement)
        git = record.environment.get("git") or {}
        assert isinstance(git.get("commit", ""), str)
        assert all(isinstance(v, str) for v in record.declared_env.values())


@FUZZ
@given(JSON.map(_payload) | st.binary(max_size=200) | mutated(STEP).map(_payload)
       | mutated(REBUILD).map(_payload))
def test_statements(payload: bytes) -> None:
    _only_input_errors(_judge_statement, payload)


@FUZZ
@given(mutated(REBUILD).map(_payload))
def test_rebuild_claims_survive_the_quorum_check(payload: bytes) -> None:
    """A rebuild claim that parses is safe for the quorum's checks and the dissent report."""
    from verifier.formats.statement import StepRecord
    from verifier.judgement.policy import ProductRule, StepMatch, Tolerance
    from verifier.judgement.quorum import check_claim

    try:
        statement = parse_statement(payload, "fuzzed.json")
        claim = as_rebuild(statement, Attribution(("ci",), ("key:x",)))
        step = as_step(parse_statement(_payload(STEP), "step.json"))
    except InputError:
        return
    assert isinstance(step, StepRecord)
    rules = (None, StepMatch(Tolerance(0.1, 0.1)),
             StepMatch(None, (ProductRule("**", "json", Tolerance(0.1, 0.1)),)),
             StepMatch(None, (ProductRule("*.bin", "informational"),)))
    for match in rules:
        for mismatch in check_claim(step, claim, match):
            assert isinstance(mismatch["name"], str)


def _yaml_text(data: Any) -> str:
    try:
        return yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return json.dumps(data)


@FUZZ
@given(mutated(POLICY).map(_yaml_text) | JSON.map(_yaml_text) | st.text(max_size=200)
       | st.sampled_from(["a: &x [1]\nb: *x\n", "? [1]\n: 2\n", "on: 1\n", "!!set {a}\n",
                          "a: !!binary aGk=\n", "[" * 5000, "a: b: c\n", "- &a [*a]\n"]))
def test_policy_loader(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "policy.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        _only_input_errors(load_policy, path)


TENSOR = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@FUZZ
@given(mutated({"__metadata__": {"a": "b"}, "w": TENSOR}).map(_payload)
       | st.binary(max_size=100).map(lambda b: b"{" + b)
       | st.integers(min_value=0, max_value=6).map(lambda n: b"{" * 10**n),
       st.integers(min_value=0, max_value=64), st.booleans())
def test_safetensors_headers(header: bytes, padding: int, honest_length: bool) -> None:
    length = len(header) if honest_length else len(header) + padding
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed.safetensors"
        path.write_bytes(struct.pack("<Q", length) + header + b"\0" * padding)
        _only_input_errors(_read_header, path)


OMS = {
    "_type": "https://in-toto.io/Statement/v1",
    "subject": [{"name": "model", "digest": {"sha256": "e" * 64}}],
    "predicateType": "https://model_signing/signature/v1.0",
    "predicate": {"serialization": {"method": "files", "hash_type": "sha256",
                                    "allow_symlinks": False, "ignore_paths": [".git"]},
                  "resources": [{"name": "w.bin", "algorithm": "sha256", "digest": "f" * 64}]},
}


@FUZZ
@given(mutated(OMS).map(_payload) | JSON.map(_payload) | st.binary(max_size=100))
def test_oms_signatures(payload: bytes) -> None:
    _only_input_errors(parse_oms, _bundle_of(payload))
