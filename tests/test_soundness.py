"""Every PASS earned: the attacks of issue #10, each built as an attacker would build it.

Statements are made and signed here (tests/graphs.py: PAE + `cryptography`), never by the
product, and every verdict is read through the real entry points: `verify-model` (JSON and
text), `audit` and `verify-bundle`/`verify-vsa`. Each test fails on the judgement as it was
before the shared evaluation: a co-signer counted as a rebuilder, only the first attestation of a
step held to the quorum, a pin relaxed by a pattern, a pinned file hidden in a directory, a
name leaving the workspace, a FAILED summary reading OK, a probe counted as dissent.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from graphs import World, canonical, sha
from helpers import assert_error, assert_no_traceback, run

from verifier.judgement.policy import load_policy
from verifier.reports.audit import audit

RAW, DATA, WEIGHTS, LOG, MODEL = "raw rows\n", "clean rows\n", "w", "log", "the model\n"
SIGNERS = ["builder", "ra", "rb", "auditor", "stranger"]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World.create(tmp_path, SIGNERS)


def chain(world: World) -> dict[str, Any]:
    """prepare -> train -> package, signed by builder; the model file exists on disk."""
    model = world.file("dist/model.bin", MODEL)
    steps = {
        "prepare": world.step("prepare", {"raw.csv": sha(RAW), "prepare.py": sha("p")},
                              {"data.csv": sha(DATA)}),
        "train": world.step("train", {"data.csv": sha(DATA), "train.py": sha("t")},
                            {"weights.bin": sha(WEIGHTS)}),
        "package": world.step("package", {"weights.bin": sha(WEIGHTS)},
                              {"dist/model.bin": model}),
    }
    for name, step in steps.items():
        world.write(step.signed("builder"), f"{name}.intoto.json")
    return steps


def policy(world: World, *, rebuild: dict[str, Any] | None = None,
           sources: list[dict[str, Any]] | None = None, **extra: Any) -> None:
    body: dict[str, Any] = {
        "sources": sources if sources is not None else [
            {"name": "raw.csv", "sha256": sha(RAW)}, {"pattern": "*.py", "unpinned": True}],
        "steps": [{"name": "prepare", "signed_by": ["builder"]},
                  {"name": "train", "signed_by": ["builder"], "after": ["prepare"]},
                  {"name": "package", "signed_by": ["builder"], "after": ["train"]}],
        **extra,
    }
    if rebuild is not None:
        body["rebuild"] = rebuild
    world.policy(body)


def messages(report: dict[str, Any]) -> list[str]:
    return [p["message"] for p in report["problems"]]


def audit_verdict(world: World, name: str = "dist/model.bin") -> str | None:
    report = audit([world.root / "attestations"], load_policy(world.root / "model-policy.yaml"))
    verdicts = {n: a["verdict"] for a in report.to_dict()["artifacts"] for n in a["names"]}
    return verdicts.get(name)


def test_the_honest_chain_passes_in_verify_and_audit(world: World) -> None:
    chain(world)
    policy(world)
    code, report, _ = world.verify("dist/model.bin")
    assert code == 0, report
    assert audit_verdict(world) == "PASS"


# -- 1. quorum counted by the wrong identity ---------------------------------------------------


def rebuild_policy(world: World, quorum: int = 2, rebuilders: tuple[str, ...] = ("ra", "rb"),
                   **rule: Any) -> None:
    policy(world, rebuild={"quorum": quorum, "rebuilders": list(rebuilders),
                           "steps": ["train"], **rule})


def test_a_rebuild_co_signed_by_a_non_rebuilder_counts_once(world: World) -> None:
    steps = chain(world)
    # ra rebuilt train; the auditor (a policy signer, no rebuilder) co-signs ra's bundle, and
    # ra sends a second, separate copy of the same claim signed alone.
    world.write(world.rebuild(steps["train"], "ra", "auditor"))
    world.write(world.rebuild(steps["train"], "ra"))
    rebuild_policy(world)
    code, report, text = world.verify("dist/model.bin")
    assert code == 1
    [train] = report["rebuilds"]
    assert train["matching"] == len(train["counted"]) == 1
    assert train["matched"] == ["ra"]
    assert "rebuilds of train: 1/2 matching (ra)" in text
    assert any("1 of 2 required independent matching rebuilds" in m for m in messages(report))
    assert audit_verdict(world) == "FAIL"


def test_one_bundle_co_signed_by_two_rebuilders_is_one_rebuild(world: World) -> None:
    steps = chain(world)
    world.write(world.rebuild(steps["train"], "ra", "rb"))
    rebuild_policy(world)
    code, report, text = world.verify("dist/model.bin")
    assert code == 1, text
    assert report["rebuilds"][0]["matching"] == 1
    assert "1/2 matching" in text


def test_two_rebuilds_co_signed_by_two_rebuilders_meet_the_quorum(world: World) -> None:
    steps = chain(world)
    # Two separate rebuilds: one co-signed by ra and rb, one by ra alone. Each bundle counts
    # for one rebuilder and each rebuilder once; the best assignment (rb, ra) makes two.
    world.write(world.rebuild(steps["train"], "ra", "rb", run_id="first"))
    world.write(world.rebuild(steps["train"], "ra", run_id="second"))
    rebuild_policy(world)
    code, report, text = world.verify("dist/model.bin")
    assert code == 0, text
    assert report["rebuilds"][0]["matched"] == ["ra", "rb"]
    assert "2/2 matching (ra, rb)" in text


def test_one_key_under_two_rebuilder_names_counts_once(world: World) -> None:
    steps = chain(world)
    world.write(world.rebuild(steps["train"], "ra"))
    signers = {n: {"key": world.public(n)} for n in SIGNERS}
    signers["ra-alias"] = {"key": world.public("ra")}
    policy(world, signers=signers, rebuild={"quorum": 2, "rebuilders": ["ra", "ra-alias"],
                                            "steps": ["train"]})
    code, report, text = world.verify("dist/model.bin")
    assert code == 1, text
    assert report["rebuilds"][0]["matching"] == 1


def test_a_rebuilder_who_signed_a_copy_of_the_step_never_counts(world: World) -> None:
    steps = chain(world)
    # The same train payload in a second file, co-signed by ra: ra is now a signer of the
    # step attestation itself, whichever file says so.
    world.write(steps["train"].signed("ra"), "train-copy.intoto.json")
    world.write(world.rebuild(steps["train"], "ra", run_id="ra"))
    world.write(world.rebuild(steps["train"], "rb", run_id="rb"))
    rebuild_policy(world)
    code, report, _ = world.verify("dist/model.bin")
    assert code == 1
    assert report["rebuilds"][0]["matched"] == ["rb"]
    assert any("step's own signer" in i for i in report["rebuilds"][0]["ignored"])


def test_the_steps_own_signer_never_counts_even_when_listed(world: World) -> None:
    steps = chain(world)
    world.write(world.rebuild(steps["train"], "builder"))
    world.write(world.rebuild(steps["train"], "ra"))
    rebuild_policy(world, rebuilders=("ra", "builder"))
    code, report, _ = world.verify("dist/model.bin")
    assert code == 1
    assert report["rebuilds"][0]["matched"] == ["ra"]


# -- 2. every attestation of a step in the chain meets the quorum ----------------------------


@pytest.mark.parametrize("rebuilt", ["first", "second", "both"])
def test_two_trainings_in_one_chain_are_each_held_to_the_quorum(world: World,
                                                                rebuilt: str) -> None:
    model = world.file("dist/model.bin", MODEL)
    prepare = world.step("prepare", {"raw.csv": sha(RAW)}, {"data.csv": sha(DATA)})
    first = world.step("train", {"data.csv": sha(DATA)}, {"weights.bin": sha(WEIGHTS)})
    second = world.step("train", {"data.csv": sha(DATA)}, {"train-log.json": sha(LOG)},
                        argv=["python", "train.py", "--log-only"])
    package = world.step("package", {"weights.bin": sha(WEIGHTS), "train-log.json": sha(LOG)},
                         {"dist/model.bin": model})
    for step in (prepare, first, second, package):
        world.write(step.signed("builder"))
    if rebuilt in ("first", "both"):
        world.write(world.rebuild(first, "ra"))
    if rebuilt in ("second", "both"):
        world.write(world.rebuild(second, "ra"))
    rebuild_policy(world, quorum=1)
    code, report, text = world.verify("dist/model.bin")
    assert code == (0 if rebuilt == "both" else 1), text
    quorums = {q["payload_sha256"]: q["matching"] for q in report["rebuilds"]}
    assert set(quorums) == {first.payload_sha256, second.payload_sha256}
    assert audit_verdict(world) == ("PASS" if rebuilt == "both" else "FAIL")


# -- 3. a pin is never relaxed by a pattern ---------------------------------------------------


def test_a_pinned_name_is_judged_by_its_pin_alone(world: World) -> None:
    chain(world)
    policy(world, sources=[{"name": "raw.csv", "sha256": sha(RAW)},
                           {"name": "prepare.py", "sha256": sha("the reviewed script")},
                           {"pattern": "*.py", "unpinned": True}])
    code, report, _ = world.verify("dist/model.bin")
    assert code == 1
    assert any("material prepare.py" in m and "pins" in m for m in messages(report))
    assert audit_verdict(world) == "FAIL"


def test_a_pin_matched_by_any_of_its_rules_holds(world: World) -> None:
    chain(world)
    policy(world, sources=[{"name": "raw.csv", "sha256": sha("an older release")},
                           {"name": "raw.csv", "sha256": sha(RAW)},
                           {"pattern": "*.py", "unpinned": True}])
    assert world.verify("dist/model.bin")[0] == 0


# -- 4. a directory material does not hide the pinned files inside it -------------------------


def directory_chain(world: World, files: dict[str, str], listed: dict[str, str] | None,
                    beside: dict[str, str] | None = None) -> None:
    """prepare consumes the directory `data` (dirHash of `files`), listing `listed` inside,
    and the materials `beside` it."""
    from verifier.formats.digest import dir_hash

    model = world.file("dist/model.bin", MODEL)
    materials: dict[str, Any] = {"data": {"dirHash": dir_hash(files)}, **(beside or {})}
    materials.update({f"data/{n}": d for n, d in (listed or {}).items()})
    steps = [world.step("prepare", materials, {"data.csv": sha(DATA)}),
             world.step("train", {"data.csv": sha(DATA)}, {"weights.bin": sha(WEIGHTS)}),
             world.step("package", {"weights.bin": sha(WEIGHTS)}, {"dist/model.bin": model})]
    for step in steps:
        world.write(step.signed("builder"))


PINNED = [{"name": "data/iris.csv", "sha256": sha("iris")}, {"pattern": "**", "unpinned": True}]


def test_a_directory_holding_a_poisoned_pinned_file_fails(world: World) -> None:
    files = {"iris.csv": sha("poisoned iris"), "notes.txt": sha("n")}
    directory_chain(world, files, listed=files)
    policy(world, sources=PINNED)
    code, report, _ = world.verify("dist/model.bin")
    assert code == 1
    assert any("material data/iris.csv" in m and "pins" in m for m in messages(report))
    assert audit_verdict(world) == "FAIL"


def test_a_directory_that_does_not_list_a_pinned_file_fails_naming_it(world: World) -> None:
    directory_chain(world, {"iris.csv": sha("poisoned iris")}, listed=None)
    policy(world, sources=PINNED)
    code, report, _ = world.verify("dist/model.bin")
    assert code == 1
    assert any("pinned source data/iris.csv" in m and "cannot be checked" in m
               for m in messages(report)), messages(report)
    assert "unproven-pin" in {p["kind"] for p in report["problems"]}


def test_a_directory_whose_listing_does_not_add_up_to_its_dirhash_fails(world: World) -> None:
    # The listing shows the reviewed iris.csv, the dirHash covers the poisoned one.
    from verifier.formats.digest import dir_hash

    model = world.file("dist/model.bin", MODEL)
    prepare = world.step("prepare", {"data": {"dirHash": dir_hash({"iris.csv": sha("poison")})},
                                     "data/iris.csv": sha("iris")}, {"data.csv": sha(DATA)})
    for step in (prepare,
                 world.step("train", {"data.csv": sha(DATA)}, {"weights.bin": sha(WEIGHTS)}),
                 world.step("package", {"weights.bin": sha(WEIGHTS)},
                            {"dist/model.bin": model})):
        world.write(step.signed("builder"))
    policy(world, sources=PINNED)
    code, report, _ = world.verify("dist/model.bin")
    assert code == 1
    assert any("do not add up to its dirHash" in m for m in messages(report))
    assert "unproven-directory" in {p["kind"] for p in report["problems"]}


def test_an_honest_directory_with_the_pinned_file_passes(world: World) -> None:
    files = {"iris.csv": sha("iris"), "notes.txt": sha("n")}
    # A file beside the directory (and one in a directory whose name it starts with) is no
    # file of it: the listing still adds up.
    directory_chain(world, files, listed=files, beside={"prepare.py": sha("p"),
                                                         "data2/x.csv": sha("x")})
    policy(world, sources=PINNED)
    assert world.verify("dist/model.bin")[0] == 0


def test_a_directory_pinned_by_dirhash_proves_its_files(world: World) -> None:
    from verifier.formats.digest import dir_hash

    files = {"iris.csv": sha("iris")}
    directory_chain(world, files, listed=None)
    policy(world, sources=[{"name": "data", "dirHash": dir_hash(files)}])
    assert world.verify("dist/model.bin")[0] == 0
    policy(world, sources=[{"name": "data", "dirHash": dir_hash({"iris.csv": sha("other")})},
                           {"pattern": "**", "unpinned": True}])
    assert world.verify("dist/model.bin")[0] == 1


def test_a_directory_no_rule_accepts_is_judged_file_by_file(world: World) -> None:
    """A directory that is neither produced nor accepted by a source rule is proven only by
    its files: every one of them must be accounted for, so a file no rule names fails."""
    files = {"iris.csv": sha("iris"), "poison.csv": sha("anything")}
    directory_chain(world, files, listed=files)
    policy(world, sources=[{"name": "data/iris.csv", "sha256": sha("iris")},
                           {"name": "raw.csv", "sha256": sha(RAW)}])
    code, report, _ = world.verify("dist/model.bin")
    assert code == 1
    assert any("material data/poison.csv" in m and "neither a product" in m
               for m in messages(report)), messages(report)
    assert audit_verdict(world) == "FAIL"
    # Every file accounted for (here each by a pin): the directory is proven by them.
    policy(world, sources=[{"name": "data/iris.csv", "sha256": sha("iris")},
                           {"name": "data/poison.csv", "sha256": sha("anything")}])
    assert world.verify("dist/model.bin")[0] == 0
    assert audit_verdict(world) == "PASS"


def test_a_pattern_on_a_directory_never_relaxes_a_git_commit_rule_inside_it(world: World
                                                                             ) -> None:
    """`src/**` must come from a clean tree at a commit; naming the directory `src` (accepted
    by an unpinned catch-all) must not let a dirty tree's src/train.py through."""
    from verifier.formats.digest import dir_hash

    model = world.file("dist/model.bin", MODEL)
    files = {"train.py": sha("t")}
    dirty = {"git": {"commit": "a" * 40, "dirty": True}}
    steps = [world.step("prepare", {"raw.csv": sha(RAW)}, {"data.csv": sha(DATA)}),
             world.step("train", {"data.csv": sha(DATA), "src": {"dirHash": dir_hash(files)},
                                  "src/train.py": sha("t")},
                        {"weights.bin": sha(WEIGHTS)}, environment=dirty),
             world.step("package", {"weights.bin": sha(WEIGHTS)}, {"dist/model.bin": model})]
    for step in steps:
        world.write(step.signed("builder"))
    policy(world, sources=[{"name": "raw.csv", "sha256": sha(RAW)},
                           {"pattern": "src/**", "git_commit": "a" * 40},
                           {"pattern": "**", "unpinned": True}])
    code, report, _ = world.verify("dist/model.bin")
    assert code == 1
    assert any("material src/train.py" in m and "git commit" in m for m in messages(report))
    assert audit_verdict(world) == "FAIL"


