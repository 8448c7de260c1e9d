"""`policy init` writes the policy a recorded chain satisfies (checked against the demo's golden
file), and `policy check` explains every error of a policy with its field and a suggestion."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from helpers import assert_error, assert_no_traceback, make_keys, run, run_executable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tiny-model"
PY = sys.executable
GOLDEN = Path(__file__).parent / "golden" / "tiny-model-policy.yaml"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's chain, recorded as examples/tiny-model/demo.sh records it, and rebuilt by
    two rebuilders."""
    work = tmp_path_factory.mktemp("demo")
    shutil.copytree(EXAMPLE / "data", work / "data")
    for script in EXAMPLE.glob("*.py"):
        shutil.copy2(script, work / script.name)
    for who in ("builder", "rebuilder-a", "rebuilder-b", "outsider"):
        make_keys(work / "keys", who)
    key = ["--key", "keys/builder.key", "--"]
    for args in (
        ["--step", "prepare-data", "--material", "data/iris.csv", "--material", "prepare.py",
         "--product", "build/data", *key, PY, "prepare.py"],
        ["--step", "train", "--material", "build/data/train.csv", "--material", "train.py",
         "--product", "build/weights.safetensors", "--product", "build/train-log.json",
         "--env", "OMP_NUM_THREADS=1", *key, PY, "train.py"],
        ["--step", "package", "--material", "build/weights.safetensors", "--material",
         "build/data/stats.json", "--material", "package.py", "--product", "build/model",
         *key, PY, "package.py"],
    ):
        result = run_executable(["record", *args], cwd=work)
        assert result.code == 0, result.output
    for who in ("rebuilder-a", "rebuilder-b"):
        result = run(["rebuild", "attestations", "--trust-key", "keys/builder.pub", "--source",
                      ".", "--key", f"keys/{who}.key", "--out", "rebuilds"], cwd=work)
        assert result.code == 0, result.output
    return work


REBUILDERS = ["--rebuilder", "rebuilder-a=keys/rebuilder-a.pub",
              "--rebuilder", "rebuilder-b=keys/rebuilder-b.pub"]


def init(demo: Path, out: str, *extra: str):
    result = run(["policy", "init", "attestations", "rebuilds", "--signer",
                  "builder=keys/builder.pub", "--out", out, *extra], cwd=demo)
    assert_no_traceback(result)
    return result


def test_the_demo_chain_gives_the_golden_policy_and_it_verifies_the_chain(demo: Path) -> None:
    result = init(demo, "tiny-model.yaml", *REBUILDERS)
    assert result.code == 0, result.output
    assert "  PASS  build/model" in result.stdout
    written = (demo / "tiny-model.yaml").read_text(encoding="utf-8")
    assert written == GOLDEN.read_text(encoding="utf-8"), (
        "policy init output changed; if on purpose, regenerate tests/golden/"
        "tiny-model-policy.yaml")
    for artifact in ("build/model", "build/model/model.safetensors"):
        verified = run([artifact, "--policy", "tiny-model.yaml", "--attestations",
                        "attestations", "--attestations", "rebuilds", "--json"], cwd=demo,
                       program="verify-model")
        report = json.loads(verified.stdout)
        assert report["verdict"] == "PASS", report["problems"]
        assert {q["step"]: q["matching"] for q in report["rebuilds"]} == {
            "prepare-data": 2, "train": 2, "package": 2}
    assert run(["policy", "check", "tiny-model.yaml"], cwd=demo).code == 0


def test_the_pins_are_the_root_inputs_digests(demo: Path) -> None:
    assert init(demo, "p.yaml").code == 0
    data = yaml.safe_load((demo / "p.yaml").read_text(encoding="utf-8"))
    iris = hashlib.sha256((demo / "data" / "iris.csv").read_bytes()).hexdigest()
    assert data["sources"] == [{"name": "data/iris.csv", "sha256": iris},
                               {"pattern": "*.py", "unpinned": True}]
    assert [(s["name"], s.get("after")) for s in data["steps"]] == [
        ("prepare-data", None), ("train", ["prepare-data"]), ("package", ["train"])]
    assert "rebuild" not in data
    assert data["ignore"] == [".gitattributes", ".cache/huggingface/**", "README.md"]


