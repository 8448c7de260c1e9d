"""verify-model: does an artifact's whole build chain satisfy the policy?

The chain is walked from the artifact back to its sources by digest alone: the artifact must be
a subject of an attestation of a final step, every material of every step must be a product of
an attested earlier step or a source the policy names, every step must be signed by the signer
the policy names for it, and (with a `rebuild` section) enough independent rebuilders must have
reproduced the listed steps. Every problem is collected; none stops the walk.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.digest import OPT_IN_DIGESTS, Hasher, PathDigest
from verifier.envelope import INTOTO_PAYLOAD_TYPE, Bundle
from verifier.errors import InputError
from verifier.evidence import attestation_files as attestation_files  # audit imports it here
from verifier.evidence import load_bundles
from verifier.policy import Policy, SourceRule
from verifier.quorum import RebuildClaim, StepQuorum, as_rebuild, evaluate_quorum
from verifier.statement import (
    REBUILD_PREDICATE_TYPE,
    StepRecord,
    as_step,
    parse_statement,
)
from verifier.trust import Attribution, TrustedSigners


@dataclass(frozen=True)
class Problem:
    file: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "message": self.message}


@dataclass
class SignedStep:
    record: StepRecord
    attribution: Attribution


@dataclass
class Report:
    artifact: str
    digest: dict[str, str]
    policy: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    rebuilds: list[StepQuorum] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    oms: list[dict[str, Any]] = field(default_factory=list)  # OMS model.sig evidence

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": "PASS" if self.passed else "FAIL",
            "artifact": self.artifact,
            "digest": self.digest,
            "policy": self.policy,
            "steps": self.steps,
            "sources": self.sources,
            "rebuilds": [q.to_dict() for q in self.rebuilds],
            "problems": [p.to_dict() for p in self.problems],
            "notes": self.notes,
            "oms": self.oms,
        }


class _Chain:
    """The attestations a policy trusts, indexed for a walk by digest."""

    def __init__(self, policy: Policy, signers: TrustedSigners, bundles: list[Bundle],
                 report: Report) -> None:
        self.policy = policy
        self.report = report
        self.steps: list[SignedStep] = []
        self.rebuilds: list[RebuildClaim] = []
        self.by_digest: dict[tuple[str, str], list[SignedStep]] = {}
        # Subjects claimed by bundles no policy signer verifies: never trusted, only used to
        # tell the user which file would have accounted for an input had it been signed.
        self.unverified_claims: dict[tuple[str, str], list[str]] = {}
        for bundle in bundles:
            self._admit(bundle, signers)

    def _admit(self, bundle: Bundle, signers: TrustedSigners) -> None:
        if bundle.payload_type != INTOTO_PAYLOAD_TYPE:
            self.report.notes.append(
                f"ignored {bundle.source}: payload type {bundle.payload_type!r} is not in-toto."
            )
            return
        attribution = signers.attribute(bundle)
        if not attribution.names:
            self.report.notes.append(
                f"ignored {bundle.source}: signed by no signer the policy names."
            )
            self._remember_unverified(bundle)
            return
        try:
            statement = parse_statement(bundle.payload, bundle.source)
            if statement.predicate_type == REBUILD_PREDICATE_TYPE:
                self.rebuilds.append(as_rebuild(statement, attribution))
                return
            record = as_step(statement)
        except InputError as error:
            self.report.notes.append(f"ignored {error}")
            return
        signed = SignedStep(record, attribution)
        self.steps.append(signed)
        for subject in record.products:
            for algorithm, value in subject["digest"].items():
                self.by_digest.setdefault((algorithm, value), []).append(signed)

    def _remember_unverified(self, bundle: Bundle) -> None:
        try:
            statement = parse_statement(bundle.payload, bundle.source)
        except InputError:
            return
        for subject in statement.subjects:
            for algorithm, value in subject["digest"].items():
                claimed = self.unverified_claims.setdefault((algorithm, value), [])
                if bundle.source not in claimed:
                    claimed.append(bundle.source)

    def unverified_producers(self, digest: dict[str, str]) -> list[str]:
        """Files of unverified bundles claiming this digest as a subject (for messages)."""
        found: list[str] = []
        for algorithm, value in sorted(digest.items()):
            found.extend(s for s in self.unverified_claims.get((algorithm, value), [])
                         if s not in found)
        return found

    def producers(self, digest: dict[str, str]) -> list[SignedStep]:
        """Attested steps with a subject matching this digest set: on a digest the policy
        accepts (blake3 only where it opts in), and agreeing on every accepted one they share."""
        usable = {a: v for a, v in digest.items()
                  if a not in OPT_IN_DIGESTS or a in self.policy.accept_digests}
        found: list[SignedStep] = []
        for algorithm, value in sorted(usable.items()):
            for candidate in self.by_digest.get((algorithm, value), []):
                if candidate not in found and any(
                    subject["digest"].get(algorithm) == value
                    and all(subject["digest"].get(a, v) == v for a, v in usable.items())
                    for subject in candidate.record.products
                ):
                    found.append(candidate)
        return found


def _signed_as_required(policy: Policy, signed: SignedStep) -> bool:
    rule = policy.step(signed.record.step)
    return rule is not None and bool(set(rule.signed_by) & set(signed.attribution.names))


def _prefer_required(policy: Policy, candidates: list[SignedStep]) -> list[SignedStep]:
    """Candidates signed as the policy requires first; the others are kept so that the walk can
    say who signed them instead of calling the input unaccounted for."""
    return sorted(candidates, key=lambda s: not _signed_as_required(policy, s))


def _artifact_mismatch(artifact: Path, digest: PathDigest, chain: _Chain,
                       final_names: list[str]) -> str:
    """Explain, file by file, how the artifact differs from what the final step attested."""
    finals = [s for s in chain.steps if s.record.step in final_names]
    for signed in finals:
        subjects = signed.record.statement.subject_digests()
        if not digest.is_dir:
            for name, recorded in subjects.items():
                if Path(name).name == artifact.name and "sha256" in recorded:
                    return (
                        f"{artifact}: no longer matches: step {signed.record.step!r} "
                        f"({signed.record.source}) attested {name} with sha256 "
                        f"{recorded['sha256'][:16]}…, the file has {digest.sha256[:16]}…."
                    )
        else:
            best = _closest_directory(subjects, digest.files)
            if best is not None:
                name, expected = best
                changed = sorted(n for n in set(expected) | set(digest.files)
                                 if expected.get(n) != digest.files.get(n))
                return (
                    f"{artifact}: no longer matches what step {signed.record.step!r} "
                    f"({signed.record.source}) attested for {name}: "
                    f"{', '.join(changed[:10])} differ{'s' if len(changed) == 1 else ''}."
                )
    unverified = chain.unverified_producers({digest.algorithm: digest.value})
    if unverified:
        return (
            f"{artifact}: is a subject only of {', '.join(unverified)}, whose signature verifies "
            "under no key the policy names (an unknown signer, or altered after signing)."
        )
    return (
        f"{artifact}: its {digest.algorithm} {digest.value[:16]}… is no subject of any "
        f"attestation of the final step ({', '.join(final_names)}) signed as the policy requires."
    )


def _closest_directory(subjects: dict[str, dict[str, str]], files: dict[str, str]
                       ) -> tuple[str, dict[str, str | None]] | None:
    """The attested directory sharing most file names with the artifact (for the message)."""
    best: tuple[int, str, dict[str, str | None]] | None = None
    for name, recorded in subjects.items():
        if "dirHash" not in recorded:
            continue
        prefix = f"{name}/"
        expected = {n[len(prefix):]: d.get("sha256") for n, d in subjects.items()
                    if n.startswith(prefix)}
        overlap = len(set(expected) & set(files))
        if best is None or overlap > best[0]:
            best = (overlap, name, expected)
    return None if best is None else (best[1], best[2])


def match_source(policy: Policy, record: StepRecord, material: dict[str, Any]
                  ) -> tuple[SourceRule | None, str | None]:
    """The source rule that accounts for a material, or a sentence saying why none does."""
    name = material["name"]
    digest = material["digest"]
    why_not: str | None = None
    for rule in policy.sources:
        if not rule.matches_name(name):
            continue
        if rule.sha256 is not None:
            if digest.get("sha256") == rule.sha256:
                return rule, None
            why_not = (
                f"material {name} of step {record.step!r} ({record.source}) has sha256 "
                f"{str(digest.get('sha256'))[:16]}…, but the policy pins {rule.sha256[:16]}…."
            )
        elif rule.git_commit is not None:
            git = record.environment.get("git") or {}
            if str(git.get("commit", "")).startswith(rule.git_commit) and git.get("dirty") is False:
                return rule, None
            why_not = (
                f"material {name} of step {record.step!r} ({record.source}) must come from git "
                f"commit {rule.git_commit} on a clean tree, but the step recorded "
                f"{git.get('commit') or 'no commit'}{' (dirty)' if git.get('dirty') else ''}."
            )
        elif rule.unpinned:
            return rule, None
    return None, why_not


def _ancestors(start: SignedStep, parents: dict[int, list[SignedStep]]) -> set[str]:
    seen: set[int] = set()
    names: set[str] = set()
    pending = list(parents.get(id(start), []))
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        names.add(current.record.step)
        pending.extend(parents.get(id(current), []))
    return names


def artifact_algorithms(policy: Policy, artifact: Path) -> tuple[str, ...]:
    """What the artifact is hashed with first. A policy accepting blake3 lets a large file be
    checked by its parallel BLAKE3 digest alone (sha256 follows only if no attestation carries
    that BLAKE3 digest); a directory's dirHash is made of sha256 whatever the policy."""
    by_blake3 = "blake3" in policy.accept_digests and artifact.is_file()
    return ("blake3",) if by_blake3 else ("sha256",)