def test_a_tolerant_rule_never_waves_through_a_directory_whose_files_are_not_listed(
        world: World) -> None:
    """Under a tolerance, a directory product is left to its files only when the attestation
    lists them all; a directory attested alone and rebuilt differently is dissent."""
    from verifier.formats.digest import dir_hash

    files = {"w.safetensors": sha("w")}
    train = world.step("train", {"raw.csv": sha(RAW)}, {"model": {"dirHash": dir_hash(files)}})
    world.write(train.signed("builder"))
    world.write(world.rebuild(train, "ra", actual={"model": {"dirHash": sha("other")}}))
    world.file("model/w.safetensors", "w")
    world.policy({
        "sources": [{"name": "raw.csv", "sha256": sha(RAW)}],
        "steps": [{"name": "train", "signed_by": ["builder"]}],
        "rebuild": {"quorum": 1, "rebuilders": ["ra"], "steps": ["train"],
                    "match": {"train": {"products": {
                        "**/*.safetensors": {"rtol": 0.01, "atol": 0.001}}}}},
    })
    code, report, _ = world.verify("model")
    assert code == 1
    assert report["rebuilds"][0]["counted"] == []
    assert report["rebuilds"][0]["dissent"][0]["files"][0]["name"] == "model"


def test_a_weak_or_unknown_digest_links_nothing(world: World) -> None:
    """Only sha256, dirHash (and BLAKE3 where the policy opts in) establish that a material
    is what a step produced: an md5 or made-up digest shared with a product links nothing,
    and a rebuild agreeing only on md5 is no match."""
    import hashlib

    md5 = hashlib.md5(b"data").hexdigest()
    model = world.file("dist/model.bin", MODEL)
    prepare = world.step("prepare", {"raw.csv": sha(RAW)},
                         {"data.csv": {"sha256": sha(DATA), "md5": md5, "x-mine": "1"}})
    train = world.step("train", {"data.csv": {"md5": md5, "x-mine": "1"}},
                       {"dist/model.bin": model})
    for step in (prepare, train):
        world.write(step.signed("builder"))
    world.policy({"sources": [{"name": "raw.csv", "sha256": sha(RAW)}],
                  "steps": [{"name": "prepare", "signed_by": ["builder"]},
                            {"name": "train", "signed_by": ["builder"], "after": ["prepare"]}]})
    code, report, _ = world.verify("dist/model.bin")
    assert code == 1
    assert any("material data.csv" in m and "neither a product" in m for m in messages(report))
    assert audit_verdict(world) == "FAIL"


