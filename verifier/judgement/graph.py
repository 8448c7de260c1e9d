"""The nodes of the evaluated graph: step and rebuild attestations, how each material is
accounted for, the problems found, and the answer for one artifact (verifier.judgement.evaluation
builds them; reports render them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from verifier.formats.statement import StepRecord
from verifier.judgement.policy import SourceRule
from verifier.judgement.quorum import RebuildClaim, StepQuorum
from verifier.judgement.trust import Attribution

# Problems that only repeat, one step down, a problem of the step that made an input.
CONSEQUENCES = frozenset({"unaccepted-producer"})
# Kinds of problem that are causes, in the order a reader should meet them: what invalidates
# everything, who signed, what is missing, what changed. Other problems follow, consequences
# last (`order_by_cause`).
CAUSES = ("expired-policy", "signer-not-in-policy", "invalid-signature", "unverifiable",
          "wrong-signer", "missing-step", "artifact-mismatch")


def order_by_cause(problems: list[Problem]) -> list[Problem]:
    """Causes first (in CAUSES order), then the rest as found, then pure consequences; stable,
    so problems of one kind keep the order of the steps they are about."""
    def rank(problem: Problem) -> int:
        kind = problem.ordered_as or problem.kind
        if kind in CAUSES:
            return CAUSES.index(kind)
        return len(CAUSES) + (1 if problem.kind in CONSEQUENCES else 0)

    return sorted(problems, key=rank)


@dataclass(frozen=True)
class Problem:
    file: str
    message: str
    kind: str = "problem"
    digest: tuple[tuple[str, str], ...] = ()  # the material it is about, where there is one
    # The cause it is ordered as, when that is not its kind: a material made only by an
    # attestation no policy signer signed is an untrusted signer, first of all.
    ordered_as: str | None = None

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "message": self.message, "kind": self.kind}


@dataclass
class SourceUse:
    """A material accounted for by a source rule of the policy."""

    name: str
    digest: dict[str, str]
    step: str
    rule: SourceRule

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "step": self.step,
                "pinned": not self.rule.unpinned, "rule": self.rule.describe()}


@dataclass
class MaterialLink:
    """How one material of a step is accounted for: by trusted producers, a source, or not."""

    name: str
    digest: dict[str, str]
    producers: list[StepNode] = field(default_factory=list)
    source: SourceUse | None = None
    by_files: bool = False  # a directory accounted for by its files, each a material of its own
    # What relying on the source rule (or the files) would leave unproven; and, when nothing
    # accounts for the material, the sentence saying so.
    source_problems: list[Problem] = field(default_factory=list)
    unaccounted: Problem | None = None

    @property
    def accepted_as_source(self) -> bool:
        return (self.source is not None or self.by_files) and not self.source_problems

    @property
    def via_source(self) -> bool:
        """Accounted for by the policy's sources, not by a valid attested producer."""
        return self.accepted_as_source and not any(p.valid for p in self.producers)


@dataclass(eq=False)  # nodes are compared and hashed by identity
class StepNode:
    """One step attestation (one signed payload, however many files carry it)."""

    record: StepRecord
    attribution: Attribution
    files: list[str]
    status: str = "verified"  # verified | invalid-signature | unknown-signer | unverifiable
    problems: list[Problem] = field(default_factory=list)
    links: list[MaterialLink] = field(default_factory=list)
    quorum: StepQuorum | None = None
    replay: StepQuorum | None = None  # the segment-replay quorum (rebuild.replay)
    warnings: list[Problem] = field(default_factory=list)  # reported, never a verdict
    on_cycle: bool = False
    # Maximal sets of step names a valid derivation of this attestation goes through (itself
    # included), each with the producer chosen per material; empty when it has none.
    derivations: dict[frozenset[str], tuple[tuple[int, StepNode, frozenset[str]], ...]] = field(
        default_factory=dict)

    @property
    def payload_sha256(self) -> str:
        return self.record.statement.payload_sha256

    @property
    def source(self) -> str:
        return self.record.source

    @property
    def trusted(self) -> bool:
        return bool(self.attribution.names)

    @property
    def valid(self) -> bool:
        return bool(self.derivations)


@dataclass(eq=False)
class RebuildNode:
    claim: RebuildClaim
    attribution: Attribution
    files: list[str]
    status: str = "verified"
    problems: list[Problem] = field(default_factory=list)

    @property
    def trusted(self) -> bool:
        return bool(self.attribution.names)


@dataclass
class ArtifactVerdict:
    """The evaluation's answer for one artifact digest."""

    digest: dict[str, str]
    finals: list[StepNode]  # trusted attestations of a final step with this subject
    chain: list[StepNode]  # the derivation shown: one valid one when it passed
    sources: list[SourceUse]
    quorums: list[StepQuorum]
    problems: list[Problem]
    considered: list[StepNode]  # every node of the artifact's sub-graph

    @property
    def passed(self) -> bool:
        return not self.problems
