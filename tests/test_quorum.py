"""The k-of-n rebuild quorum of verify-model, rule by rule.

One two-step chain (prepare -> train) is recorded once in a temporary directory; rebuilders
rebuild it with the real `rebuild` command, some of them under an overridden variable so that
their products differ. Cases no honest rebuild produces (a rebuild naming another step, a
tolerance claim about a CSV file) are rebuild statements signed in the test with the
rebuilder's key. Each test then writes the policy it needs and runs `verify-model --json`.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import (
    INTOTO,
    KeyPair,
    assert_no_traceback,
    make_keys,
    payload_of,
    read_json,
    record_step,
    run,
)

from verifier.formats.signing import KeySigner
from verifier.formats.statement import canonical_json

REBUILD_TYPE = "https://model-verifier.dev/attestations/rebuild/v1"

PREPARE = ("import pathlib; rows = pathlib.Path('raw.csv').read_text().splitlines(); "
           "pathlib.Path('data.csv').write_text('\\n'.join(r.upper() for r in rows) + '\\n')")
# weights.safetensors: a tensor made from the data, scaled by 1 + NOISE; metrics.json: TAG.
TRAIN = (
    "import json, os, numpy as np; from safetensors.numpy import save_file; "
    "raw = open('data.csv', 'rb').read().ljust(64, b' ')[:64]; "
    "x = np.frombuffer(raw, dtype=np.uint8).astype(np.float32).reshape(4, 16) / 255; "
    "noise = np.float32(os.environ['NOISE']); "
    "save_file({'layers.0.weight': x + noise * x, 'layers.0.bias': np.ones(4, np.float32)}, "
    "'weights.safetensors'); "
    "json.dump({'tag': os.environ['TAG']}, open('metrics.json', 'w'))"
)
TRAIN_ENV = ["--env", "NOISE=0", "--env", "TAG=a"]
TENSOR = "layers.0.weight"

# Who rebuilds, with which key, and with which variables overridden.
REBUILDS: dict[str, tuple[str, list[str]]] = {
    "ra": ("ra", []),
    "rb": ("rb", []),
    "ra-again": ("ra", []),
    "builder": ("builder", []),
    "outsider": ("outsider", []),
    "rc-tolerable": ("rc", ["--env", "NOISE=0.000001"]),  # relative change 1e-6
    "rc-far": ("rc", ["--env", "NOISE=0.1"]),
    "rc-json": ("rc", ["--env", "TAG=b"]),  # the tensors agree, metrics.json does not
    "rc-probe": ("rc", ["--env", "NOISE=0.1"]),  # kept as the deliberate probe it is
}
# The rc-* rebuilds stand for a rebuilder whose machine made the difference: their
# envOverrides are dropped and they are signed again by rc, as a plain rerun that differed.
# (A rebuild with --env is a probe and never dissent; rc-probe keeps its overrides.)
AS_PLAIN_RERUNS = ("rc-tolerable", "rc-far", "rc-json")


@dataclass(frozen=True)
class QuorumChain:
    root: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def artifact(self) -> Path:
        return self.work / "weights.safetensors"

    def key(self, name: str) -> KeyPair:
        return KeyPair(self.root / "keys" / f"{name}.key", self.root / "keys" / f"{name}.pub")

    def rebuilds(self, name: str) -> Path:
        return self.root / "rebuilds" / name

    def rebuild_bundle(self, name: str, step: str) -> dict[str, Any]:
        return read_json(self.rebuilds(name) / f"{step}.rebuild.intoto.json")

    def step_payload_sha256(self, step: str, directory: str = "attestations") -> str:
        bundle = read_json(self.work / directory / f"{step}.intoto.json")
        payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
        return hashlib.sha256(payload).hexdigest()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> QuorumChain:
    chain = QuorumChain(tmp_path_factory.mktemp("quorum"))
    for name in ("builder", "ra", "rb", "rc", "outsider"):
        make_keys(chain.root / "keys", name)
    chain.work.mkdir()
    (chain.work / "raw.csv").write_text("sepal,petal\n5.1,3.5\n4.9,3.0\n", encoding="utf-8")
    builder = chain.key("builder").private
    assert record_step(chain.work, "prepare", builder, ["raw.csv"], ["data.csv"],
                       PREPARE).code == 0
    # An older run of train, then the run the chain uses: same products, another payload.
    for out in ("attestations-old", "attestations"):
        result = record_step(chain.work, "train", builder, ["data.csv"],
                             ["weights.safetensors", "metrics.json"], TRAIN, out=out,
                             extra=TRAIN_ENV)
        assert result.code == 0, result.output
    for name, (key, options) in REBUILDS.items():
        result = run(["rebuild", chain.work / "attestations", "--source", chain.work,
                      "--trust-key", chain.key("builder").public,
                      "--key", chain.key(key).private, "--out", chain.root / "rebuilds",
                      "--as", name,
                      *options], cwd=chain.work)
        assert_no_traceback(result)
        assert result.code == (0 if not options else 1), (name, result.output)
        if name in AS_PLAIN_RERUNS:
            for path in sorted(chain.rebuilds(name).glob("*.rebuild.intoto.json")):
                statement = payload_of(read_json(path))
                statement["predicate"]["envOverrides"] = {}
                sign_rebuild(chain, key, statement, path.parent, path.name)
    result = run(["rebuild", chain.work / "attestations-old" / "train.intoto.json",
                  "--trust-key", chain.key("builder").public,
                  "--step", "train", "--materials-from", chain.work, "--source", chain.work,
                  "--key", chain.key("rb").private, "--out", chain.root / "rebuilds",
                  "--as", "rb-old"],
                 cwd=chain.work)
    assert result.code == 0, result.output
    return chain


def policy(chain: QuorumChain, tmp_path: Path, *, rebuilders: list[str], quorum: int,
           signers: dict[str, str] | None = None, **rule: Any) -> Path:
    """A policy for the chain; signers maps policy names to key names (default: all)."""
    names = signers or {n: n for n in ("builder", "ra", "rb", "rc")}
    data = {
        "version": 1,
        "name": "quorum-test",
        "signers": {name: {"key": str(chain.key(key).public)} for name, key in names.items()},
        "sources": [{"name": "raw.csv", "sha256": hashlib.sha256(
            (chain.work / "raw.csv").read_bytes()).hexdigest()}],
        "steps": [{"name": "prepare", "signed_by": ["builder"]},
                  {"name": "train", "signed_by": ["builder"], "after": ["prepare"]}],
        "rebuild": {"quorum": quorum, "rebuilders": rebuilders, "steps": ["prepare", "train"],
                    **rule},
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def verify(chain: QuorumChain, policy_path: Path, *rebuild_dirs: Path,
           as_json: bool = True) -> tuple[int, Any]:
    args: list[Any] = [chain.artifact, "--policy", policy_path,
                       "--attestations", chain.work / "attestations"]
    for directory in rebuild_dirs:
        args += ["--attestations", directory]
    result = run([*args, "--json"] if as_json else args, program="verify-model")
    assert_no_traceback(result)
    assert result.code in (0, 1), result.output
    return result.code, json.loads(result.stdout) if as_json else result.stdout


def quorum_of(report: dict[str, Any], step: str) -> dict[str, Any]:
    return next(q for q in report["rebuilds"] if q["step"] == step)


def sign_rebuild(chain: QuorumChain, key: str, statement: dict[str, Any], directory: Path,
                 name: str) -> Path:
    """A rebuild statement signed with a rebuilder's key, as `rebuild` would write it."""
    bundle = KeySigner(chain.key(key).private).sign_dsse(canonical_json(statement), INTOTO)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(bundle, indent=2), encoding="utf-8")
    return path


