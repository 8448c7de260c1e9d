"""The audit report's model: findings, graph nodes, and the report's JSON form.

Nodes hold what was parsed from attestations; `AuditReport.to_dict()` is the one view every
renderer reads (described by attestations/audit-report.schema.json). Attestations are hostile:
strings from them are cleaned (`clean`) on the way into that view, and only scalars are ever
taken from fields whose shape is not checked, so nothing nested is walked.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from verifier.formats.terminal import clean as clean  # audit re-exports it
from verifier.judgement.trust import Attribution

if TYPE_CHECKING:
    from verifier.formats.statement import StepRecord
    from verifier.judgement.quorum import RebuildClaim

SEVERITIES = ("error", "warning", "info")
FILES_KEPT = 20  # files named by one finding; the message gives the full count
TENSORS_KEPT = 200  # per rebuilt file: enough for a report, bounded against hostile input

# In JSON text: the escape of a control character, after an even run of backslashes (so that an
# escaped backslash followed by a letter is left alone).
_JSON_CONTROL = re.compile(r"(?<!\\)((?:\\\\)*)\\(u00[01][0-9a-fA-F]|[bfnrt])")
_RAW_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SHORT_ESCAPES = {"b": "0008", "f": "000c", "n": "000a", "r": "000d", "t": "0009"}


def _cleaned(value: Any) -> Any:
    """The report with every string (keys too) as `clean` makes it, and non-finite floats as
    strings. Done on the JSON text in one pass: walking a report of 10,000 attestations in
    Python costs seconds, the C encoder and decoder a fraction of that."""
    text = json.dumps(value, ensure_ascii=False)
    if ("\\" not in text and not _RAW_UNSAFE.search(text) and "NaN" not in text
            and "Infinity" not in text):
        return value  # the usual case: nothing to spell out, nothing to decode again
    text = _JSON_CONTROL.sub(
        lambda m: m.group(1) + "\\\\u" + _SHORT_ESCAPES.get(m.group(2), m.group(2)[1:]).lower(),
        text)
    text = _RAW_UNSAFE.sub(lambda m: f"\\\\u{ord(m.group()):04x}", text)
    return json.loads(text, parse_constant=str)


def scalar(value: Any) -> str | int | float | bool | None:
    """A JSON scalar taken from an attestation; anything nested is summarised, never walked."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 10**18 else str(value)[:24]
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list):
        return f"<list of {len(value)}>"
    return "<object>"


def short_text(value: Any, limit: int = 500) -> str:
    text = value if isinstance(value, str) else str(scalar(value))
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning | info
    kind: str
    message: str
    files: tuple[str, ...] = ()
    node: str | None = None  # the graph node it belongs to
    details: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"severity": self.severity, "kind": self.kind,
                                 "message": self.message, "files": list(self.files),
                                 "node": self.node}
        if self.details:
            found["details"] = self.details
        return found


@dataclass
class Signer:
    """Who signed a bundle: policy names when checked, else what the bundle claims."""

    names: tuple[str, ...]
    identities: tuple[str, ...]
    claimed: str  # key hint or certificate identity as written in the bundle (unverified)
    status: str  # verified | invalid-signature | unknown-signer | unverifiable | unchecked

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "identities": list(self.identities),
                "claimed": self.claimed, "status": self.status}


