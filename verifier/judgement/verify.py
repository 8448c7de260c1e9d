"""verify-model: does an artifact's whole build chain satisfy the policy?

This module hashes the artifact, loads the attestations and shapes a report; the verdict itself
is `verifier.judgement.evaluation`'s, the same evaluation `audit` renders. The artifact must be
a subject
of a trusted attestation of a final step, every material of every step a product of a valid
attested earlier step or a source the policy names, every step signed by the signer the policy
names for it, and (with a `rebuild` section) every step attestation the policy requires rebuilt
reproduced by enough independent rebuilders. Every problem is collected; none stops the walk.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.errors import InputError
from verifier.formats.digest import Hasher, IgnoreRule, PathDigest
from verifier.formats.evidence import (
    attestation_files as attestation_files,  # audit imports it here
)
from verifier.formats.evidence import load_bundles
from verifier.judgement.evaluation import Evaluation, Problem, evaluate, match_source
from verifier.judgement.policy import Policy, check_ignore_pattern, ignore_pattern_for
from verifier.judgement.quorum import StepQuorum
from verifier.judgement.trust import TrustedSigners, unattributed_reason
from verifier.neighbours.hub import ATTESTATIONS_PATTERN, snapshot_links

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
    # Files of a directory artifact left out of its digest: {file, pattern, by}.
    ignored: list[dict[str, str]] = field(default_factory=list)
    # The ignore patterns its digest was made with: {"policy": [...], "run": [...]} (run: those
    # of --ignore the policy does not hold). Empty for a file, or when none were in force.
    ignore_patterns: dict[str, list[str]] = field(default_factory=dict)

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
            "ignored": self.ignored,
        }


def _artifact_mismatch(artifact: Path, digest: PathDigest, chain: Evaluation,
                       final_names: list[str], ignored: tuple[str, ...] = ()) -> str:
    """Explain, file by file, how the artifact differs from what the final step attested."""
    finals = [s for s in chain.steps if s.trusted and s.record.step in final_names]
    for signed in finals:
        subjects = signed.record.statement.subject_digests()
        if not digest.is_dir:
            for name, recorded in subjects.items():
                if Path(name).name == artifact.name and "sha256" in recorded:
                    holder = _holding_directory(subjects, name)
                    whole = (f"; {name} is one file of the directory {holder} that the step "
                             "attested as a whole, so verify that directory, the artifact"
                             if holder else "")
                    return (
                        f"{artifact}: no longer matches: step {signed.record.step!r} "
                        f"({signed.record.source}) attested {name} with sha256 "
                        f"{recorded['sha256'][:16]}…, the file has {digest.sha256[:16]}…"
                        f"{whole}."
                    )
        else:
            best = _closest_directory(subjects, digest.files)
            if best is not None:
                name, expected = best
                left_out = sorted(set(expected) & set(digest.ignored))
                changed = sorted(n for n in set(expected) & set(digest.files)
                                 if expected[n] != digest.files[n])
                extra = sorted(set(digest.files) - set(expected))
                missing = sorted(set(expected) - set(digest.files) - set(left_out))
                parts = [
                    f"{', '.join(changed[:10])} differ{'s' if len(changed) == 1 else ''}"
                    if changed else "",
                    f"{', '.join(extra[:10])} {'is' if len(extra) == 1 else 'are'} not in it "
                    "(files a download adds can be left out with the policy's ignore list or "
                    "--ignore)" if extra else "",
                    f"{', '.join(missing[:10])} {'is' if len(missing) == 1 else 'are'} missing"
                    if missing else "",
                    f"it holds {', '.join(left_out[:10])}, which the ignore pattern"
                    f"{'s' if len(ignored) > 1 else ''} ({', '.join(ignored)}) "
                    f"leave{'' if len(ignored) > 1 else 's'} out of the digest"
                    if left_out else "",
                ]
                return (
                    f"{artifact}: no longer matches what step {signed.record.step!r} "
                    f"({signed.record.source}) attested for {name}: "
                    f"{'; '.join(p for p in parts if p) or 'no file differs'}."
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


def _holding_directory(subjects: dict[str, dict[str, str]], name: str) -> str | None:
    """The attested directory subject holding the file subject `name`, if any (outermost)."""
    directories = sorted(n for n, d in subjects.items() if "dirHash" in d)
    return next((d for d in directories if name.startswith(f"{d}/")), None)


def _shard_note(artifact: Path, digest: PathDigest, finals: list[Any]) -> str | None:
    """A file that passed as one file of an attested directory: say that the directory is the
    artifact, since a sharded model is its shards, index and config together."""
    if digest.is_dir:
        return None
    for final in finals:
        subjects = final.record.statement.subject_digests()
        # The same bytes may be attested twice (a model and the checkpoint it was copied from):
        # the subject at the path the user named comes first, so the note names their folder.
        named = f"/{artifact.as_posix().lstrip('/')}"
        for name, recorded in sorted(subjects.items(),
                                     key=lambda s: (not named.endswith(f"/{s[0]}"), s[0])):
            if digest.value not in recorded.values():
                continue
            holder = _holding_directory(subjects, name)
            if holder is not None:
                which = "" if str(artifact) == name else f" ({name})"
                return (f"{artifact} is one file{which} of the directory {holder} that step "
                        f"{final.record.step!r} attested as a whole; this checked that file "
                        f"alone: verify {holder} to check the model (every shard, the index, "
                        "the config).")
    return None


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


def ignore_rule(patterns: tuple[str, ...]) -> Callable[[str, bool], bool] | None:
    """What `Hasher.digest_paths` leaves out of a directory artifact, or None to keep all."""
    if not patterns:
        return None
    return lambda name, regular: ignore_pattern_for(name, patterns, regular) is not None


def ignore_patterns(policy: Policy, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The policy's ignore patterns, then those given for this run (--ignore), each once."""
    for pattern in extra:
        if (why := check_ignore_pattern(pattern)) is not None:
            raise InputError(f"--ignore: {why}.")
    return tuple(dict.fromkeys((*policy.ignore, *extra)))