# ------------------------------------------------------------------ the rebuilds themselves


def test_honest_rebuilds_name_the_exact_step_payload(chain: QuorumChain) -> None:
    for step in ("prepare", "train"):
        statement = payload_of(chain.rebuild_bundle("ra", step))
        assert statement["predicateType"] == REBUILD_TYPE
        assert statement["predicate"]["rebuiltAttestation"]["digest"]["sha256"] == (
            chain.step_payload_sha256(step))
        assert statement["predicate"]["reproduced"] is True
    old = payload_of(chain.rebuild_bundle("rb-old", "train"))
    assert old["predicate"]["rebuiltAttestation"]["digest"]["sha256"] == (
        chain.step_payload_sha256("train", "attestations-old"))
    assert chain.step_payload_sha256("train", "attestations-old") != (
        chain.step_payload_sha256("train"))


# ------------------------------------------------------------------ counting identities


def test_two_distinct_rebuilders_meet_a_quorum_of_two(chain: QuorumChain, tmp_path: Path
                                                      ) -> None:
    path = policy(chain, tmp_path, rebuilders=["ra", "rb"], quorum=2)
    code, report = verify(chain, path, chain.rebuilds("ra"), chain.rebuilds("rb"))
    assert code == 0, report["problems"]
    for step in ("prepare", "train"):
        assert quorum_of(report, step)["matched"] == ["ra", "rb"]
        assert quorum_of(report, step)["failures"] == []


