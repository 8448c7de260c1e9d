"""Per-product rules in rebuild.match: exact, a tensor tolerance, a JSON numeric tolerance judged
from the rebuilder's signed JSON diff, and informational products that never count either way.

One step (train) writes weights.safetensors, metrics.json (numbers and a tag) and train.log,
scaled by NOISE; rebuilders rerun it with the real `rebuild`, some under another NOISE or TAG
(re-signed as plain reruns, as a machine that differs would produce them).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    INTOTO,
    assert_error,
    assert_no_traceback,
    make_keys,
    payload_of,
    read_json,
    record_step,
    run,
    write_policy,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.diff.jsondiff import compare_json
from verifier.diff.tensordiff import diff_files
from verifier.errors import InputError
from verifier.formats.signing import KeySigner
from verifier.formats.statement import canonical_json
from verifier.judgement.policy import ProductRule, StepMatch, Tolerance

TRAIN = (
    "import json, os, numpy as np; from safetensors.numpy import save_file; "
    "n = float(os.environ['NOISE']); "
    "save_file({'w': np.arange(8, dtype=np.float32) * np.float32(1 + n)}, 'weights.safetensors'); "
    "json.dump({'loss': [0.5 * (1 + n), 0.25 * (1 + n)], 'epochs': 3, "
    "'tag': os.environ['TAG']}, open('metrics.json', 'w')); "
    "open('train.log', 'w').write(f'loss {0.5 * (1 + n)}\\n')"
)
REBUILDS = {"ra": ("ra", []), "rc-near": ("rc", ["--env", "NOISE=0.000001"]),
            "rc-far": ("rc", ["--env", "NOISE=0.1"]), "rc-tag": ("rc", ["--env", "TAG=b"])}
TENSORS = {"rtol": 1e-5, "atol": 1e-8}
RULES = {"products": {"*.safetensors": TENSORS, "metrics.json": {"json": TENSORS},
                      "train.log": "informational"}}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("match")
    for name in ("builder", "ra", "rc"):
        make_keys(root / "keys", name)
    work = root / "work"
    work.mkdir()
    (work / "raw.csv").write_text("a,b\n", encoding="utf-8")
    result = record_step(work, "train", root / "keys" / "builder.key", ["raw.csv"],
                         ["weights.safetensors", "metrics.json", "train.log"], TRAIN,
                         extra=["--env", "NOISE=0", "--env", "TAG=a"])
    assert result.code == 0, result.output
    for name, (key, options) in REBUILDS.items():
        out = root / "rebuilds" / name
        result = run(["rebuild", work / "attestations", "--source", work,
                      "--trust-key", root / "keys" / "builder.pub",
                      "--key", root / "keys" / f"{key}.key", "--out", root / "rebuilds",
                      "--as", name, *options], cwd=work)
        assert_no_traceback(result)
        assert result.code == (1 if name != "ra" else 0), (name, result.output)
        if options:  # as a plain rerun on a machine that differs: no envOverrides
            path = out / "train.rebuild.intoto.json"
            statement = payload_of(read_json(path))
            statement["predicate"]["envOverrides"] = {}
            sign(root, key, statement, path)
    return root


def sign(root: Path, key: str, statement: dict[str, Any], path: Path) -> None:
    bundle = KeySigner(root / "keys" / f"{key}.key").sign_dsse(canonical_json(statement), INTOTO)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bundle), encoding="utf-8")


def policy(root: Path, tmp_path: Path, match: Any) -> Path:
    data = {
        "version": 1,
        "signers": {n: {"key": str(root / "keys" / f"{n}.pub")} for n in ("builder", "ra", "rc")},
        "sources": [{"name": "raw.csv", "sha256": hashlib.sha256(b"a,b\n").hexdigest()}],
        "steps": [{"name": "train", "signed_by": ["builder"]}],
        "rebuild": {"quorum": 2, "rebuilders": ["ra", "rc"], "steps": ["train"],
                    "match": match},
    }
    path = tmp_path / "policy.yaml"
    write_policy(path, data)
    return path


def verify(root: Path, policy_path: Path, *rebuilds: str, as_json: bool = True):
    args: list[Any] = [root / "work" / "weights.safetensors", "--policy", policy_path,
                       "--attestations", root / "work" / "attestations"]
    for name in rebuilds:
        args += ["--attestations", root / "rebuilds" / name]
    result = run([*args, "--json"] if as_json else args, program="verify-model")
    assert_no_traceback(result)
    return result


def train_quorum(result) -> dict[str, Any]:
    return json.loads(result.stdout)["rebuilds"][0]


def test_the_rebuilder_signs_a_structural_json_diff(chain: Path) -> None:
    statement = payload_of(read_json(chain / "rebuilds" / "rc-near" /
                                     "train.rebuild.intoto.json"))
    metrics = next(r for r in statement["predicate"]["results"] if r["name"] == "metrics.json")
    assert metrics["diff"]["kind"] == "json"
    summary = metrics["diff"]["json"]
    assert summary["structure_equal"] is True and summary["other_differences"] == 0
    assert summary["numbers"] == 3 and summary["numbers_differing"] == 2
    assert summary["first_number_difference"] == "/loss/0"
    assert 5e-7 < summary["max_rel_diff"] < 2e-6
    # The documented format: the statement validates against the published schema.
    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[1] / "attestations" /
                         "rebuild-statement.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(statement)
    metrics["diff"]["json"]["surprise"] = 1
    assert not jsonschema.Draft202012Validator(schema).is_valid(statement)


def test_per_product_rules_accept_tensors_and_json_within_tolerance(chain: Path,
                                                                    tmp_path: Path) -> None:
    result = verify(chain, policy(chain, tmp_path, {"train": RULES}), "ra", "rc-near")
    assert result.code == 0, result.output
    quorum = train_quorum(result)
    assert quorum["matched"] == ["ra", "rc"]
    # train.log differs too: reported as informational, never as dissent.
    [informational] = quorum["informational"]
    assert informational["rebuilder"] == "rc"
    assert [f["name"] for f in informational["files"]] == ["train.log"]
    text = verify(chain, policy(chain, tmp_path, {"train": RULES}), "ra", "rc-near",
                  as_json=False)
    assert "informational from rc: train.log DIVERGED (not judged)" in text.stdout


def test_without_a_json_rule_the_metrics_stay_exact(chain: Path, tmp_path: Path) -> None:
    for match in ({"train": TENSORS}, TENSORS,
                  {"train": {"products": {"*.safetensors": TENSORS,
                                          "train.log": "informational"}}}):
        result = verify(chain, policy(chain, tmp_path, match), "ra", "rc-near")
        assert result.code == 1, match
        [dissent] = train_quorum(result)["dissent"]
        assert "metrics.json" in [f["name"] for f in dissent["files"]], match


def test_json_beyond_the_tolerance_or_a_changed_string_is_dissent(chain: Path,
                                                                   tmp_path: Path) -> None:
    loose = {"train": {"products": {**RULES["products"], "*.safetensors": {"rtol": 1, "atol": 1},
                                    "metrics.json": {"json": {"rtol": 1e-3, "atol": 0}}}}}
    result = verify(chain, policy(chain, tmp_path, loose), "ra", "rc-far")
    assert result.code == 1
    # rc sent a rebuild (dissent): `missing` names only rebuilders who sent nothing.
    assert train_quorum(result)["missing"] == []
    message = json.loads(result.stdout)["problems"][0]["message"]
    assert "rc dissented (metrics.json DIVERGED" in message and "missing:" not in message
    [dissent] = train_quorum(result)["dissent"]
    [metrics] = [f for f in dissent["files"] if f["name"] == "metrics.json"]
    assert metrics["json"]["first_number_difference"] == "/loss/0"
    huge = {"train": {"products": {**RULES["products"],
                                   "metrics.json": {"json": {"rtol": 1e9, "atol": 1e9}}}}}
    result = verify(chain, policy(chain, tmp_path, huge), "ra", "rc-tag")
    [dissent] = train_quorum(result)["dissent"]
    [metrics] = dissent["files"]
    assert metrics["name"] == "metrics.json"
    assert metrics["json"]["first_other_difference"] == "/tag"


def test_informational_never_makes_a_match(chain: Path, tmp_path: Path) -> None:
    """The attack: call every product informational, and any rebuild, however far off, reads
    as a match. A rebuild with nothing judged counts for nothing, and `"**"` is refused."""
    everything = {"train": {"products": {"*": "informational"}}}
    result = verify(chain, policy(chain, tmp_path, everything), "ra", "rc-far")
    assert result.code == 1, result.output
    quorum = train_quorum(result)
    assert quorum["matching"] == 0 and quorum["dissent"] == []
    assert len(quorum["ignored"]) == 2
    assert all("every product of step 'train' is informational" in n
               for n in quorum["ignored"])
    every = {"train": {"products": {"**": "informational"}}}
    assert_error(verify(chain, policy(chain, tmp_path, every), "ra", as_json=False), 2,
                 "rebuild.match.train.products.**", "informational for every product")
    checked = run(["policy", "check", policy(chain, tmp_path, every)])
    assert checked.code == 2 and "informational for every product" in checked.stdout


def test_a_forged_json_claim_for_another_digest_is_dissent(chain: Path, tmp_path: Path) -> None:
    """rc signs a JSON diff saying 'within tolerance' but names a digest its subjects do not
    carry: a tolerance is only ever granted to what the rebuilder attests it produced."""
    path = chain / "rebuilds" / "rc-near" / "train.rebuild.intoto.json"
    statement = payload_of(read_json(path))
    metrics = next(r for r in statement["predicate"]["results"] if r["name"] == "metrics.json")
    metrics["actual"] = {"sha256": "0" * 64}
    forged = tmp_path / "forged" / "train.rebuild.intoto.json"
    sign(chain, "rc", statement, forged)
    result = run([chain / "work" / "weights.safetensors", "--policy",
                  policy(chain, tmp_path, {"train": RULES}), "--attestations",
                  chain / "work" / "attestations", "--attestations", chain / "rebuilds" / "ra",
                  "--attestations", forged.parent, "--json"], program="verify-model")
    assert result.code == 1
    assert [f["name"] for f in train_quorum(result)["dissent"][0]["files"]] == ["metrics.json"]


def test_ambiguous_rules_are_errors(chain: Path, tmp_path: Path) -> None:
    literal = {"train": {"products": {"metrics.json": "informational", "*.json": "exact"}}}
    assert_error(verify(chain, policy(chain, tmp_path, literal), "ra", as_json=False), 2,
                 "rebuild.match.train.products", "metrics.json", "different rules")
    overlapping = {"train": {"products": {"m*.json": "informational", "*.json": "exact"}}}
    assert_error(verify(chain, policy(chain, tmp_path, overlapping), "ra", as_json=False), 2,
                 "product metrics.json matches the patterns", "'m*.json' and '*.json'")
    unknown = {"trian": RULES}
    assert_error(verify(chain, policy(chain, tmp_path, unknown), "ra", as_json=False), 2,
                 "rebuild.match.trian", "did you mean 'train'?")


# ---------------------------------------------------------------- the rules, by property

RULE_KINDS = st.sampled_from([ProductRule("", "exact"), ProductRule("", "informational"),
                              ProductRule("", "json", Tolerance(1e-3, 0)),
                              ProductRule("", "tensors", Tolerance(1e-5, 1e-8))])
GLOBS = st.sampled_from(["*.json", "metrics.json", "*.safetensors", "logs/**", "**", "m*"])
NAMES = st.sampled_from(["metrics.json", "model.safetensors", "logs/a.txt", "m.bin", "x"])


@given(st.lists(st.tuples(GLOBS, RULE_KINDS), max_size=4, unique_by=lambda p: p[0]), NAMES,
       st.sampled_from([None, Tolerance(1e-2, 0)]))
def test_a_product_gets_the_one_rule_its_patterns_agree_on(
        rules: list[tuple[str, ProductRule]], name: str, default: Tolerance | None) -> None:
    from fnmatch import fnmatchcase

    match = StepMatch(default, tuple(ProductRule(g, r.kind, r.tolerance) for g, r in rules))

    def matches(glob: str) -> bool:  # the globs above, by hand: ** spans folders, * does not
        return fnmatchcase(name, glob) and (glob in ("**", "logs/**") or "/" not in name)

    found = {(r.kind, r.tolerance) for g, r in rules if matches(g)}
    if len(found) > 1:
        with pytest.raises(InputError, match="different rules"):
            match.rule_for(name)
        return
    chosen = match.rule_for(name)
    if found:
        assert {(chosen.kind, chosen.tolerance)} == found
    else:
        assert (chosen.kind, chosen.tolerance) == (
            ("exact", None) if default is None else ("tensors", default))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6)
    | st.floats(-1e6, 1e6, allow_nan=False) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=12)


@given(st.dictionaries(st.text(max_size=3), JSON, max_size=4))
def test_a_document_equals_itself_and_a_reordered_copy(doc: dict[str, Any]) -> None:
    reordered = json.loads(json.dumps(dict(reversed(list(doc.items())))))
    assert compare_json(doc, reordered).equal


@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=6),
       st.data())
def test_one_changed_number_is_found_and_measured(numbers: list[float], data: Any) -> None:
    index = data.draw(st.integers(0, len(numbers) - 1))
    delta = data.draw(st.floats(1e-3, 10))
    changed = list(numbers)
    changed[index] = numbers[index] + delta
    if changed[index] == numbers[index]:
        return
    result = compare_json({"v": changed}, {"v": numbers}, rtol=0, atol=delta * 1.01)
    assert result.structure_equal and result.numbers_differing == 1
    assert result.first_number_difference == f"/v/{index}"
    assert result.max_abs_diff == pytest.approx(abs(changed[index] - numbers[index]))
    assert result.passes_tolerance is True
    assert compare_json({"v": changed}, {"v": numbers}, rtol=0,
                        atol=result.max_abs_diff / 2).passes_tolerance is False


def test_json_files_are_diffed_structurally_and_anything_else_by_bytes(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"b": [1, 2.5], "a": "x"}')
    (tmp_path / "b.json").write_text('{"a": "x", "b": [1, 2.0]}')
    diff = diff_files(tmp_path / "a.json", tmp_path / "b.json", rtol=0.3, atol=0)
    assert (diff.kind, diff.verdict.value) == ("json", "WITHIN-TOLERANCE")
    assert diff.json is not None and diff.json.first_number_difference == "/b/1"
    (tmp_path / "c.json").write_text('{"a": "x", "b": [1, 2.5]}')
    assert diff_files(tmp_path / "a.json", tmp_path / "c.json").verdict.value == (
        "CANONICALLY-IDENTICAL")
    for text in ('{"a": NaN}', '{"a": 1, "a": 2}', "42", "not json"):
        (tmp_path / "d.json").write_text(text)
        assert diff_files(tmp_path / "d.json", tmp_path / "b.json").kind == "bytes", text


def test_deep_or_hostile_json_never_crashes_the_diff(tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000  # beyond the parser: compared as bytes
    nested = "[" * 900 + "1" + "]" * 900  # within it: compared iteratively
    (tmp_path / "a").write_text(deep)
    (tmp_path / "b").write_text(deep.replace("[]", "[0]", 1))
    assert diff_files(tmp_path / "a", tmp_path / "b").kind == "bytes"
    (tmp_path / "a").write_text(nested)
    (tmp_path / "b").write_text(nested.replace("1", "2"))
    diff = diff_files(tmp_path / "a", tmp_path / "b")
    assert diff.kind == "json" and diff.json is not None
    assert diff.json.first_number_difference == "/0" * 900
    assert diff.json.max_abs_diff == 1.0
    huge = '{"a": 1e400, "b": 10000000000000000000000000000000000000000000000000000000000000}'
    (tmp_path / "a").write_text(huge)
    (tmp_path / "b").write_text(huge.replace("1e400", "1").replace('"b": 1', '"b": 2'))
    result = diff_files(tmp_path / "a", tmp_path / "b")
    assert result.kind in ("json", "bytes")  # whatever it is, a sentence, never a crash


# ------------------------------------------------ an informational product used later

# train's log.json holds whatever the builder's run put there (here: random bytes, as a poisoned
# log would be); package copies it into the model.
POISONING = ("import os, pathlib; pathlib.Path('weights.bin').write_bytes(b'w' * 64); "
             "pathlib.Path('log.json').write_text('{\"note\": \"%s\"}' % os.urandom(8).hex())")
PACKAGE = ("import pathlib, shutil; pathlib.Path('dist').mkdir(exist_ok=True); "
           "shutil.copy('log.json', 'dist/config.json'); "
           "shutil.copy('weights.bin', 'dist/weights.bin')")


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("poisoned")
    for name in ("builder", "ra", "rc"):
        make_keys(root / "keys", name)
    work = root / "work"
    work.mkdir()
    (work / "raw.csv").write_text("a,b\n", encoding="utf-8")
    for step, materials, products, code in (
            ("train", ["raw.csv"], ["weights.bin", "log.json"], POISONING),
            ("package", ["log.json", "weights.bin"], ["dist/config.json", "dist/weights.bin"],
             PACKAGE)):
        result = record_step(work, step, root / "keys" / "builder.key", materials, products,
                             code)
        assert result.code == 0, result.output
    for key in ("ra", "rc"):
        result = run(["rebuild", work / "attestations", "--source", work,
                      "--trust-key", root / "keys" / "builder.pub",
                      "--key", root / "keys" / f"{key}.key", "--out", root / "rebuilds" / key],
                     cwd=work)
        assert_no_traceback(result)
    return root


def test_an_informational_product_a_later_step_consumes_is_judged_exactly(
        poisoned: Path, tmp_path: Path) -> None:
    """The attack: the builder's log.json (no rebuild reproduces it) is informational in
    train, and package copies it into dist/config.json. It is judged exactly, so train has
    dissent and the model fails; a log nobody consumes stays informational."""
    data = {
        "version": 1,
        "signers": {n: {"key": str(poisoned / "keys" / f"{n}.pub")}
                    for n in ("builder", "ra", "rc")},
        "sources": [{"name": "raw.csv", "sha256": hashlib.sha256(b"a,b\n").hexdigest()}],
        "steps": [{"name": "train", "signed_by": ["builder"]},
                  {"name": "package", "signed_by": ["builder"], "after": ["train"]}],
        "rebuild": {"quorum": 2, "rebuilders": ["ra", "rc"], "steps": ["train", "package"],
                    "match": {"train": {"products": {"log.json": "informational"}}}},
    }
    path = write_policy(tmp_path / "policy.yaml", data)
    args: list[Any] = [poisoned / "work" / "dist" / "config.json", "--policy", path,
                       "--attestations", poisoned / "work" / "attestations",
                       "--attestations", poisoned / "rebuilds", "--json"]
    result = run(args, program="verify-model")
    assert_no_traceback(result)
    assert result.code == 1, result.output
    train = next(q for q in json.loads(result.stdout)["rebuilds"] if q["step"] == "train")
    assert train["matching"] == 0
    assert {f["name"] for d in train["dissent"] for f in d["files"]} == {"log.json"}
    # Without package's attestation nobody consumes the log: it is informational again.
    (tmp_path / "train-only").mkdir()
    shutil.copy(poisoned / "work" / "attestations" / "train.intoto.json", tmp_path / "train-only")
    write_policy(path, dict(data, steps=data["steps"][:1],
                            rebuild=dict(data["rebuild"], steps=["train"])))
    result = run([poisoned / "work" / "weights.bin", "--policy", path, "--attestations",
                  tmp_path / "train-only", "--attestations", poisoned / "rebuilds"],
                 program="verify-model")
    assert result.code == 0, result.output
    assert "informational from" in result.stdout


STEP_NAMES = st.sampled_from(["d", "d/a", "d/a/x", "d/b", "d0", "e", "e/d", "d.txt"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(STEP_NAMES, max_size=4), st.lists(STEP_NAMES, max_size=4),
                          st.booleans()), min_size=1, max_size=4))
def test_consumed_products_are_the_ones_another_step_uses(
        steps: list[tuple[list[str], list[str], bool]]) -> None:
    """evaluation._Uses (indexed) against a brute-force reading of its rule: a product is
    consumed when another step has a material of its name, inside it (a directory product) or
    holding it; digests here are all distinct, so names alone decide."""
    from types import SimpleNamespace

    from verifier.judgement.evaluation import _Uses

    nodes = []
    for index, (materials, products, directory) in enumerate(steps):
        def descriptor(name: str, side: str, n: int = index, d: bool = directory
                       ) -> dict[str, Any]:
            kind = "dirHash" if d and side == "p" else "sha256"
            return {"name": name, "digest": {kind: f"{side}{n}-{name}"}}
        record = SimpleNamespace(materials=[descriptor(m, "m") for m in materials],
                                 products=[descriptor(p, "p") for p in products])
        nodes.append(SimpleNamespace(payload_sha256=f"step{index}", record=record))
    uses = _Uses(nodes)
    for node in nodes:
        expected = set()
        for product in node.record.products:
            name, directory = product["name"], "dirHash" in product["digest"]
            for other in nodes:
                if other is node:
                    continue
                for material in other.record.materials:
                    used = material["name"]
                    if (used == name or name.startswith(f"{used}/")
                            or (directory and used.startswith(f"{name}/"))):
                        expected.add(name)
        assert uses.consumed(node) == expected