@dataclass
class StepNode:
    id: str
    record: StepRecord
    signer: Signer
    files: list[str]
    layer: int = 0
    status: str = "ok"
    final: bool = False
    rebuilds: list[str] = field(default_factory=list)
    quorum: dict[str, Any] | None = None

    @property
    def attribution(self) -> Attribution:
        return Attribution(self.signer.names, self.signer.identities)

    @property
    def trusted(self) -> bool:
        return self.signer.status in ("verified", "unchecked")

    def to_dict(self, artifact_of: dict[tuple[str, str], str]) -> dict[str, Any]:
        record = self.record
        return {
            "id": self.id, "step": record.step, "files": self.files,
            "payload_sha256": record.statement.payload_sha256,
            "argv": [short_text(a) for a in record.argv[:200]],
            "working_directory": short_text(record.working_directory),
            "declared_env": {short_text(k, 100): short_text(v) for k, v in
                             list(record.declared_env.items())[:100]},
            "environment": environment_summary(record.environment),
            "materials": [_descriptor(m, artifact_of) for m in record.materials],
            "products": [_descriptor(p, artifact_of) for p in record.products],
            "signer": self.signer.to_dict(), "status": self.status, "layer": self.layer,
            "final": self.final, "rebuilds": self.rebuilds, "quorum": self.quorum,
        }


def digest_key(digest: dict[str, str]) -> tuple[str, str]:
    """The one (algorithm, value) an artifact node is keyed by: sha256 first, then dirHash."""
    for algorithm in ("sha256", "dirHash"):
        if algorithm in digest:
            return algorithm, digest[algorithm]
    algorithm = min(digest)
    return algorithm, digest[algorithm]


def node_id(prefix: str, text: str) -> str:
    return f"{prefix}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:24]}"


def _descriptor(descriptor: dict[str, Any], artifact_of: dict[tuple[str, str], str]
                ) -> dict[str, Any]:
    digest = descriptor["digest"]
    return {"name": descriptor["name"], "digest": dict(digest),
            "artifact": artifact_of.get(digest_key(digest))}


@dataclass
class ArtifactNode:
    id: str
    digest: dict[str, str]
    names: set[str] = field(default_factory=set)
    # Step ids, as insertion-ordered sets: a shared source may feed thousands of steps.
    producers: dict[str, None] = field(default_factory=dict)
    consumers: dict[str, None] = field(default_factory=dict)
    final: bool = False
    source: str | None = None  # pinned | unpinned | unaccounted, for materials nobody produced
    layer: int = 0
    status: str = "ok"
    verdict: str | None = None  # PASS | FAIL for a final artifact judged against a policy
    problems: list[str] = field(default_factory=list)
    openness: dict[str, Any] | None = None  # verifier.reports.openness's view of the verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            **({"openness": self.openness} if self.openness is not None else {}),
            "id": self.id, "names": sorted(self.names), "digest": self.digest,
            "kind": "source" if not self.producers else "artifact",
            "producers": list(self.producers), "consumers": list(self.consumers),
            "final": self.final,
            "source": self.source, "layer": self.layer, "status": self.status,
            "verdict": self.verdict, "problems": self.problems[:FILES_KEPT],
        }


@dataclass
class RebuildNode:
    id: str
    claim: RebuildClaim
    signer: Signer
    files: list[str]
    step_node: str | None = None
    verdict: str = "unknown"  # matched | mismatched | unknown (the rebuilt step is absent)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    status: str = "ok"

    @property
    def trusted(self) -> bool:
        return self.signer.status in ("verified", "unchecked")

    def to_dict(self) -> dict[str, Any]:
        claim = self.claim
        return {
            "id": self.id, "step": claim.step, "files": self.files,
            "rebuilt_payload_sha256": claim.rebuilt_payload_sha256, "step_node": self.step_node,
            "signer": self.signer.to_dict(), "verdict": self.verdict,
            "mismatches": self.mismatches, "results": [_result(r) for r in claim.results],
            "drift": [{k: scalar(d.get(k)) for k in ("field", "recorded", "current")}
                      for d in claim.drift[:50]],
            "status": self.status,
        }