def test_pin_code_pins_every_script(demo: Path) -> None:
    assert init(demo, "pinned.yaml", "--pin-code").code == 0
    data = yaml.safe_load((demo / "pinned.yaml").read_text(encoding="utf-8"))
    pinned = {s["name"]: s["sha256"] for s in data["sources"]}
    for script in ("prepare.py", "train.py", "package.py"):
        assert pinned[script] == hashlib.sha256((demo / script).read_bytes()).hexdigest()
    assert not any("pattern" in s for s in data["sources"])
    # The pin is real: a chain recorded with another script no longer verifies.
    report = json.loads(run(["build/model", "--policy", "pinned.yaml", "--json"], cwd=demo,
                            program="verify-model").stdout)
    assert report["verdict"] == "PASS"
    changed = dict(data, sources=[dict(s, sha256="0" * 64) if s["name"] == "train.py" else s
                                  for s in data["sources"]])
    (demo / "changed.yaml").write_text(yaml.safe_dump(changed), encoding="utf-8")
    report = json.loads(run(["build/model", "--policy", "changed.yaml", "--json"], cwd=demo,
                            program="verify-model").stdout)
    assert report["verdict"] == "FAIL"
    assert any("train.py" in p["message"] for p in report["problems"])


def test_the_same_chain_gives_the_same_bytes(demo: Path) -> None:
    assert init(demo, "one.yaml", *REBUILDERS).code == 0
    assert init(demo, "two.yaml", *REBUILDERS, "--name", "one").code == 0
    assert (demo / "one.yaml").read_bytes() == (demo / "two.yaml").read_bytes()


def test_an_existing_file_is_kept_without_force(demo: Path) -> None:
    (demo / "mine.yaml").write_text("# my policy\n", encoding="utf-8")
    assert_error(init(demo, "mine.yaml"), 2, "mine.yaml", "already exists", "--force")
    assert (demo / "mine.yaml").read_text(encoding="utf-8") == "# my policy\n"
    assert init(demo, "mine.yaml", "--force").code == 0
    assert "version: 1" in (demo / "mine.yaml").read_text(encoding="utf-8")
    assert not [p for p in demo.iterdir() if p.name.startswith(".mine.yaml")]


def test_a_key_that_signed_nothing_is_refused(demo: Path) -> None:
    result = run(["policy", "init", "attestations", "--signer", "x=keys/outsider.pub",
                  "--out", "x.yaml"], cwd=demo)
    assert_error(result, 2, "no step attestation is signed by x")
    assert not (demo / "x.yaml").exists()
    assert_error(run(["policy", "init", "attestations", "--signer", "builder",
                      "--out", "x.yaml"], cwd=demo), 2, "NAME=KEYFILE")


def test_a_policy_the_chain_does_not_meet_is_written_and_says_why(demo: Path) -> None:
    """A rebuilder who rebuilt nothing: the quorum cannot be met, and init says so (exit 1)."""
    result = init(demo, "short.yaml", "--rebuilder", "rebuilder-a=keys/rebuilder-a.pub",
                  "--rebuilder", "nobody=keys/outsider.pub", "--json")
    assert result.code == 1, result.output
    report = json.loads(result.stdout)
    assert report["verifies"] is False
    [artifact] = report["artifacts"]
    assert artifact["verdict"] == "FAIL" and "missing: nobody" in artifact["problem"]