def verify_artifact(
    artifact: Path,
    policy: Policy,
    attestation_dirs: list[Path],
    *,
    keyless_check: Any = None,
    today: dt.date | None = None,
    hasher: Hasher | None = None,
) -> Report:
    """Verify one artifact (file or directory) against the policy and the attestations."""
    if not artifact.exists():
        raise InputError(f"{artifact}: no such file or directory to verify.")
    hasher = hasher or Hasher()
    digest = hasher.digest_paths([artifact], artifact_algorithms(policy, artifact))[0]
    report = Report(str(artifact), {digest.algorithm: digest.value}, str(policy.path))
    if policy.is_expired(today):
        report.problems.append(Problem(str(policy.path),
                                       f"{policy.path}: the policy expired on {policy.expires}."))
    if keyless_check is None:
        from verifier.keyless import check_keyless as keyless_check
    signers = TrustedSigners(policy, keyless_check)
    digest = add_oms_evidence(artifact, digest, lambda b: signers.attribute(b).names, report,
                              hasher)
    bundles = load_bundles(attestation_dirs, report.notes)
    chain = _Chain(policy, signers, bundles, report)

    final_names = [s.name for s in policy.final_steps()]
    finals = _prefer_required(policy, [
        s for s in chain.producers({digest.algorithm: digest.value})
        if s.record.step in final_names
    ])
    if not finals and digest.algorithm == "blake3":
        digest = hasher.digest_paths([artifact], ("sha256",))[0]
        report.digest = {digest.algorithm: digest.value}
        finals = _prefer_required(policy, [
            s for s in chain.producers({digest.algorithm: digest.value})
            if s.record.step in final_names
        ])
    if not finals:
        report.problems.append(Problem(str(artifact),
                                       _artifact_mismatch(artifact, digest, chain, final_names)))
        return report

    visited: dict[int, SignedStep] = {}
    parents: dict[int, list[SignedStep]] = {}
    pending = [finals[0]]
    while pending:
        current = pending.pop(0)
        if id(current) in visited:
            continue
        visited[id(current)] = current
        parents[id(current)] = _resolve_materials(policy, chain, current, report)
        pending.extend(parents[id(current)])

    ordered = sorted(visited.values(), key=lambda s: _order(policy, s.record.step))
    for signed in ordered:
        record = signed.record
        rule = policy.step(record.step)
        if rule is None:
            report.problems.append(Problem(record.source, (
                f"{record.source}: step {record.step!r} is in the chain but not in the policy."
            )))
        elif not _signed_as_required(policy, signed):
            report.problems.append(Problem(record.source, (
                f"{record.source}: step {record.step!r} is signed by "
                f"{', '.join(signed.attribution.names)}, but the policy requires "
                f"{' or '.join(rule.signed_by)}."
            )))
        else:
            ancestors = _ancestors(signed, parents)
            for earlier in rule.after:
                if earlier not in ancestors:
                    report.problems.append(Problem(record.source, (
                        f"{record.source}: step {record.step!r} must come after {earlier!r}, "
                        f"but none of its materials derives from an attested {earlier!r} step."
                    )))
        report.steps.append({
            "step": record.step,
            "attestation": record.source,
            "signed_by": list(signed.attribution.names),
            "payload_sha256": record.statement.payload_sha256,
            "argv": list(record.argv),
        })
    _report_missing_steps(policy, {s.record.step for s in ordered}, report, artifact)

    unpinned = sorted({s["name"] for s in report.sources if not s["pinned"]})
    if unpinned:
        report.notes.append(f"unpinned sources (allowed by the policy): {', '.join(unpinned)}.")
    if policy.rebuild is not None:
        for quorum in evaluate_quorum(policy, [(s.record, s.attribution) for s in ordered],
                                      chain.rebuilds, signers):
            report.rebuilds.append(quorum)
            report.problems.extend(Problem(quorum.attestation, message)
                                   for message in quorum.failures)
    elif chain.rebuilds:
        report.notes.append(
            f"{len(chain.rebuilds)} rebuild attestation(s) present; the policy has no rebuild "
            "section, so they were not counted."
        )
    return report