def test_a_blake3_attestation_that_fails_never_hides_a_sha256_one_that_holds(world: World
                                                                             ) -> None:
    """With blake3 accepted, verify-model hashes by BLAKE3 first; a final attestation carrying
    that BLAKE3 but signed by the wrong signer must not hide a valid sha256-only one, and
    verify-model must answer as audit does."""
    import blake3

    model = world.file("dist/model.bin", MODEL)
    good = world.step("package", {"raw.csv": sha(RAW)}, {"dist/model.bin": model})
    other = world.step("package", {"raw.csv": sha(RAW)},
                       {"dist/model.bin": {"sha256": model,
                                           "blake3": blake3.blake3(MODEL.encode()).hexdigest()}},
                       argv=["python", "package.py", "--again"])
    world.write(good.signed("builder"))
    world.write(other.signed("stranger"))
    world.policy({"digests": {"accept": ["sha256", "blake3"]},
                  "sources": [{"name": "raw.csv", "sha256": sha(RAW)}],
                  "steps": [{"name": "package", "signed_by": ["builder"]}]})
    code, report, _ = world.verify("dist/model.bin")
    assert code == 0, messages(report)
    assert audit_verdict(world) == "PASS"


def copy_chain(world: World, raw: str) -> None:
    """prepare copies raw.csv (content `raw`) to data.csv unchanged, stage copies it again to
    staged.csv, and train consumes the second copy."""
    model = world.file("dist/model.bin", MODEL)
    steps = [world.step("prepare", {"raw.csv": sha(raw)}, {"data.csv": sha(raw)}),
             world.step("stage", {"data.csv": sha(raw)}, {"staged.csv": sha(raw)}),
             world.step("train", {"staged.csv": sha(raw)}, {"dist/model.bin": model})]
    for step in steps:
        world.write(step.signed("builder"))
    world.policy({"sources": [{"name": "raw.csv", "sha256": sha(RAW)}],
                  "steps": [{"name": "prepare", "signed_by": ["builder"]},
                            {"name": "stage", "signed_by": ["builder"], "after": ["prepare"]},
                            {"name": "train", "signed_by": ["builder"], "after": ["stage"]}]})