def test_a_step_nobody_rebuilt_stays_in_rebuild_steps_and_fails(demo: Path) -> None:
    """The attack: hand init rebuilds of every step but train. The written policy must still
    demand train's rebuilds (so it fails and says so), not quietly leave train unchecked."""
    partial = demo / "rebuilds-no-train"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(demo / "rebuilds", partial)
    dropped = [f for f in partial.rglob("*") if f.name.startswith("train.")]
    assert len(dropped) == 2, sorted(f.name for f in partial.rglob("*"))
    for file in dropped:
        file.unlink()
    result = run(["policy", "init", "attestations", "rebuilds-no-train", "--signer",
                  "builder=keys/builder.pub", "--out", "no-train.yaml", *REBUILDERS,
                  "--json"], cwd=demo)
    assert_no_traceback(result)
    assert result.code == 1, result.output
    report = json.loads(result.stdout)
    assert report["rebuild_steps"] == ["prepare-data", "train", "package"]
    assert report["unrebuilt_steps"] == ["train"]
    assert [a["verdict"] for a in report["artifacts"]] == ["FAIL"]
    written = (demo / "no-train.yaml").read_text()
    assert "# No rebuild of train was given" in written
    assert yaml.safe_load(written)["rebuild"]["steps"] == ["prepare-data", "train", "package"]
    # Naming the steps that must be rebuilt is how a user leaves one out, knowingly.
    named = run(["policy", "init", "attestations", "rebuilds-no-train", "--signer",
                 "builder=keys/builder.pub", "--out", "named.yaml", *REBUILDERS,
                 "--rebuild-step", "package", "--rebuild-step", "prepare-data"], cwd=demo)
    assert named.code == 0, named.output
    assert yaml.safe_load((demo / "named.yaml").read_text())["rebuild"]["steps"] == [
        "prepare-data", "package"]
    unknown = run(["policy", "init", "attestations", "--signer", "builder=keys/builder.pub",
                   "--out", "unknown.yaml", *REBUILDERS, "--rebuild-step", "trian"], cwd=demo)
    assert_error(unknown, 2, "--rebuild-step trian")


# ---------------------------------------------------------------- policy check


def check(tmp_path: Path, text: str, *extra: str):
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    result = run(["policy", "check", path, *extra])
    assert_no_traceback(result)
    return result


VALID = """\
version: 1
signers:
  builder: {key: builder.pub}
  rebuilder-a: {key: rebuilder-a.pub}
steps:
  - {name: prepare, signed_by: [builder]}
  - {name: train, signed_by: [builder], after: [prepare]}
rebuild: {quorum: 1, rebuilders: [rebuilder-a], steps: [train], match: {train: exact}}
"""


def test_check_accepts_a_valid_policy(tmp_path: Path) -> None:
    make_keys(tmp_path, "builder")
    make_keys(tmp_path, "rebuilder-a")
    result = check(tmp_path, VALID)
    assert result.code == 0, result.output
    assert result.stdout.splitlines()[0].endswith("policy.yaml: valid")
    # Valid, and said so, but a step no rebuild reproduces is worth a word.
    assert result.stdout.splitlines()[1:] == [
        "  warning: steps.0: step 'prepare' is not in rebuild.steps, so it passes without any "
        "rebuild reproducing it; add it there unless that is meant"]


def test_check_does_not_call_a_replayed_step_unrebuilt(tmp_path: Path) -> None:
    """A step the policy replays by segments (rebuild.replay, no rebuild.steps: the way
    docs/replay.md and the checkpointed example write it) is reproduced, so no warning."""
    make_keys(tmp_path, "builder")
    make_keys(tmp_path, "rebuilder-a")
    replayed = VALID.replace("steps: [train], match: {train: exact}",
                             "replay: {train: {segments: 3}}")
    result = check(tmp_path, replayed)
    assert result.code == 0, result.output
    assert result.stdout.splitlines()[1:] == [
        "  warning: steps.0: step 'prepare' is not in rebuild.steps, so it passes without any "
        "rebuild reproducing it; add it there unless that is meant"]


def test_check_lists_every_error_with_its_field_and_a_suggestion(tmp_path: Path) -> None:
    make_keys(tmp_path, "builder")
    make_keys(tmp_path, "rebuilder-a")
    broken = (VALID.replace("  - {name: prepare, signed_by: [builder]}",
                            "  - {name: prepare, signed_by: [buidler], afterr: []}")
              .replace("after: [prepare]", "after: [prepar]")
              .replace("match: {train: exact}", "match: {trian: exact}")
              .replace("rebuilders: [rebuilder-a]", "rebuilders: [rebuilder-b]"))
    result = check(tmp_path, broken + "sources:\n  - {name: a.csv, sha265: abc}\n", "--json")
    assert result.code == 2, result.output
    errors = json.loads(result.stdout)["errors"]
    assert any(e.startswith("steps.0.afterr: unknown field 'afterr' (did you mean 'after'?)")
               for e in errors), errors
    assert any(e.startswith("sources.0.sha265: unknown field 'sha265' (did you mean 'sha256'?)")
               for e in errors), errors
    # The names are checked once the shape is right.
    fixed = broken.replace(", afterr: []", "")
    errors = json.loads(check(tmp_path, fixed, "--json").stdout)["errors"]
    assert errors == [
        "steps.0.signed_by.0: unknown signer 'buidler' (did you mean 'builder'?)",
        "steps.1.after.0: unknown step 'prepar' (did you mean 'prepare'?)",
        "rebuild.rebuilders.0: unknown signer 'rebuilder-b' (did you mean 'rebuilder-a'?)",
        "rebuild.match.trian: names no step of rebuild.steps (did you mean 'train'?)",
    ]


