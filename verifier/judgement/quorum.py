"""k-of-n rebuild quorum: how many independent rebuilders reproduced each attested step.

A rebuild counts for a step when it names that exact step attestation (by the sha256 of its
DSSE payload), is signed by a rebuilder the policy names who did not sign the step itself, and
every attested product was reproduced (bit for bit, or within the policy's tolerance for tensor
files). Identities are counted, not names or files: one key listed under two names, or one
rebuilder attesting twice, counts once. A rebuilder who attests a mismatch is signed dissent:
reported with file and tensor, and failing the step only beyond `max_dissent`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from verifier.diff.drift import likely_cause, order_drift
from verifier.errors import InputError
from verifier.formats.digest import BASE_DIGESTS, OPT_IN_DIGESTS, dir_hash
from verifier.formats.statement import Statement, StepRecord, is_digest_set
from verifier.judgement import declarations
from verifier.judgement.hermetic import rebuild_isolation_problem

if TYPE_CHECKING:
    from verifier.judgement.policy import Policy, ProductRule, StepMatch, Tolerance
    from verifier.judgement.trust import Attribution

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
    # Variables the rebuilder set with --env instead of the recorded ones: a deliberate probe of
    # sensitivity, never a rerun of the record (attestations/rebuild-predicate.md).
    env_overrides: tuple[tuple[str, str], ...] = ()
    # The modules the step's code imports, as the rebuilder read them: ranks the drift.
    imports: tuple[str, ...] = ()

    @property
    def is_probe(self) -> bool:
        return bool(self.env_overrides)

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
    overrides = predicate.get("envOverrides", {})
    if not isinstance(overrides, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in overrides.items()):
        raise InputError(f"{source}: envOverrides is not a map of variable names to values.")
    return RebuildClaim(
        statement=statement,
        attribution=attribution,
        step=step,
        rebuilt_payload_sha256=digest["sha256"],
        results=tuple(results),
        drift=tuple(d for d in drift if isinstance(d, dict)) if isinstance(drift, list) else (),
        env_overrides=tuple(sorted(overrides.items())),
        imports=_imports(predicate.get("imports")),
    )


def _imports(value: Any) -> tuple[str, ...]:
    """The predicate's imports, when it is a list of module names (else none: it only orders
    the drift, so a malformed one costs a ranking, not the rebuild)."""
    if not isinstance(value, list):
        return ()
    return tuple(m for m in value[:1000] if isinstance(m, str) and 0 < len(m) <= 100)


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
    """The rebuilds of one step attestation, judged. `counted` is the one count: what is
    printed and what is compared with the quorum are both its length."""

    step: str
    attestation: str
    payload_sha256: str
    quorum: int
    counted: list[dict[str, str]] = field(default_factory=list)  # rebuilder, identity, file
    missing: list[str] = field(default_factory=list)
    dissent: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    # Products the policy calls informational that a counted or dissenting rebuild did not
    # reproduce bit for bit: reported, never a match or dissent.
    informational: list[dict[str, Any]] = field(default_factory=list)
    # "replay" for a segment-replay quorum (verifier.judgement.replay), with its one-line
    # account in `summary`; a whole rebuild's quorum otherwise.
    kind: str = "rebuild"
    summary: str = ""

    @property
    def matched(self) -> list[str]:
        return sorted(c["rebuilder"] for c in self.counted)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "attestation": self.attestation,
            "payload_sha256": self.payload_sha256, "quorum": self.quorum,
            "matching": len(self.counted), "matched": self.matched, "counted": self.counted,
            "missing": self.missing, "dissent": self.dissent, "probes": self.probes,
            "ignored": self.ignored, "failures": self.failures,
            "informational": self.informational,
            **({"kind": self.kind} if self.kind != "rebuild" else {}),
            **({"summary": self.summary} if self.summary else {}),
        }


def _same(a: dict[str, str] | None, b: dict[str, str] | None) -> bool:
    """Two digest sets agree: they share a strong algorithm and agree on every shared one
    (weak or unknown algorithms are ignored: an md5 match proves nothing)."""
    if not a or not b:
        return False
    strong = set(BASE_DIGESTS) | set(OPT_IN_DIGESTS)
    shared = set(a) & set(b) & strong
    return bool(shared) and all(a[k] == b[k] for k in shared)


# The only tensor dtypes a tolerance is for: a changed integer, boolean, F8 or packed
# (quantized) tensor holds other values, not rounded ones, whatever its metrics say.
TOLERANT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})


def _within_tolerance(name: str, result: dict[str, Any], tolerance: Tolerance) -> bool:
    """A tolerance applies to tensor files alone: a product named *.safetensors that the
    rebuilder's diff read as safetensors, every tensor present on both sides with its dtype and
    shape, and every changed tensor a floating-point one whose metrics are inside the
    tolerance."""
    from verifier.diff.tensordiff import within_tolerance

    diff = result.get("diff")
    if not name.endswith(".safetensors"):
        return False
    if not isinstance(diff, dict) or diff.get("kind") != "safetensors":
        return False
    if (diff.get("metadata_a") or {}) != (diff.get("metadata_b") or {}):
        return False  # __metadata__ is read by loaders: no tolerance covers a change there
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
        if tensor.get("dtype_a") not in TOLERANT_DTYPES or tensor.get("dtype_b") != tensor.get(
                "dtype_a"):
            return False
        if not within_tolerance(tensor.get("max_abs_diff"), tensor.get("max_rel_diff"),
                                tolerance.rtol, tolerance.atol):
            return False
    return True


def _within_json_tolerance(result: dict[str, Any], tolerance: Tolerance) -> bool:
    """A JSON tolerance, judged from the rebuilder's signed diff alone: both sides read as JSON,
    the same structure, every non-numeric value equal, and the numbers within the tolerance
    (by the same sound bound as tensors: max abs <= atol or max rel <= rtol)."""
    from verifier.diff.tensordiff import within_tolerance

    diff = result.get("diff")
    if not isinstance(diff, dict) or diff.get("kind") != "json":
        return False
    summary = diff.get("json")
    if not isinstance(summary, dict) or summary.get("structure_equal") is not True:
        return False
    if summary.get("other_differences") != 0:
        return False
    if summary.get("numbers_differing") == 0:
        return True
    # A differing integer (a token id, a count) is never within a tolerance; a diff that does
    # not say how many integers differ (written before it was counted) proves nothing.
    if summary.get("integers_differing") != 0:
        return False
    return within_tolerance(_number(summary.get("max_abs_diff")),
                            _number(summary.get("max_rel_diff")), tolerance.rtol, tolerance.atol)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


@dataclass
class ClaimOutcome:
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    informational: list[dict[str, Any]] = field(default_factory=list)
    # Products judged by a rule that can fail (not informational): with none, the rebuild
    # reproduced nothing that was checked, and it counts for nothing.
    judged: int = 0


def _rule_for(match: StepMatch | None, name: str) -> ProductRule | None:
    return None if match is None else match.rule_for(name)


def judge_claim(record: StepRecord, claim: RebuildClaim, match: StepMatch | None,
                consumed: frozenset[str] = frozenset()) -> ClaimOutcome:
    """Each product of the step attestation judged by its rule: the ones the claim did not
    reproduce, with why, and the informational ones that differ (reported only). A product in
    `consumed` (another step uses it as a material) carries its bytes into the model, so it is
    judged exactly whatever the policy calls it."""
    results = {r["name"]: r for r in claim.results}
    signed_subjects = claim.statement.subject_digests()
    outcome = ClaimOutcome()
    tolerant = match is not None and not match.all_exact
    for product in record.products:
        name, expected = product["name"], product["digest"]
        rule = _rule_for(match, name)
        if rule is not None and rule.kind == "informational" and name in consumed:
            rule = replace(rule, kind="exact")
        kind = rule.kind if rule is not None else "exact"
        outcome.judged += kind != "informational"
        result = results.get(name)
        if result is None:
            missing = {"name": name, "verdict": "MISSING"}
            (outcome.informational if kind == "informational" else outcome.mismatches).append(
                missing)
            continue
        actual = result.get("actual")
        if not _same(result.get("expected"), expected):
            outcome.mismatches.append({"name": name, "verdict": "DIVERGED",
                                       "reason": "the rebuild compared against another digest"})
        elif _same(actual, expected) and _same(signed_subjects.get(name), expected):
            continue
        elif tolerant and "dirHash" in expected and _lists_all_files(record, name, expected):
            continue  # its files, every one listed, are judged one by one
        elif kind == "informational":
            outcome.informational.append(_dissent_detail(name, result))
        elif (rule is not None and rule.tolerance is not None
              and _same(signed_subjects.get(name), actual)
              and (_within_tolerance(name, result, rule.tolerance) if kind == "tensors"
                   else _within_json_tolerance(result, rule.tolerance))):
            continue
        else:
            outcome.mismatches.append(_dissent_detail(name, result))
    # The record-digest files the step signed (what `contamination` trusts) are judged exactly,
    # as products: a rebuild that did not compute the same file does not reproduce the step.
    for declared in declarations.read(record).record_digests:
        name = declarations.RECORD_DIGESTS_PREFIX + declared.name
        expected = {"sha256": declared.value}
        result = results.get(name)
        outcome.judged += 1
        if result is None:
            outcome.mismatches.append({"name": name, "verdict": "MISSING"})
        elif not (_same(result.get("expected"), expected) and _same(result.get("actual"),
                                                                      expected)):
            outcome.mismatches.append(_dissent_detail(name, result))
    return outcome


def _lists_all_files(record: StepRecord, directory: str, digest: dict[str, str]) -> bool:
    """Whether the step attestation lists every file of a directory product: the files it
    names under the directory add up to the directory's dirHash."""
    prefix = f"{directory}/"
    files = {p["name"][len(prefix):]: p["digest"].get("sha256") for p in record.products
             if p["name"].startswith(prefix) and "dirHash" not in p["digest"]}
    return bool(files) and all(isinstance(v, str) for v in files.values()) and dir_hash(
        {k: str(v) for k, v in files.items()}) == digest["dirHash"]


