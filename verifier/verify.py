"""verify-model: does an artifact's whole build chain satisfy the policy?

This module hashes the artifact, loads the attestations and shapes a report; the verdict itself
is `verifier.judgement`'s, the same evaluation `audit` renders. The artifact must be a subject
of a trusted attestation of a final step, every material of every step a product of a valid
attested earlier step or a source the policy names, every step signed by the signer the policy
names for it, and (with a `rebuild` section) every step attestation the policy requires rebuilt
reproduced by enough independent rebuilders. Every problem is collected; none stops the walk.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.digest import Hasher, PathDigest
from verifier.errors import InputError
from verifier.evidence import attestation_files as attestation_files  # audit imports it here
from verifier.evidence import load_bundles
from verifier.judgement import Evaluation, Problem, evaluate, match_source
from verifier.policy import Policy
from verifier.quorum import StepQuorum
from verifier.trust import TrustedSigners

__all__ = ["Problem", "Report", "load_bundles", "match_source", "verify_artifact"]


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
    # The evaluation and its ArtifactVerdict, for views of it (openness, contamination); not
    # serialised.
    evaluation: Evaluation | None = field(default=None, repr=False)
    verdict: Any = field(default=None, repr=False)
    # The attestation files the verdict rests on: the chain's steps and the rebuilds counted.
    evidence: list[str] = field(default_factory=list)

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


def _artifact_mismatch(artifact: Path, digest: PathDigest, chain: Evaluation,
                       final_names: list[str]) -> str:
    """Explain, file by file, how the artifact differs from what the final step attested."""
    finals = [s for s in chain.steps if s.trusted and s.record.step in final_names]
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
    if keyless_check is None:
        from verifier.keyless import check_keyless as keyless_check
    signers = TrustedSigners(policy, keyless_check)
    digest = add_oms_evidence(artifact, digest, lambda b: signers.attribute(b).names, report,
                              hasher)
    bundles = load_bundles(attestation_dirs, report.notes)
    evaluation = evaluate(policy, bundles, signers, today,
                          _read_links(attestation_dirs, report.notes))
    report.notes.extend(evaluation.notes)
    verdict = evaluation.artifact({digest.algorithm: digest.value}, str(artifact))
    if not verdict.finals and digest.algorithm == "blake3":
        digest = hasher.digest_paths([artifact], ("sha256",))[0]
        report.digest = {digest.algorithm: digest.value}
        verdict = evaluation.artifact({digest.algorithm: digest.value}, str(artifact))
    report.evaluation, report.verdict = evaluation, verdict
    if not verdict.finals:
        if evaluation.expired is not None:
            report.problems.append(evaluation.expired)
        final_names = [s.name for s in policy.final_steps()]
        report.problems.append(Problem(str(artifact), _artifact_mismatch(
            artifact, digest, evaluation, final_names), "artifact-mismatch"))
        return report

    names = [s.name for s in policy.steps]
    for node in sorted(verdict.chain, key=lambda s: (
            names.index(s.record.step) if s.record.step in names else len(names), s.source)):
        record = node.record
        report.steps.append({
            "step": record.step,
            "attestation": record.source,
            "signed_by": list(node.attribution.names),
            "payload_sha256": record.statement.payload_sha256,
            "argv": list(record.argv),
            "valid": node.valid,
        })
        report.evidence.extend(node.files[:1])
        report.notes.extend(w.message for w in node.warnings)
    report.sources = [s.to_dict() for s in verdict.sources]
    report.rebuilds = list(verdict.quorums)
    for quorum in report.rebuilds:
        report.evidence.extend(c["attestation"] for c in quorum.counted)
        report.evidence.extend(d["attestation"] for d in quorum.dissent)
    report.problems.extend(verdict.problems)
    unpinned = sorted({s["name"] for s in report.sources if not s["pinned"]})
    if unpinned:
        report.notes.append(f"unpinned sources (allowed by the policy): {', '.join(unpinned)}.")
    if policy.rebuild is None and evaluation.rebuilds:
        report.notes.append(
            f"{len(evaluation.rebuilds)} rebuild attestation(s) present; the policy has no "
            "rebuild section, so they were not counted."
        )
    return report


def _read_links(attestation_dirs: list[Path], notes: list[str]) -> list[Any]:
    """in-toto's own links among the attestations: evidence like any bundle (audit reads
    them too, into the same evaluation)."""
    from verifier.intoto_links import link_files, read_link

    found = []
    for path in link_files(attestation_dirs):
        try:
            found.append(read_link(path))
        except InputError as error:
            notes.append(f"ignored {error}")
    return found


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