def test_check_explains_a_top_level_typo_and_a_bad_key_file(tmp_path: Path) -> None:
    result = check(tmp_path, VALID.replace("signers:", "sigers:"))
    assert result.code == 2
    assert "unknown field 'sigers' (did you mean 'signers'?)" in result.stdout
    result = check(tmp_path, VALID)  # builder.pub does not exist here
    assert result.code == 2
    assert "builder.pub" in result.stdout


def test_check_of_a_missing_file_is_unusable_input(tmp_path: Path) -> None:
    assert_error(run(["policy", "check", tmp_path / "none.yaml"]), 2, "none.yaml")


def test_loading_a_policy_suggests_the_field_too(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(VALID.replace("signers:", "sigers:"), encoding="utf-8")
    assert_error(run(["verify", "x", "--policy", path]), 2, "did you mean 'signers'?")


@pytest.mark.parametrize(("match", "expected"), [
    ("{train: {products: {'*.json': {jsn: {rtol: 1, atol: 0}}}}}",
     "rebuild.match.train.products.*.json.jsn: unknown field 'jsn' (did you mean 'json'?)"),
    ("{train: {product: {'*.json': informational}}}",
     "rebuild.match.train.product: unknown field 'product' (did you mean 'products'?)"),
    ("exactly", "rebuild.match: 'exactly' fits none of the forms this field takes (did you "
     "mean 'exact'?)"),
])
def test_check_finds_a_typo_inside_a_rule_with_several_forms(tmp_path: Path, match: str,
                                                              expected: str) -> None:
    make_keys(tmp_path, "builder")
    make_keys(tmp_path, "rebuilder-a")
    result = check(tmp_path, VALID.replace("match: {train: exact}", f"match: {match}"),
                   "--json")
    assert result.code == 2
    [error] = json.loads(result.stdout)["errors"]
    assert error.startswith(expected), error


def test_check_reports_policies_that_never_pass_or_pass_too_easily_all_at_once(
        tmp_path: Path) -> None:
    """Each of these loads and used to be called 'valid': a quorum no rebuilders can meet, a
    date gone by, the builder's own key under a rebuilder's name (one identity, counted once),
    a rebuild of a step the policy never names; and a missing key file used to wait until the
    schema error beside it was fixed. One run names every one by its field, exit 2."""
    make_keys(tmp_path, "builder")
    make_keys(tmp_path, "rebuilder-a")
    (tmp_path / "copy.pub").write_bytes((tmp_path / "builder.pub").read_bytes())
    broken = (VALID.replace("version: 1", "version: 1\nexpires: 2020-01-01")
              .replace("  rebuilder-a: {key: rebuilder-a.pub}",
                       "  rebuilder-a: {key: rebuilder-a.pub}\n  rebuilder-b: {key: copy.pub}\n"
                       "  rebuilder-c: {key: gone.pub}")
              .replace("quorum: 1, rebuilders: [rebuilder-a], steps: [train]",
                       "quorum: 4, rebuilders: [rebuilder-a, rebuilder-b, rebuilder-c], "
                       "steps: [train, tokenize]")
              .replace("{name: prepare, signed_by: [builder]}",
                       "{name: prepare, signed_by: [builder], afterr: []}"))
    result = check(tmp_path, broken, "--json")
    assert result.code == 2, result.output
    errors = json.loads(result.stdout)["errors"]
    expected = {
        "steps.0.afterr": "unknown field 'afterr'",
        "rebuild.steps.1": "unknown step 'tokenize'",
        "signers.rebuilder-b": "the same public key as signer 'builder'",
        "signers.rebuilder-c.key": "gone.pub",
        "expires": "2020-01-01 is in the past",
        "rebuild.quorum": "4 independent matching rebuilds are required but rebuild.rebuilders "
                          "names 3",
    }
    for field, words in expected.items():
        assert any(e.startswith(f"{field}: ") and words in e for e in errors), (field, errors)
    assert len(errors) == len(expected), errors
    text = check(tmp_path, broken)
    assert text.code == 2 and f"{len(expected)} error(s)" in text.stdout
    # Without the schema error, and so past loading, the rest are still each reported.
    fixed = check(tmp_path, broken.replace(", afterr: []", ""), "--json")
    assert fixed.code == 2 and len(json.loads(fixed.stdout)["errors"]) == len(expected) - 1


def test_check_counts_only_independent_rebuilders_toward_the_quorum(tmp_path: Path) -> None:
    """The builder listed among two rebuilders: for the step it signs, one rebuilder is left
    for a quorum of two, which that step can never meet."""
    make_keys(tmp_path, "builder")
    make_keys(tmp_path, "rebuilder-a")
    result = check(tmp_path, VALID.replace(
        "quorum: 1, rebuilders: [rebuilder-a]", "quorum: 2, rebuilders: [rebuilder-a, builder]"),
        "--json")
    assert result.code == 2, result.output
    assert json.loads(result.stdout)["errors"] == [
        "rebuild.steps.0: step 'train' is signed by builder, who never counts as its "
        "independent rebuilder, leaving 1 for a quorum of 2; it can never pass"]


# A richer valid policy whose every field the property below replaces with a value of a wrong
# type, one field at a time.
RICH = {
    "version": 1, "name": "rich", "expires": "2099-01-01",
    "signers": {"builder": {"key": "builder.pub"}, "rebuilder-a": {"key": "builder.pub"},
                "rebuilder-b": {"key": "builder.pub"}},
    "sources": [{"name": "raw.csv", "sha256": "0" * 64}, {"pattern": "*.py", "unpinned": True}],
    "steps": [{"name": "prepare", "signed_by": ["builder"]},
              {"name": "train", "signed_by": ["builder"], "after": ["prepare"],
               "hermetic": True}],
    "ignore": ["README.md"],
    "rebuild": {"quorum": 1, "rebuilders": ["rebuilder-a", "rebuilder-b"], "steps": ["train"],
                "max_dissent": 1,
                "match": {"train": {"products": {"*.json": {"json": {"rtol": 0.1, "atol": 0}},
                                                 "log.txt": "informational"}}}},
}
WRONG = st.one_of(st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(),
                  st.text(max_size=5), st.lists(st.integers(), max_size=3),
                  st.lists(st.text(max_size=3), max_size=3),
                  st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                  st.lists(st.dictionaries(st.text(max_size=3), st.text(max_size=3),
                                           max_size=2), max_size=2))


def _paths(value: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    found = [path] if path else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*path, index))
    return found


RICH_PATHS = _paths(RICH)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wrong-types")
    make_keys(folder, "builder")
    return folder


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(RICH_PATHS), value=WRONG)
def test_check_and_load_give_sentences_for_every_wrong_type(keyed: Path, where: tuple,
                                                            value: object) -> None:
    """Any field of a valid policy replaced by a value of any other type: `policy check` lists
    errors (strings) and loading says one sentence; neither fails inside."""
    import copy

    from verifier.errors import InputError
    from verifier.judgement.policy import load_policy
    from verifier.judgement.policy_check import check_policy, policy_warnings

    data = copy.deepcopy(RICH)
    target = data
    for step in where[:-1]:
        target = target[step]
    target[where[-1]] = value
    path = keyed / "policy.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    errors = check_policy(path)
    assert all(isinstance(e, str) and e for e in errors)
    assert all(isinstance(w, str) and w for w in policy_warnings(path))
    try:
        load_policy(path)
    except InputError:
        assert errors, "check calls valid a policy that does not load"