def _ignored_files(digest: PathDigest, policy: Policy, patterns: tuple[str, ...]
                   ) -> list[dict[str, str]]:
    listed = []
    for name in digest.ignored:
        # A folder's or `**` pattern first: those are the ones that leave out a non-file.
        pattern = (ignore_pattern_for(name, patterns, regular=False)
                   or ignore_pattern_for(name, patterns) or "")
        by = ("policy" if pattern in policy.ignore
              else "hub" if pattern == ATTESTATIONS_PATTERN else "--ignore")
        listed.append({"file": name, "pattern": pattern, "by": by})
    return listed


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
    ignore: Iterable[str] = (),
) -> Report:
    """Verify one artifact (file or directory) against the policy and the attestations.

    A directory is hashed without the files the policy's `ignore` patterns and `ignore` (the
    command line's) match; the report lists each one left out."""
    if not artifact.exists():
        raise InputError(f"{artifact}: no such file or directory to verify.")
    hasher = hasher or Hasher()
    snapshot, links = snapshot_links(artifact)
    if snapshot is not None:  # its publisher's attestations: found here, never in its digest
        from verifier.neighbours.hub import attestation_files

        ignore = (*ignore, ATTESTATIONS_PATTERN)
        attestation_dirs = [*(d for d in attestation_dirs if d.exists()),
                            *attestation_files(snapshot)]
    patterns = ignore_patterns(policy, ignore)
    rule = ignore_rule(patterns)
    digest = hasher.digest_paths([artifact], artifact_algorithms(policy, artifact), rule,
                                 links)[0]
    report = Report(str(artifact), {digest.algorithm: digest.value}, str(policy.path))
    report.ignored = _ignored_files(digest, policy, patterns)
    if digest.links:
        from verifier.neighbours.hub import blob_problems

        report.problems.extend(Problem(str(artifact), message, "artifact-mismatch")
                               for message in blob_problems(digest))
    if patterns and digest.algorithm == "dirHash":
        report.ignore_patterns = {"policy": list(policy.ignore),
                                  "run": [p for p in patterns if p not in policy.ignore]}
    if keyless_check is None:
        from verifier.formats.keyless import check_keyless as keyless_check
    signers = TrustedSigners(policy, keyless_check)
    digest = add_oms_evidence(artifact, digest, lambda b: signers.attribute(b).names, report,
                              rule, lambda b: unattributed_reason(b, signers))
    bundles = load_bundles(attestation_dirs, report.notes)
    evaluation = evaluate(policy, bundles, signers, today,
                          _read_links(attestation_dirs, report.notes))
    report.notes.extend(evaluation.notes)
    verdict = evaluation.artifact({digest.algorithm: digest.value}, str(artifact))
    if not verdict.passed and digest.algorithm == "blake3":
        # BLAKE3 is a shortcut, never a narrower question: an attestation carrying only the
        # sha256 must count as well, so the file is judged by both digests.
        blake3 = digest.value
        digest = hasher.digest_paths([artifact], ("sha256",), rule)[0]
        report.digest = {digest.algorithm: digest.value}
        verdict = evaluation.artifact({"sha256": digest.value, "blake3": blake3},
                                      str(artifact))
    report.evaluation, report.verdict = evaluation, verdict
    if not verdict.finals:
        if evaluation.expired is not None:
            report.problems.append(evaluation.expired)
        final_names = [s.name for s in policy.final_steps()]
        report.problems.append(Problem(str(artifact), _artifact_mismatch(
            artifact, digest, evaluation, final_names, patterns), "artifact-mismatch"))
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
    shard = _shard_note(artifact, digest, verdict.finals)
    if shard is not None:
        report.notes.append(shard)
    unpinned = sorted({s["name"] for s in report.sources if not s["pinned"]})
    if unpinned:
        report.notes.append(f"unpinned sources (allowed by the policy): {', '.join(unpinned)}.")
    if hint := _rebuilds_hint(report.problems, attestation_dirs):
        report.notes.append(hint)
    if policy.rebuild is None and evaluation.rebuilds:
        report.notes.append(
            f"{len(evaluation.rebuilds)} rebuild attestation(s) present; the policy has no "
            "rebuild section, so they were not counted."
        )
    return report