def test_a_copy_of_a_pinned_input_carries_its_provenance(world: World) -> None:
    """A step that copies a pinned source unchanged (and a copy of that copy) accounts for the
    copy: the chain passes, with every step in it."""
    copy_chain(world, RAW)
    code, report, _ = world.verify("dist/model.bin")
    assert code == 0, messages(report)
    assert {s["step"] for s in report["steps"]} == {"prepare", "stage", "train"}
    assert audit_verdict(world) == "PASS"


def test_a_copy_of_an_unaccounted_input_accounts_for_nothing(world: World) -> None:
    """Copying launders nothing: a copy of an input no rule accepts fails, for the file."""
    copy_chain(world, "rows nobody pinned\n")
    code, report, _ = world.verify("dist/model.bin")
    assert code == 1
    assert any("material raw.csv" in m for m in messages(report)), messages(report)
    assert not any("cycle" in m for m in messages(report))
    assert audit_verdict(world) == "FAIL"


# -- 5. names that leave the workspace ---------------------------------------------------------


@pytest.mark.parametrize("name", ["../secret.csv", "/etc/passwd", "data/../../x"])
def test_material_names_leaving_the_workspace_fail_verify_as_audit_flags_them(
        world: World, name: str) -> None:
    model = world.file("dist/model.bin", MODEL)
    prepare = world.step("prepare", {"raw.csv": sha(RAW), name: sha("x")},
                         {"data.csv": sha(DATA)})
    for step in (prepare,
                 world.step("train", {"data.csv": sha(DATA)}, {"weights.bin": sha(WEIGHTS)}),
                 world.step("package", {"weights.bin": sha(WEIGHTS)},
                            {"dist/model.bin": model})):
        world.write(step.signed("builder"))
    policy(world, sources=[{"name": "raw.csv", "sha256": sha(RAW)},
                           {"pattern": "**", "unpinned": True}])
    code, report, _ = world.verify("dist/model.bin")
    assert code == 1
    [problem] = [p for p in report["problems"] if p["kind"] == "unsafe-name"]
    audited = audit([world.root / "attestations"], load_policy(world.root / "model-policy.yaml"))
    [finding] = [f for f in audited.findings if f.kind == "unsafe-name"]
    # The same sentence from the same evaluation (audit names files as it was given them).
    assert finding.message.endswith(problem["message"]) and finding.severity == "error"


