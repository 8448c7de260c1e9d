"""Answers that lead to the cause: problems ordered cause first, an unknown signer's key id,
a shard pointed to its directory, drift ordered by what usually matters."""

from __future__ import annotations

import itertools
import json
import random

from helpers import Chain, assert_no_traceback, run
from hypothesis import given
from hypothesis import strategies as st

from verifier.diff.drift import order_drift
from verifier.judgement.evaluation import CAUSES, CONSEQUENCES, Problem, order_by_cause


def report(chain: Chain, artifact: str = "dist/model.bin") -> dict:
    result = run(["verify", artifact, "--json"], cwd=chain.work)
    assert_no_traceback(result)
    return json.loads(result.stdout)


def test_forgetting_the_data_step_names_the_missing_step_first(chain: Chain) -> None:
    chain.attestation("prepare").unlink()
    found = report(chain)
    assert found["verdict"] == "FAIL"
    kinds = [p["kind"] for p in found["problems"]]
    assert kinds[0] == "missing-step", found["problems"]
    assert "required step 'prepare' is missing" in found["problems"][0]["message"]
    assert "data/clean.txt" in found["problems"][1]["message"]  # its consequence, after it


def test_an_unknown_signer_is_named_by_the_key_id_it_claims(chain: Chain) -> None:
    assert chain.record("prepare", signer="outsider").code == 0
    found = report(chain)
    first = found["problems"][0]["message"]
    claimed = chain.keys("outsider").hint  # sha256 of the PEM, computed here independently
    assert f"it names key id {claimed}, unverified" in first, first
    assert "prepare.intoto.json" in first
    assert any(claimed in note and "signed by no signer the policy names" in note
               for note in found["notes"])
    # The missing step is its consequence and comes after it.
    assert [p["kind"] for p in found["problems"]][1:] == ["missing-step"]


def test_a_shard_that_passes_points_to_its_directory(chain: Chain) -> None:
    found = report(chain)
    assert found["verdict"] == "PASS"
    assert any("one file of the directory dist" in n and "verify dist" in n
               for n in found["notes"]), found["notes"]
    assert not any("one file of the directory" in n for n in report(chain, "dist")["notes"])


def test_a_changed_shard_is_pointed_to_its_directory(chain: Chain) -> None:
    (chain.work / "dist" / "model.bin").write_bytes(b"changed")
    message = report(chain)["problems"][0]["message"]
    assert "no longer matches" in message
    assert "one file of the directory dist that the step attested as a whole" in message


KINDS = st.sampled_from([*CAUSES, *CONSEQUENCES, "unaccounted-material", "order",
                         "quorum-shortfall"])


@given(st.lists(st.tuples(KINDS, st.booleans()), max_size=12))
def test_causes_come_first_and_consequences_last_in_a_stable_order(
        kinds: list[tuple[str, bool]]) -> None:
    problems = [Problem(f"f{i}", f"m{i}", kind,
                        ordered_as="signer-not-in-policy" if untrusted else None)
                for i, (kind, untrusted) in enumerate(kinds)]
    ordered = order_by_cause(problems)
    assert sorted(ordered, key=lambda p: p.file) == sorted(problems, key=lambda p: p.file)

    def tier(p: Problem) -> int:
        kind = p.ordered_as or p.kind
        return CAUSES.index(kind) if kind in CAUSES else len(CAUSES) + (kind in CONSEQUENCES)

    tiers = [tier(p) for p in ordered]
    assert tiers == sorted(tiers)
    for a, b in itertools.pairwise(ordered):
        if tier(a) == tier(b):
            assert problems.index(a) < problems.index(b)  # stable


DRIFT = [
    "packages.aiohttp", "packages.numpy", "packages.zipp", "packages.mkl",
    "packages.nvidia-cublas-cu12", "python.version", "torch.version", "torch.cuda",
    "torch.deterministic_algorithms", "variables.OMP_NUM_THREADS", "platform.system",
    "variables.LANG", "torch.threads", "variables.CUBLAS_WORKSPACE_CONFIG",
]


def test_drift_lists_what_matters_before_the_package_tail() -> None:
    shuffled = [{"field": f, "recorded": 1, "current": 2} for f in DRIFT]
    random.Random(7).shuffle(shuffled)
    fields = [c["field"] for c in order_drift(shuffled)]
    assert fields[0] == "python.version"
    assert fields.index("torch.version") < fields.index("torch.cuda")
    assert fields.index("torch.cuda") < fields.index("packages.mkl")
    assert fields.index("packages.mkl") < fields.index("variables.OMP_NUM_THREADS")
    assert fields.index("variables.OMP_NUM_THREADS") < fields.index(
        "torch.deterministic_algorithms")
    assert fields.index("variables.CUBLAS_WORKSPACE_CONFIG") < fields.index("platform.system")
    assert fields[-2:] == ["packages.aiohttp", "packages.zipp"]


@given(st.permutations(DRIFT))
def test_drift_order_does_not_depend_on_the_input_order(fields: list[str]) -> None:
    changes = [{"field": f} for f in fields]
    assert order_drift(changes) == order_drift([{"field": f} for f in DRIFT])