def _result(result: dict[str, Any]) -> dict[str, Any]:
    """One rebuilt file's verdict with its per-tensor metrics (bounded, scalars only)."""
    found: dict[str, Any] = {"name": result["name"], "verdict": result["verdict"],
                             "expected": dict(result["expected"])}
    actual = result.get("actual")
    if isinstance(actual, dict):
        found["actual"] = {str(k): short_text(v, 200) for k, v in list(actual.items())[:4]}
    diff = result.get("diff")
    if isinstance(diff, dict):
        tensors = diff.get("tensors")
        found["diff_kind"] = scalar(diff.get("kind"))
        found["first_difference_offset"] = scalar(diff.get("first_difference_offset"))
        if isinstance(tensors, list):
            found["tensors"] = [
                {k: scalar(t.get(k)) for k in ("name", "status", "max_abs_diff", "mean_abs_diff",
                                                "rel_l2", "cosine", "bit_equal_fraction",
                                                "median_ulp")}
                for t in tensors[:TENSORS_KEPT] if isinstance(t, dict)
            ]
            found["tensor_count"] = len(tensors)
    return found


def environment_summary(environment: dict[str, Any]) -> dict[str, Any]:
    """What a reviewer needs from a recorded environment, scalars only (hostile input)."""
    def section(name: str) -> dict[str, Any]:
        value = environment.get(name)
        return value if isinstance(value, dict) else {}

    gpus = environment.get("gpus")
    packages = environment.get("packages")
    torch = environment.get("torch")
    return {
        "python": scalar(section("python").get("version")),
        "platform": " ".join(str(scalar(section("platform").get(k)) or "")
                             for k in ("system", "machine", "libc")).strip(),
        "cpu": scalar(section("cpu").get("model")),
        "cpu_count": scalar(section("cpu").get("count")),
        "gpus": [short_text(g.get("name"), 100) for g in gpus[:16] if isinstance(g, dict)]
        if isinstance(gpus, list) else [],
        "torch": {k: scalar(v) for k, v in list(torch.items())[:20]}
        if isinstance(torch, dict) else None,
        "variables": {short_text(k, 100): scalar(v) for k, v in
                      list(section("variables").items())[:50]},
        "git": {k: scalar(section("git").get(k)) for k in ("commit", "dirty")}
        if isinstance(environment.get("git"), dict) else None,
        "packages": len(packages) if isinstance(packages, dict) else 0,
    }


@dataclass
class AuditReport:
    directories: list[str]
    policy: str | None
    steps: list[StepNode] = field(default_factory=list)
    artifacts: dict[tuple[str, str], ArtifactNode] = field(default_factory=dict)
    rebuilds: list[RebuildNode] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    bundles: int = 0

    @property
    def checked(self) -> bool:
        return self.policy is not None

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(SEVERITIES, 0)
        for finding in self.findings:
            counts[finding.severity] += 1
        return counts

    @property
    def exit_code(self) -> int:
        return 1 if any(f.severity == "error" for f in self.findings) else 0

    def to_dict(self) -> dict[str, Any]:
        artifact_of = {key: node.id for key, node in self.artifacts.items()}
        edges: list[dict[str, str]] = []
        for node in self.artifacts.values():
            edges.extend({"from": node.id, "to": c, "kind": "consumed-by"}
                         for c in node.consumers)
            edges.extend({"from": p, "to": node.id, "kind": "produces"} for p in node.producers)
        edges.extend({"from": r.id, "to": r.step_node, "kind": "rebuilds"}
                     for r in self.rebuilds if r.step_node)
        return _cleaned({
            "report": "model-verifier audit",
            "version": 1,
            "directories": self.directories,
            "policy": self.policy,
            "checked": self.checked,
            "verdict": "FAIL" if self.exit_code else "PASS",
            "summary": {**self.counts(), "files": self.files, "bundles": self.bundles,
                        "steps": len(self.steps), "artifacts": len(self.artifacts),
                        "rebuilds": len(self.rebuilds)},
            "steps": [s.to_dict(artifact_of) for s in self.steps],
            "artifacts": [a.to_dict() for a in self.artifacts.values()],
            "rebuilds": [r.to_dict() for r in self.rebuilds],
            "edges": edges,
            "findings": [f.to_dict() for f in self.findings],
        })