def test_a_product_name_leaving_the_workspace_fails(world: World) -> None:
    steps = chain(world)
    evil = world.step("package", {"weights.bin": sha(WEIGHTS)},
                      {**steps["package"].products, "../../.bashrc": sha("evil")})
    world.write(evil.signed("builder"), "package.intoto.json")
    policy(world)
    code, report, _ = world.verify("dist/model.bin")
    assert code == 1
    assert any(p["kind"] == "unsafe-name" for p in report["problems"])


# -- 6. a FAILED summary never reads as OK -----------------------------------------------------


def write_vsa(world: World, artifact: str, name: str = "model.vsa.intoto.json") -> Path:
    run(["keygen", "keys/verifier"], cwd=world.root)
    result = run([artifact, "--policy", "model-policy.yaml", "--attestations", "attestations",
                  "--vsa", name, "--key", "keys/verifier.key"], cwd=world.root,
                 program="verify-model")
    assert_no_traceback(result)
    return world.root / name


def test_a_failed_vsa_fails_verify_bundle_and_verify_vsa(world: World) -> None:
    chain(world)
    policy(world)
    (world.root / "dist" / "model.bin").write_text("tampered\n")
    vsa = write_vsa(world, "dist/model.bin")
    bundle = world.cli("verify-bundle", str(vsa), "--artifact", "dist/model.bin",
                       "--key", "keys/verifier.pub")
    assert bundle.code == 1 and "OK" not in bundle.stdout
    assert "result is 'FAILED'" in bundle.output
    gate = world.cli("verify-vsa", str(vsa), "--artifact", "dist/model.bin",
                     "--key", "keys/verifier.pub")
    assert gate.code == 1 and "verificationResult is 'FAILED'" in gate.stdout