def test_one_rebuilder_is_not_a_quorum_of_two(chain: QuorumChain, tmp_path: Path) -> None:
    path = policy(chain, tmp_path, rebuilders=["ra", "rb"], quorum=2)
    code, report = verify(chain, path, chain.rebuilds("ra"))
    assert code == 1
    assert quorum_of(report, "train")["matched"] == ["ra"]
    assert quorum_of(report, "train")["missing"] == ["rb"]


def test_the_same_rebuilder_twice_counts_once(chain: QuorumChain, tmp_path: Path) -> None:
    path = policy(chain, tmp_path, rebuilders=["ra", "rb"], quorum=2)
    code, report = verify(chain, path, chain.rebuilds("ra"), chain.rebuilds("ra-again"))
    assert code == 1
    train = quorum_of(report, "train")
    assert train["matched"] == ["ra"]
    assert train["missing"] == ["rb"]
    assert any("1 of 2" in failure for failure in train["failures"])


def test_one_key_under_two_rebuilder_names_counts_once(chain: QuorumChain, tmp_path: Path
                                                       ) -> None:
    signers = {"builder": "builder", "ra": "ra", "ra-alias": "ra", "rb": "rb"}
    path = policy(chain, tmp_path, rebuilders=["ra", "ra-alias"], quorum=2, signers=signers)
    code, report = verify(chain, path, chain.rebuilds("ra"), chain.rebuilds("ra-again"))
    assert code == 1
    train = quorum_of(report, "train")
    assert len(train["matched"]) == 1
    assert any("1 of 2" in failure for failure in train["failures"])


def test_the_builders_key_never_counts_even_listed_as_a_rebuilder(
    chain: QuorumChain, tmp_path: Path
) -> None:
    # The builder's key is listed twice: as the builder and as a rebuilder named "ci".
    signers = {"builder": "builder", "ci": "builder", "ra": "ra"}
    path = policy(chain, tmp_path, rebuilders=["ci", "ra"], quorum=2, signers=signers)
    code, report = verify(chain, path, chain.rebuilds("builder"), chain.rebuilds("ra"))
    assert code == 1
    train = quorum_of(report, "train")
    assert train["matched"] == ["ra"]
    assert any("step's own signer" in note and "builder" in note and "train" in note
               for note in train["ignored"])
    assert any("1 of 2" in failure for failure in train["failures"])
    # With quorum 1, ra alone is enough: the builder's rebuild neither helps nor harms.
    path = policy(chain, tmp_path, rebuilders=["ci", "ra"], quorum=1, signers=signers)
    assert verify(chain, path, chain.rebuilds("builder"), chain.rebuilds("ra"))[0] == 0


# ------------------------------------------------------------------ rebuilds that count for nothing


def test_a_rebuild_of_an_older_attestation_counts_for_nothing_and_is_reported(
    chain: QuorumChain, tmp_path: Path
) -> None:
    path = policy(chain, tmp_path, rebuilders=["ra", "rb"], quorum=2)
    code, report = verify(chain, path, chain.rebuilds("ra"), chain.rebuilds("rb-old"))
    assert code == 1
    train = quorum_of(report, "train")
    assert train["matched"] == ["ra"]
    assert train["dissent"] == []
    assert any("rb-old" in note and "another attestation of step 'train'" in note
               for note in train["ignored"]), train["ignored"]


