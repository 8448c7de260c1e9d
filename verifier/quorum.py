"""k-of-n rebuild quorum: how many independent rebuilders reproduced each attested step.

A rebuild counts for a step when it names that exact step attestation (by the sha256 of its
DSSE payload), is signed by a rebuilder the policy names who did not sign the step itself, and
every attested product was reproduced (bit for bit, or within the policy's tolerance for tensor
files). Identities are counted, not names or files: one key listed under two names, or one
rebuilder attesting twice, counts once. A rebuilder who attests a mismatch is signed dissent:
reported with file and tensor, and failing the step only beyond `max_dissent`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from verifier.errors import InputError
from verifier.statement import Statement, StepRecord, is_digest_set

if TYPE_CHECKING:
    from verifier.policy import Policy, Tolerance
    from verifier.trust import Attribution, TrustedSigners

VERDICTS = ("IDENTICAL", "CANONICALLY-IDENTICAL", "WITHIN-TOLERANCE", "DIVERGED", "MISSING")


@dataclass(frozen=True)
class RebuildClaim:
    """A signed rebuild attestation, parsed."""

    statement: Statement
    attribution: Attribution
    step: str
    rebuilt_payload_sha256: str
    results: tuple[dict[str, Any], ...]
    drift: tuple[dict[str, Any], ...]

    @property
    def source(self) -> str:
        return self.statement.source


def as_rebuild(statement: Statement, attribution: Attribution) -> RebuildClaim:
    """Read a rebuild predicate; InputError says what is malformed."""
    source = statement.source
    predicate = statement.predicate
    step = predicate.get("step")
    rebuilt = predicate.get("rebuiltAttestation")
    results = predicate.get("results")
    if not isinstance(step, str) or not isinstance(rebuilt, dict):
        raise InputError(f"{source}: rebuild predicate has no step or rebuiltAttestation.")
    digest = rebuilt.get("digest")
    if not isinstance(digest, dict) or not isinstance(digest.get("sha256"), str):
        raise InputError(f"{source}: rebuiltAttestation has no sha256 digest.")
    if not isinstance(results, list) or not all(_is_result(r) for r in results):
        raise InputError(f"{source}: rebuild predicate has malformed results.")
    drift = predicate.get("drift", [])
    return RebuildClaim(
        statement=statement,
        attribution=attribution,
        step=step,
        rebuilt_payload_sha256=digest["sha256"],
        results=tuple(results),
        drift=tuple(d for d in drift if isinstance(d, dict)) if isinstance(drift, list) else (),
    )


# Tensor fields a rebuild result's diff carries that judgement and reports read, by type.
_TENSOR_NUMBERS = ("max_abs_diff", "max_rel_diff", "mean_abs_diff", "rel_l2", "cosine",
                   "median_ulp", "bit_equal_fraction")


def _is_number_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _is_result(result: Any) -> bool:
    """One entry of a rebuild's results, every field the quorum or a report reads checked:
    name, verdict, expected and actual digest sets, and the diff's tensors and metrics."""
    if not (isinstance(result, dict) and isinstance(result.get("name"), str)
            and result.get("verdict") in VERDICTS and is_digest_set(result.get("expected"))):
        return False
    actual = result.get("actual")
    if actual is not None and not is_digest_set(actual):
        return False
    diff = result.get("diff")
    if diff is None:
        return True
    if not isinstance(diff, dict) or not isinstance(diff.get("kind", ""), str):
        return False
    offset = diff.get("first_difference_offset")
    if offset is not None and (not isinstance(offset, int) or isinstance(offset, bool)):
        return False
    tensors = diff.get("tensors", [])
    return isinstance(tensors, list) and all(
        isinstance(t, dict) and isinstance(t.get("name"), str)
        and isinstance(t.get("status"), str)
        and all(_is_number_or_none(t.get(k)) for k in _TENSOR_NUMBERS)
        for t in tensors)


@dataclass
class StepQuorum:
    step: str
    attestation: str
    quorum: int
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    dissent: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "attestation": self.attestation, "quorum": self.quorum,
            "matched": self.matched, "missing": self.missing, "dissent": self.dissent,
            "ignored": self.ignored, "failures": self.failures,
        }


def _same(a: dict[str, str] | None, b: dict[str, str] | None) -> bool:
    """Two digest sets agree: they share an algorithm and agree on every shared one."""
    if not a or not b:
        return False
    shared = set(a) & set(b)
    return bool(shared) and all(a[k] == b[k] for k in shared)


def _within_tolerance(name: str, result: dict[str, Any], tolerance: Tolerance) -> bool:
    """A tolerance applies to tensor files alone: a product named *.safetensors that the
    rebuilder's diff read as safetensors, every tensor present on both sides with its dtype and
    shape, and every changed tensor's metrics inside the tolerance."""
    from verifier.tensordiff import within_tolerance

    diff = result.get("diff")
    if not name.endswith(".safetensors"):
        return False
    if not isinstance(diff, dict) or diff.get("kind") != "safetensors":
        return False
    tensors = diff.get("tensors")
    if not isinstance(tensors, list):
        return False
    for tensor in tensors:
        if not isinstance(tensor, dict):
            return False
        if tensor.get("status") == "equal":
            continue
        if tensor.get("status") != "changed":
            return False  # added, removed, dtype or shape differs: never a tolerance question
        if not within_tolerance(tensor.get("max_abs_diff"), tensor.get("max_rel_diff"),
                                tolerance.rtol, tolerance.atol):
            return False
    return True