def test_verify_vsa_passes_only_for_this_artifact_policy_verifier_and_age(world: World) -> None:
    chain(world)
    policy(world)
    vsa = write_vsa(world, "dist/model.bin")
    base = ["verify-vsa", str(vsa), "--artifact", "dist/model.bin"]
    ok = world.cli(*base, "--key", "keys/verifier.pub", "--policy", "model-policy.yaml",
                   "--max-age", "1h", "--json")
    assert ok.code == 0, ok.output
    assert json.loads(ok.stdout)["verdict"] == "PASS"
    # Another artifact, another verifier, another policy: each a FAIL with its sentence.
    world.file("other.bin", "other")
    other = world.cli("verify-vsa", str(vsa), "--artifact", "other.bin",
                      "--key", "keys/verifier.pub")
    assert other.code == 1 and "no subject has its digest" in other.stdout
    stranger = world.cli(*base, "--key", "keys/stranger.pub")
    assert stranger.code == 1 and "signature does not verify" in stranger.stdout
    (world.root / "other-policy.yaml").write_text("version: 1\n")
    changed = world.cli(*base, "--key", "keys/verifier.pub", "--policy", "other-policy.yaml")
    assert changed.code == 1 and "another policy" in changed.stdout
    bad_age = world.cli(*base, "--key", "keys/verifier.pub", "--max-age", "soon")
    assert bad_age.code == 2 and "not a duration" in bad_age.stderr
    gone = world.cli("verify-vsa", str(vsa), "--artifact", "dist/gone.bin",
                     "--key", "keys/verifier.pub")
    assert_error(gone, 2, "dist/gone.bin", "no such file or directory")