def test_a_rebuild_naming_another_step_counts_for_nothing(chain: QuorumChain, tmp_path: Path
                                                          ) -> None:
    # rb's honest rebuild of train, relabelled as a rebuild of prepare and signed by rb.
    statement = payload_of(chain.rebuild_bundle("rb", "train"))
    statement["predicate"]["step"] = "prepare"
    crafted = sign_rebuild(chain, "rb", statement, tmp_path / "crafted", "mixed.intoto.json")
    path = policy(chain, tmp_path, rebuilders=["ra", "rb"], quorum=2)
    code, report = verify(chain, path, chain.rebuilds("ra"), crafted.parent)
    assert code == 1
    for step in ("prepare", "train"):
        assert quorum_of(report, step)["matched"] == ["ra"], step
    assert any(str(crafted) in note for note in quorum_of(report, "train")["ignored"])
    assert any(str(crafted) in note for note in quorum_of(report, "prepare")["ignored"])


def test_a_rebuild_signed_by_a_key_the_policy_does_not_name_is_reported(
    chain: QuorumChain, tmp_path: Path
) -> None:
    path = policy(chain, tmp_path, rebuilders=["ra", "rb"], quorum=2)
    code, report = verify(chain, path, chain.rebuilds("ra"), chain.rebuilds("outsider"))
    assert code == 1
    assert quorum_of(report, "train")["matched"] == ["ra"]
    outsider_file = str(chain.rebuilds("outsider") / "train.rebuild.intoto.json")
    assert any(outsider_file in note and "no signer the policy names" in note
               for note in report["notes"]), report["notes"]


def test_a_policy_signer_who_is_no_rebuilder_counts_for_nothing(chain: QuorumChain,
                                                                tmp_path: Path) -> None:
    path = policy(chain, tmp_path, rebuilders=["ra", "rb"], quorum=2)  # rc is a signer only
    code, report = verify(chain, path, chain.rebuilds("ra"), chain.rebuilds("rc-json"))
    assert code == 1
    train = quorum_of(report, "train")
    assert train["matched"] == ["ra"] and train["dissent"] == []
    assert any("not a rebuilder the policy names" in note for note in train["ignored"])


# ------------------------------------------------------------------ dissent


def test_dissent_is_reported_with_file_and_tensor_and_does_not_fail_a_met_quorum(
    chain: QuorumChain, tmp_path: Path
) -> None:
    path = policy(chain, tmp_path, rebuilders=["ra", "rb", "rc"], quorum=2)
    dirs = (chain.rebuilds("ra"), chain.rebuilds("rb"), chain.rebuilds("rc-far"))
    code, report = verify(chain, path, *dirs)
    assert code == 0, report["problems"]
    train = quorum_of(report, "train")
    assert train["matched"] == ["ra", "rb"]
    [dissent] = train["dissent"]
    assert dissent["rebuilder"] == "rc"
    assert dissent["attestation"] == str(chain.rebuilds("rc-far") / "train.rebuild.intoto.json")
    [weights] = dissent["files"]
    assert weights["name"] == "weights.safetensors"
    assert weights["verdict"] == "DIVERGED"
    assert [t["name"] for t in weights["tensors"]] == [TENSOR]
    assert weights["tensors"][0]["max_abs_diff"] > 0.01
    assert any(d["field"] == "variables.NOISE" for d in dissent["drift"])
    assert quorum_of(report, "prepare")["dissent"] == []  # prepare does not read NOISE

    code, text = verify(chain, path, *dirs, as_json=False)
    assert code == 0
    assert ("signed dissent from rc: weights.safetensors DIVERGED, 1 tensor(s) differ, "
            "worst layers.0.weight") in text


def test_max_dissent_zero_makes_one_dissent_fail(chain: QuorumChain, tmp_path: Path) -> None:
    path = policy(chain, tmp_path, rebuilders=["ra", "rb", "rc"], quorum=2, max_dissent=0)
    code, report = verify(chain, path, chain.rebuilds("ra"), chain.rebuilds("rb"),
                          chain.rebuilds("rc-far"))
    assert code == 1
    train = quorum_of(report, "train")
    assert train["matched"] == ["ra", "rb"]
    assert any("1 dissenting" in f and "max_dissent 0" in f for f in train["failures"])
    assert quorum_of(report, "prepare")["failures"] == []
    # Without the dissenter the same policy holds.
    code, _ = verify(chain, path, chain.rebuilds("ra"), chain.rebuilds("rb"))
    assert code == 0