def _order(policy: Policy, step: str) -> int:
    names = [s.name for s in policy.steps]
    return names.index(step) if step in names else len(names)


def _report_missing_steps(policy: Policy, present: set[str], report: Report,
                          artifact: Path) -> None:
    for rule in policy.steps:
        if rule.name not in present:
            report.problems.append(Problem(str(artifact), (
                f"{artifact}: required step {rule.name!r} is missing from its chain "
                "(no attestation of it, signed as the policy requires, produced these inputs)."
            )))


def _resolve_materials(policy: Policy, chain: _Chain, current: SignedStep,
                       report: Report) -> list[SignedStep]:
    """Link each material to the attested step that produced it, or to a source rule."""
    record = current.record
    parents: list[SignedStep] = []
    covered_dirs: list[str] = []
    materials = sorted(record.materials, key=lambda m: ("dirHash" not in m["digest"], m["name"]))
    for material in materials:
        name = material["name"]
        if any(name.startswith(f"{d}/") for d in covered_dirs):
            continue
        producers = _prefer_required(
            policy, [p for p in chain.producers(material["digest"]) if p is not current]
        )
        if producers:
            chosen = producers[0]
            if chosen not in parents:
                parents.append(chosen)
            if "dirHash" in material["digest"]:
                covered_dirs.append(name)
            continue
        rule, why_not = match_source(policy, record, material)
        if rule is not None:
            if "dirHash" in material["digest"]:
                covered_dirs.append(name)
            report.sources.append({
                "name": name, "digest": material["digest"], "step": record.step,
                "pinned": not rule.unpinned, "rule": rule.describe(),
            })
            continue
        if "dirHash" in material["digest"]:
            continue  # its files are checked one by one
        unverified = chain.unverified_producers(material["digest"])
        if why_not is None and unverified:
            why_not = (
                f"material {name} of step {record.step!r} ({record.source}) is a product only "
                f"of {', '.join(unverified)}, whose signature verifies under no key the policy "
                "names (an unknown signer, or altered after signing)."
            )
        report.problems.append(Problem(record.source, why_not or (
            f"material {name} of step {record.step!r} ({record.source}) is neither a product "
            f"of an attested earlier step nor a source in the policy."
        )))
    return parents


def add_oms_evidence(artifact: Path, digest: PathDigest, attribute: Any, report: Report,
                     hasher: Hasher) -> PathDigest:
    """Report the OMS model.sig a directory carries; return the digest to compare (without it,
    since the signature is about the directory, not part of it: see verifier.oms)."""
    from verifier.oms import directory_evidence

    evidence = directory_evidence(artifact, digest, attribute, hasher)
    if evidence is None:
        return digest
    report.digest = {evidence.digest.algorithm: evidence.digest.value}
    report.oms.append(evidence.to_dict())
    report.problems.extend(Problem(evidence.source, message) for message in evidence.problems)
    report.notes.extend(evidence.notes)
    return evidence.digest