def test_verify_vsa_checks_a_blake3_subject_by_blake3(world: World) -> None:
    """A policy accepting blake3 verifies a large file by BLAKE3 alone; its summary's subject
    then carries only that digest, and verify-vsa must hash the file the same way (and still
    refuse another file)."""
    import blake3

    model = (world.root / "dist" / "model.bin")
    chain(world)
    by_blake3 = {"blake3": blake3.blake3(model.read_bytes()).hexdigest(), "sha256": sha(MODEL)}
    package = world.step("package", {"weights.bin": sha(WEIGHTS)},
                         {"dist/model.bin": by_blake3})
    world.write(package.signed("builder"), "package.intoto.json")
    policy(world, digests={"accept": ["sha256", "blake3"]})
    vsa = write_vsa(world, "dist/model.bin")
    subject = json.loads(__import__("base64").b64decode(
        json.loads(vsa.read_text())["dsseEnvelope"]["payload"]))["subject"]
    assert subject[0]["digest"] == {"blake3": by_blake3["blake3"]}
    gate = world.cli("verify-vsa", str(vsa), "--artifact", "dist/model.bin",
                     "--key", "keys/verifier.pub")
    assert gate.code == 0, gate.output
    world.file("dist/model.bin", "another model\n")
    changed = world.cli("verify-vsa", str(vsa), "--artifact", "dist/model.bin",
                        "--key", "keys/verifier.pub")
    assert changed.code == 1 and "blake3" in changed.stdout, changed.output


@pytest.mark.parametrize("record", [
    {"policyPatterns": ["../outside/**"]}, {"runPatterns": "README.md"},
    {"policyPatterns": [7]}, {"policyPatterns": ["*"] * 257}, "everything"])