def test_a_crafted_dissent_names_its_tensors(chain: QuorumChain, tmp_path: Path) -> None:
    statement = payload_of(chain.rebuild_bundle("rc-far", "train"))
    [weights] = [r for r in statement["predicate"]["results"]
                 if r["name"] == "weights.safetensors"]
    tensor = next(t for t in weights["diff"]["tensors"] if t["name"] == TENSOR)
    tensor["name"] = "encoder.attention.q_proj"
    crafted = sign_rebuild(chain, "rc", statement, tmp_path / "crafted", "train.intoto.json")
    path = policy(chain, tmp_path, rebuilders=["ra", "rb", "rc"], quorum=1)
    code, report = verify(chain, path, chain.rebuilds("ra"), crafted.parent)
    assert code == 0
    [dissent] = quorum_of(report, "train")["dissent"]
    assert dissent["files"][0]["tensors"][0]["name"] == "encoder.attention.q_proj"


# ------------------------------------------------------------------ tolerance


def test_exact_match_does_not_accept_a_rebuild_within_tolerance(chain: QuorumChain,
                                                                tmp_path: Path) -> None:
    path = policy(chain, tmp_path, rebuilders=["ra", "rc"], quorum=2)  # match: exact
    code, report = verify(chain, path, chain.rebuilds("ra"), chain.rebuilds("rc-tolerable"))
    assert code == 1
    train = quorum_of(report, "train")
    assert train["matched"] == ["ra"]
    assert [d["rebuilder"] for d in train["dissent"]] == ["rc"]


def test_tolerance_accepts_a_safetensors_product_within_it(chain: QuorumChain,
                                                           tmp_path: Path) -> None:
    path = policy(chain, tmp_path, rebuilders=["ra", "rc"], quorum=2,
                  match={"rtol": 1e-5, "atol": 1e-8})
    code, report = verify(chain, path, chain.rebuilds("ra"), chain.rebuilds("rc-tolerable"))
    assert code == 0, report["problems"]
    assert quorum_of(report, "train")["matched"] == ["ra", "rc"]
    assert quorum_of(report, "train")["dissent"] == []


def test_tolerance_does_not_accept_a_tensor_beyond_it(chain: QuorumChain, tmp_path: Path
                                                      ) -> None:
    path = policy(chain, tmp_path, rebuilders=["ra", "rc"], quorum=2,
                  match={"rtol": 1e-5, "atol": 1e-8})
    code, report = verify(chain, path, chain.rebuilds("ra"), chain.rebuilds("rc-far"))
    assert code == 1
    assert quorum_of(report, "train")["matched"] == ["ra"]
    assert quorum_of(report, "train")["dissent"][0]["files"][0]["name"] == (
        "weights.safetensors")


def test_tolerance_does_not_accept_a_differing_json_product(chain: QuorumChain,
                                                            tmp_path: Path) -> None:
    path = policy(chain, tmp_path, rebuilders=["ra", "rc"], quorum=2,
                  match={"rtol": 1.0, "atol": 1.0})
    code, report = verify(chain, path, chain.rebuilds("ra"), chain.rebuilds("rc-json"))
    assert code == 1
    train = quorum_of(report, "train")
    assert train["matched"] == ["ra"]
    assert [f["name"] for f in train["dissent"][0]["files"]] == ["metrics.json"]


def test_tolerance_is_never_applied_to_a_non_tensor_file_whatever_the_claim_says(
    chain: QuorumChain, tmp_path: Path
) -> None:
    # rc claims, with tensor metrics far inside the tolerance, that a CSV product and a JSON
    # product were rebuilt WITHIN-TOLERANCE: neither is a tensor file, so neither counts.
    statement = payload_of(chain.rebuild_bundle("rc-tolerable", "train"))
    weights = next(r for r in statement["predicate"]["results"]
                   if r["name"] == "weights.safetensors")
    metrics = next(r for r in statement["predicate"]["results"] if r["name"] == "metrics.json")
    metrics.update(actual={"sha256": "0" * 64}, verdict="WITHIN-TOLERANCE",
                   diff=copy.deepcopy(weights["diff"]))
    next(s for s in statement["subject"] if s["name"] == "metrics.json")["digest"] = (
        metrics["actual"])
    crafted = sign_rebuild(chain, "rc", statement, tmp_path / "json", "train.intoto.json")
    path = policy(chain, tmp_path, rebuilders=["ra", "rc"], quorum=2,
                  match={"rtol": 1e-5, "atol": 1e-8})
    code, report = verify(chain, path, chain.rebuilds("ra"), crafted.parent)
    assert code == 1
    [dissent] = quorum_of(report, "train")["dissent"]
    assert [f["name"] for f in dissent["files"]] == ["metrics.json"]

    # The same claim about prepare's data.csv.
    statement = payload_of(chain.rebuild_bundle("rc-tolerable", "prepare"))
    [data] = statement["predicate"]["results"]
    data.update(actual={"sha256": "1" * 64}, verdict="WITHIN-TOLERANCE",
                diff=copy.deepcopy(weights["diff"]))
    statement["subject"] = [{"name": "data.csv", "digest": data["actual"]}]
    crafted = sign_rebuild(chain, "rc", statement, tmp_path / "csv", "prepare.intoto.json")
    code, report = verify(chain, path, chain.rebuilds("ra"), crafted.parent)
    assert code == 1
    prepare = quorum_of(report, "prepare")
    assert prepare["matched"] == ["ra"]
    assert [f["name"] for f in prepare["dissent"][0]["files"]] == ["data.csv"]