def check_claim(record: StepRecord, claim: RebuildClaim, tolerance: Tolerance | None
                ) -> list[dict[str, Any]]:
    """The products the claim did not reproduce (empty when it matches), with why."""
    results = {r["name"]: r for r in claim.results}
    signed_subjects = claim.statement.subject_digests()
    mismatches: list[dict[str, Any]] = []
    for product in record.products:
        name, expected = product["name"], product["digest"]
        result = results.get(name)
        if result is None:
            mismatches.append({"name": name, "verdict": "MISSING"})
            continue
        actual = result.get("actual")
        if not _same(result.get("expected"), expected):
            mismatches.append({"name": name, "verdict": "DIVERGED",
                               "reason": "the rebuild compared against another digest"})
        elif _same(actual, expected) and _same(signed_subjects.get(name), expected):
            continue
        elif tolerance is not None and "dirHash" in expected:
            continue  # a directory's files are judged one by one
        elif (tolerance is not None and _same(signed_subjects.get(name), actual)
              and _within_tolerance(name, result, tolerance)):
            continue
        else:
            mismatches.append(_dissent_detail(name, result))
    return mismatches


def _dissent_detail(name: str, result: dict[str, Any]) -> dict[str, Any]:
    detail: dict[str, Any] = {"name": name, "verdict": result.get("verdict", "DIVERGED")}
    diff = result.get("diff")
    if isinstance(diff, dict):
        tensors = [t for t in diff.get("tensors", []) if isinstance(t, dict)
                   and t.get("status") != "equal"]
        if tensors:
            detail["tensors"] = [
                {k: t.get(k) for k in ("name", "status", "max_abs_diff", "rel_l2")}
                for t in tensors[:5]
            ]
            detail["changed_tensors"] = len(tensors)
        if diff.get("first_difference_offset") is not None:
            detail["first_difference_offset"] = diff["first_difference_offset"]
    return detail


def _unrelated(claim: RebuildClaim, record: StepRecord) -> str | None:
    """None when the claim rebuilt exactly this step attestation; otherwise why it counts for
    nothing here ("" when it concerns another step altogether, reported under that step)."""
    same_payload = claim.rebuilt_payload_sha256 == record.statement.payload_sha256
    if claim.step == record.step and same_payload:
        return None
    if same_payload:
        return (f"{claim.source}: names step {claim.step!r} but the attestation of step "
                f"{record.step!r} ({record.source}); it counts for nothing.")
    if claim.step == record.step:
        return (f"{claim.source}: rebuilt another attestation of step {record.step!r} "
                f"(payload sha256 {claim.rebuilt_payload_sha256[:16]}…), not {record.source}; "
                "it counts for nothing.")
    return ""


def evaluate_quorum(
    policy: Policy,
    chain: list[tuple[StepRecord, Attribution]],
    claims: list[RebuildClaim],
    signers: TrustedSigners,
) -> list[StepQuorum]:
    """One StepQuorum per step the policy's rebuild section lists."""
    rule = policy.rebuild
    if rule is None:
        return []
    outcomes: list[StepQuorum] = []
    for step_name in rule.steps:
        entry = next(((r, a) for r, a in chain if r.step == step_name), None)
        if entry is None:
            continue  # a missing step is already a problem of its own
        record, step_attribution = entry
        outcome = StepQuorum(step_name, record.source, rule.quorum)
        matched: dict[str, str] = {}
        dissenting: dict[str, str] = {}
        for claim in claims:
            unrelated = _unrelated(claim, record)
            if unrelated is not None:
                if unrelated:
                    outcome.ignored.append(unrelated)
                continue
            names = [n for n in claim.attribution.names if n in rule.rebuilders]
            if not names:
                outcome.ignored.append(
                    f"{claim.source}: signed by {', '.join(claim.attribution.names)}, "
                    "not a rebuilder the policy names."
                )
                continue
            if set(claim.attribution.identities) & set(step_attribution.identities):
                outcome.ignored.append(
                    f"{claim.source}: signed by the step's own signer, which never counts as "
                    "an independent rebuild."
                )
                continue
            identity = claim.attribution.identities[0]
            mismatches = check_claim(record, claim, rule.match.get(step_name))
            if not mismatches:
                matched.setdefault(identity, names[0])
            else:
                dissenting.setdefault(identity, names[0])
                outcome.dissent.append({
                    "rebuilder": names[0], "attestation": claim.source, "files": mismatches,
                    "drift": list(claim.drift[:8]),
                })
        outcome.matched = sorted(set(matched.values()))
        step_identities = set(step_attribution.identities)
        counted = {signers.identity_of(n) for n in outcome.matched}
        outcome.missing = sorted(
            n for n in rule.rebuilders
            if signers.identity_of(n) not in counted | step_identities
        )
        if len(matched) < rule.quorum:
            outcome.failures.append(
                f"{record.source}: step {step_name!r} has {len(matched)} of {rule.quorum} "
                f"required independent matching rebuilds "
                f"({', '.join(outcome.matched) or 'none'}); missing: "
                f"{', '.join(outcome.missing) or 'no other rebuilder is named in the policy'}."
            )
        if rule.max_dissent is not None and len(dissenting) > rule.max_dissent:
            outcome.failures.append(
                f"{record.source}: step {step_name!r} has {len(dissenting)} dissenting "
                f"rebuilds, more than max_dissent {rule.max_dissent}."
            )
        outcomes.append(outcome)
    return outcomes