def _rebuilds_hint(problems: list[Problem], attestation_dirs: list[Path]) -> str | None:
    """When a rebuild quorum falls short, a rebuilds/ folder beside an attestations folder
    that was not read is the likely reason (record and rebuild write them side by side). Only
    a hint: what is in it is judged when it is passed, never because of its name."""
    if not any(p.kind == "quorum-shortfall" for p in problems):
        return None
    read = {d.resolve() for d in attestation_dirs}
    for directory in attestation_dirs:
        sibling = directory.resolve().parent / "rebuilds"
        if directory.is_dir() and sibling.is_dir() and not any(
                sibling == r or sibling.is_relative_to(r) for r in read):
            shown = directory.parent / "rebuilds"
            return (f"{shown} lies beside {directory} and was not read; rebuild "
                    f"attestations there count only when passed: --attestations {shown}.")
    return None


def _read_links(attestation_dirs: list[Path], notes: list[str]) -> list[Any]:
    """in-toto's own links among the attestations: evidence like any bundle (audit reads
    them too, into the same evaluation)."""
    from verifier.neighbours.intoto_links import link_files, read_link

    found = []
    for path in link_files(attestation_dirs):
        try:
            found.append(read_link(path))
        except InputError as error:
            notes.append(f"ignored {error}")
    return found


def add_oms_evidence(artifact: Path, digest: PathDigest, attribute: Any, report: Report,
                     ignore: IgnoreRule | None = None, explain: Any = None) -> PathDigest:
    """Report the OMS model.sig a directory carries, checked against the files of `digest`
    (made with the ignore rule `ignore`); return the digest to compare, which already leaves
    the signature out (see verifier.formats.digest). `explain` says why a signature counts for
    nothing."""
    from verifier.neighbours.oms import directory_evidence

    evidence = directory_evidence(artifact, digest, attribute, ignore, explain)
    if evidence is None:
        return digest
    report.oms.append(evidence.to_dict())
    report.problems.extend(Problem(evidence.source, message) for message in evidence.problems)
    report.notes.extend(evidence.notes)
    return evidence.digest