def test_a_summary_whose_ignore_record_is_unusable_is_refused(world: World, tmp_path: Path,
                                                              record: Any) -> None:
    """Even signed by the verifier the gate trusts, an ignore record that climbs out of the
    directory or is no list of patterns is unusable input (exit 2, one sentence), never a
    digest made some other way."""
    world.file("dist/model/weights.bin", "w")
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "model", "digest": {"dirHash": "0" * 64}}],
        "predicateType": "https://slsa.dev/verification_summary/v1",
        "predicate": {"verificationResult": "PASSED",
                      "https://model-verifier.dev/vsa/ignored/v1": record},
    }
    path = tmp_path / "forged.vsa.json"
    path.write_text(json.dumps(world.sign(canonical(statement), "auditor")))
    result = world.cli("verify-vsa", str(path), "--artifact", "dist/model",
                       "--key", "keys/auditor.pub")
    assert_no_traceback(result)
    assert result.code == 2, result.output
    assert str(path) in result.stderr and "ignore" in result.stderr


def test_an_old_vsa_fails_max_age(world: World) -> None:
    from verifier.formats.signing import KeySigner
    from verifier.judgement.verify import verify_artifact
    from verifier.judgement.vsa import write_vsa as write

    chain(world)
    policy(world)
    run(["keygen", "keys/verifier"], cwd=world.root)
    loaded = load_policy(world.root / "model-policy.yaml")
    report = verify_artifact(world.root / "dist" / "model.bin", loaded,
                             [world.root / "attestations"])
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    write(world.root / "old.vsa.json", report, loaded, KeySigner(
        world.root / "keys" / "verifier.key"), time_verified=old)
    result = world.cli("verify-vsa", "old.vsa.json", "--artifact", str(world.root / "dist" /
                       "model.bin"), "--key", "keys/verifier.pub", "--max-age", "7d")
    assert result.code == 1 and "older than" in result.stdout
    fresh = world.cli("verify-vsa", "old.vsa.json", "--artifact", str(world.root / "dist" /
                      "model.bin"), "--key", "keys/verifier.pub", "--max-age", "30d")
    assert fresh.code == 0, fresh.output


# -- 7. a probe is neither a match nor dissent -------------------------------------------------


def test_a_matching_probe_never_counts_towards_the_quorum(world: World) -> None:
    steps = chain(world)
    world.write(world.rebuild(steps["train"], "ra", overrides={"OMP_NUM_THREADS": "2"}))
    rebuild_policy(world, quorum=1)
    code, report, text = world.verify("dist/model.bin")
    assert code == 1
    [train] = report["rebuilds"]
    assert train["matching"] == 0 and train["dissent"] == []
    assert train["probes"][0]["overrides"] == {"OMP_NUM_THREADS": "2"}
    assert "probe by ra with OMP_NUM_THREADS=2, not counted" in text


def test_a_differing_probe_is_not_dissent(world: World) -> None:
    steps = chain(world)
    world.write(world.rebuild(steps["train"], "ra"))
    world.write(world.rebuild(steps["train"], "rb", overrides={"OMP_NUM_THREADS": "2"},
                              actual={"weights.bin": {"sha256": sha("other weights")}}))
    rebuild_policy(world, quorum=1, max_dissent=0)
    code, report, text = world.verify("dist/model.bin")
    assert code == 0, text
    [train] = report["rebuilds"]
    assert train["dissent"] == [] and len(train["probes"]) == 1
    assert "weights.bin DIVERGED" in text
    audited = audit([world.root / "attestations"], load_policy(world.root / "model-policy.yaml"))
    assert [f.kind for f in audited.findings if f.kind.startswith("rebuild-")] == [
        "rebuild-probe"]


def test_a_differing_plain_rerun_is_dissent(world: World) -> None:
    steps = chain(world)
    world.write(world.rebuild(steps["train"], "ra"))
    world.write(world.rebuild(steps["train"], "rb",
                              actual={"weights.bin": {"sha256": sha("other weights")}}))
    rebuild_policy(world, quorum=1, max_dissent=0)
    code, report, _ = world.verify("dist/model.bin")
    assert code == 1
    assert report["rebuilds"][0]["dissent"][0]["rebuilder"] == "rb"