def check_claim(record: StepRecord, claim: RebuildClaim, match: StepMatch | None
                ) -> list[dict[str, Any]]:
    """The products the claim did not reproduce (empty when it matches), with why;
    informational products are never among them."""
    return judge_claim(record, claim, match).mismatches


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
        summary = diff.get("json")
        if diff.get("kind") == "json" and isinstance(summary, dict):
            detail["json"] = {k: summary.get(k) for k in (
                "structure_equal", "first_structural_difference", "numbers_differing",
                "integers_differing", "max_abs_diff", "max_rel_diff", "first_number_difference",
                "other_differences", "first_other_difference")}
    return detail


IGNORED_KEPT = 20  # "counted for nothing" sentences kept per step attestation


def is_replay(claim: RebuildClaim) -> bool:
    """A segment replay (judged by rebuild.replay), not a whole rebuild (judged by
    rebuild.steps)."""
    return "replay" in claim.statement.predicate


def independent_rebuilders(claim: RebuildClaim, listed: Iterable[str],
                           step_attribution: Attribution
                           ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (name, identity) pairs of a claim's signers that the policy lists as rebuilders,
    and of those the ones independent of the step: whoever signed the step never rebuilds or
    replays it independently, not under its identity and not under a name that signed it.
    One rule for whole rebuilds and segment replays."""
    names = set(listed)
    rebuilders = [(n, i) for n, i in claim.attribution.pairs if n in names]
    step_identities, step_names = set(step_attribution.identities), set(step_attribution.names)
    eligible = [(n, i) for n, i in rebuilders
                if i not in step_identities and n not in step_names]
    return rebuilders, eligible


def judge_rebuilds(
    record: StepRecord,
    step_attribution: Attribution,
    claims: list[RebuildClaim],
    policy: Policy,
    consumed: frozenset[str] = frozenset(),
) -> StepQuorum:
    """Judge the rebuild claims naming this step attestation (by payload digest) against the
    policy's rebuild rule; claims of the same step name that rebuilt another attestation are
    only reported. Each claim counts for at most one rebuilder, each rebuilder identity
    at most once, and only rebuilders the policy lists who did not sign the step themselves.
    `consumed`: the products later steps use as materials (judged exactly, see judge_claim)."""
    rule = policy.rebuild
    assert rule is not None
    outcome = StepQuorum(record.step, record.source, record.statement.payload_sha256,
                         rule.quorum)
    step_names = set(step_attribution.names)
    # (claim, its eligible (name, identity) pairs, whether it matched)
    judged_claims: list[tuple[RebuildClaim, list[tuple[str, str]], bool]] = []
    heard_from: set[str] = set()
    for claim in sorted(claims, key=lambda c: c.source):
        if is_replay(claim):
            continue  # a segment replay: judged by rebuild.replay (verifier.judgement.replay)
        if claim.rebuilt_payload_sha256 != record.statement.payload_sha256:
            _ignore(outcome, f"{claim.source}: rebuilt another attestation of step "
                             f"{record.step!r} (payload sha256 "
                             f"{claim.rebuilt_payload_sha256[:16]}…), not {record.source}; it "
                             "counts for nothing.")
            continue
        if claim.step != record.step:
            _ignore(outcome, f"{claim.source}: names step {claim.step!r} but the attestation "
                             f"of step {record.step!r} ({record.source}); it counts for nothing.")
            continue
        rebuilders, eligible = independent_rebuilders(claim, rule.rebuilders, step_attribution)
        heard_from.update(n for n, _ in rebuilders)
        if not rebuilders:
            _ignore(outcome, f"{claim.source}: signed by {', '.join(claim.attribution.names)}, "
                             "not a rebuilder the policy names.")
            continue
        if not eligible:
            _ignore(outcome, f"{claim.source}: signed by the step's own signer, which never "
                             "counts as an independent rebuild.")
            continue
        isolation = rule.require_sandbox and rebuild_isolation_problem(claim)
        if isolation:
            _ignore(outcome, f"{claim.source}: {isolation}")
            continue
        who = ", ".join(sorted({n for n, _ in eligible}))
        judged = judge_claim(record, claim, rule.match.get(record.step), consumed)
        if not judged.judged and not claim.is_probe:
            _ignore(outcome, f"{claim.source}: every product of step {record.step!r} is "
                             "informational under the policy, so the rebuild reproduced nothing "
                             "that was checked; it counts for nothing.")
            continue
        if claim.is_probe:
            outcome.probes.append({
                "rebuilder": who, "attestation": claim.source,
                "overrides": dict(claim.env_overrides), "files": judged.mismatches,
            })
            continue
        mismatches = judged.mismatches
        if judged.informational:
            outcome.informational.append({"rebuilder": who, "attestation": claim.source,
                                          "files": judged.informational})
        if mismatches:
            outcome.dissent.append({"rebuilder": who, "attestation": claim.source,
                                    "files": mismatches,
                                    "drift": order_drift(claim.drift, claim.imports)[:8],
                                    "cause": likely_cause(claim.drift, claim.imports)})
        judged_claims.append((claim, eligible, not mismatches))
    rebuilder_of = _rebuilders([pairs for _, pairs, _ in judged_claims])
    dissenting = {rebuilder_of[n] for _, pairs, matched in judged_claims if not matched
                  for n, _ in pairs}
    matching = [(claim, {rebuilder_of[n]: (n, i) for n, i in sorted(pairs)})
                for claim, pairs, matched in judged_claims if matched]
    for claim, rebuilder in _assign(matching):
        name, identity = next(e[rebuilder] for c, e in matching if c is claim)
        outcome.counted.append({"rebuilder": name, "identity": identity,
                                "attestation": claim.source})
    outcome.counted.sort(key=lambda c: c["rebuilder"])
    outcome.missing = sorted(n for n in rule.rebuilders
                             if n not in heard_from and n not in step_names)
    if len(outcome.counted) < rule.quorum:
        outcome.failures.append(
            f"{record.source}: step {record.step!r} has {len(outcome.counted)} of {rule.quorum} "
            f"required independent matching rebuilds "
            f"({', '.join(outcome.matched) or 'none'}); {_short_of(outcome, heard_from)}."
        )
    if rule.max_dissent is not None and len(dissenting) > rule.max_dissent:
        outcome.failures.append(
            f"{record.source}: step {record.step!r} has {len(dissenting)} dissenting "
            f"rebuilders, more than max_dissent {rule.max_dissent}."
        )
    return outcome


def _short_of(outcome: StepQuorum, heard_from: set[str]) -> str:
    """Why a step has too few matching rebuilds: who dissented (and the likely cause, the
    first drift by what the step imports), whose rebuild counted for nothing, who sent none."""
    parts = []
    for entry in outcome.dissent:
        files = ", ".join(f"{f['name']} {f['verdict']}" for f in entry["files"][:3])
        more = f" and {len(entry['files']) - 3} more" if len(entry["files"]) > 3 else ""
        cause = (f"; likely cause: {entry['cause']}" if entry.get("cause")
                 else "; no environment difference recorded")
        parts.append(f"{entry['rebuilder']} dissented ({files}{more}{cause})")
    named = {n for c in outcome.counted for n in (c["rebuilder"],)}
    named |= {n for e in outcome.dissent for n in e["rebuilder"].split(", ")}
    named |= {n for p in outcome.probes for n in p["rebuilder"].split(", ")}
    uncounted = sorted(heard_from - named)
    if uncounted:
        parts.append(f"{', '.join(uncounted)} sent a rebuild that counts for nothing (see why "
                     "among the ignored rebuilds)")
    if outcome.probes:
        parts.append(f"{', '.join(sorted({p['rebuilder'] for p in outcome.probes}))} sent only "
                     "a probe (--env), which never counts")
    if outcome.missing:
        parts.append(f"missing: {', '.join(outcome.missing)}")
    return "; ".join(parts) or "missing: no other rebuilder named in the policy"


def _ignore(outcome: StepQuorum, sentence: str) -> None:
    if len(outcome.ignored) < IGNORED_KEPT:
        outcome.ignored.append(sentence)
    elif len(outcome.ignored) == IGNORED_KEPT:
        outcome.ignored.append("… and more rebuild attestations that count for nothing.")


def _rebuilders(claims: list[list[tuple[str, str]]]) -> dict[str, str]:
    """Each rebuilder name's rebuilder: names that verified under one identity anywhere are
    one rebuilder, and so are the identities one name verified under (a pattern matching two
    workflows, one key under two names, one certificate named by subject and by SAN). Returns
    name -> a representative name (union-find over the name-identity graph)."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for pairs in claims:
        for name, identity in pairs:
            a, b = find(f"name:{name}"), find(f"identity:{identity}")
            if a != b:
                parent[max(a, b)] = min(a, b)
    names = {name for pairs in claims for name, _ in pairs}
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(find(f"name:{name}"), []).append(name)
    return {name: min(members) for members in groups.values() for name in members}


def _assign(pairs: list[tuple[RebuildClaim, dict[str, Any]]]) -> list[tuple[RebuildClaim, str]]:
    """The largest set of (claim, rebuilder) pairs in which no claim and no rebuilder appears
    twice: a maximum bipartite matching, found by augmenting paths (Kuhn's algorithm). One
    bundle co-signed by two rebuilders is one rebuild; one rebuilder who sent two is one."""
    owner: dict[str, int] = {}  # identity -> index of the claim it counts for

    def augment(index: int, seen: set[str]) -> bool:
        for identity in sorted(pairs[index][1]):
            if identity in seen:
                continue
            seen.add(identity)
            if identity not in owner or augment(owner[identity], seen):
                owner[identity] = index
                return True
        return False

    for index in range(len(pairs)):
        augment(index, set())
    return sorted(((pairs[i][0], identity) for identity, i in owner.items()),
                  key=lambda p: p[0].source)