def test_match_per_step(chain: QuorumChain, tmp_path: Path) -> None:
    tolerant = {"rtol": 1e-5, "atol": 1e-8}
    path = policy(chain, tmp_path, rebuilders=["ra", "rc"], quorum=2,
                  match={"prepare": "exact", "train": tolerant})
    code, report = verify(chain, path, chain.rebuilds("ra"), chain.rebuilds("rc-tolerable"))
    assert code == 0, report["problems"]
    assert quorum_of(report, "train")["matched"] == ["ra", "rc"]
    # Tolerance for prepare alone leaves train exact: rc's train rebuild is dissent again.
    path = policy(chain, tmp_path, rebuilders=["ra", "rc"], quorum=2,
                  match={"prepare": tolerant})
    code, report = verify(chain, path, chain.rebuilds("ra"), chain.rebuilds("rc-tolerable"))
    assert code == 1
    assert quorum_of(report, "train")["matched"] == ["ra"]
    assert quorum_of(report, "prepare")["matched"] == ["ra", "rc"]


# ------------------------------------------------------------------ what the user sees


def test_fewer_than_quorum_exits_1_with_the_count_and_who_is_missing(
    chain: QuorumChain, tmp_path: Path
) -> None:
    path = policy(chain, tmp_path, rebuilders=["ra", "rb", "rc"], quorum=3)
    result = run([chain.artifact, "--policy", path, "--attestations", chain.work / "attestations",
                  "--attestations", chain.rebuilds("ra")], program="verify-model")
    assert_no_traceback(result)
    assert result.code == 1
    assert result.stdout.startswith("FAIL")
    lines = [line for line in result.stdout.splitlines() if "step 'train' has" in line]
    assert len(lines) == 1, result.stdout
    assert "1 of 3" in lines[0] and "missing: rb, rc" in lines[0]


def test_json_report_has_a_rebuilds_section(chain: QuorumChain, tmp_path: Path) -> None:
    path = policy(chain, tmp_path, rebuilders=["ra", "rb", "rc"], quorum=2)
    code, report = verify(chain, path, chain.rebuilds("ra"), chain.rebuilds("rb"),
                          chain.rebuilds("rc-far"))
    assert code == 0
    assert report["verdict"] == "PASS"
    assert [q["step"] for q in report["rebuilds"]] == ["prepare", "train"]
    train = quorum_of(report, "train")
    assert set(train) >= {"step", "attestation", "quorum", "matched", "missing", "dissent",
                          "ignored", "failures"}
    assert train["attestation"] == str(chain.work / "attestations" / "train.intoto.json")
    assert train["quorum"] == 2
    assert train["missing"] == []  # rc sent a rebuild: it dissents, it is not missing
    assert train["dissent"][0]["rebuilder"] == "rc"


def test_rebuild_results_are_byte_copies_of_what_was_signed(chain: QuorumChain,
                                                            tmp_path: Path) -> None:
    # A copied rebuild file is the same claim: copying ra's file does not make two rebuilders.
    copies = tmp_path / "copies"
    for index in range(3):
        shutil.copytree(chain.rebuilds("ra"), copies / str(index))
    path = policy(chain, tmp_path, rebuilders=["ra", "rb"], quorum=2)
    code, report = verify(chain, path, copies)
    assert code == 1
    assert quorum_of(report, "train")["matched"] == ["ra"]
