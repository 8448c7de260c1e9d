"""What the recording user declares about a step's files, signed in its predicate.

`record --component KIND=PATH`, `--material-license PATH=EXPR` and `--record-digests PATH` put
these in the step's provenance (`internalParameters.components`, `internalParameters.licenses`,
and a byproduct per record-digest file). They are claims of the signer, like everything in the
predicate; the evaluation checks that each names a material or product of the same step (so it
is bound to a digest), and judges licences against the policy. Nothing here is guessed from a
file name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from verifier.formats.statement import StepRecord

# The components a user may declare, each with the Model Openness Framework v1.0 component it
# is (arXiv:2403.13784, LF AI & Data / Generative AI Commons) and the most open class that
# requires it (None: MOF v1.0 lists no such component). The documentation components are
# declarable too, so that a chain can carry every component a class needs.
COMPONENTS: dict[str, tuple[str | None, str | None]] = {
    "training-data": ("Datasets", "I"),
    "data-processing-code": ("Data Preprocessing Code", "I"),
    "intermediate-weights": ("Intermediate Model Parameters", "I"),
    "research-paper": ("Research Paper", "I"),
    "training-code": ("Training, Validation, and Testing Code", "II"),
    "inference-code": ("Inference Code", "II"),
    "evaluation-code": ("Evaluation Code", "II"),
    "evaluation-data": ("Evaluation Data", "II"),
    "supporting-libraries": ("Supporting Libraries and Tools", "II"),
    "model-architecture": ("Model Architecture", "III"),
    "weights": ("Final Model Parameters", "III"),
    "evaluation-results": ("Evaluation Results", "III"),
    "model-card": ("Model Card", "III"),
    "data-card": ("Data Card", "III"),
    "technical-report": ("Technical Report", "III"),
    "tokenizer": (None, None),
}
RECORD_DIGESTS_PREFIX = "record-digests/"
# v2 adds the record unit to the file (verifier.formats.recorddigests); v1 files still verify.
RECORD_DIGESTS_FORMAT = "https://model-verifier.dev/formats/record-digests/v2"
MAX_DECLARATIONS = 10_000


@dataclass(frozen=True)
class Declaration:
    kind: str  # "component" | "license" | "record-digests"
    name: str  # the material or product it is about
    value: str  # the component kind, the SPDX expression, or the digest file's sha256
    role: str = ""  # "material" | "product" once checked against the step


@dataclass(frozen=True)
class Declarations:
    components: tuple[Declaration, ...]
    licenses: tuple[Declaration, ...]
    record_digests: tuple[Declaration, ...]
    problems: tuple[str, ...]  # sentences: a malformed or unbound declaration


def read(record: StepRecord) -> Declarations:
    """The declarations of one step record, each checked to name a file of the step."""
    definition = record.statement.predicate.get("buildDefinition", {})
    internal = definition.get("internalParameters") if isinstance(definition, dict) else None
    internal = internal if isinstance(internal, dict) else {}
    run = record.statement.predicate.get("runDetails", {})
    byproducts = run.get("byproducts", []) if isinstance(run, dict) else []
    roles = {m["name"]: "material" for m in record.materials}
    roles.update({p["name"]: "product" for p in record.products})
    problems: list[str] = []
    where = f"{record.source}: step {record.step!r}"

    def entries(value: Any, field: str, keys: tuple[str, str]) -> list[tuple[str, str]]:
        if value is None:
            return []
        if not isinstance(value, list) or len(value) > MAX_DECLARATIONS or not all(
                isinstance(e, dict) and all(isinstance(e.get(k), str) for k in keys)
                for e in value):
            problems.append(f"{where} has a malformed {field} declaration.")
            return []
        return [(e[keys[0]], e[keys[1]]) for e in value]

    components, licenses, digests = [], [], []
    for name, kind in entries(internal.get("components"), "components", ("name", "component")):
        if kind not in COMPONENTS:
            problems.append(f"{where} declares {name} as an unknown component {kind!r}.")
        elif name not in roles:
            problems.append(f"{where} declares {name} as its {kind}, but {name} is neither a "
                            "material nor a product of the step.")
        else:
            components.append(Declaration("component", name, kind, roles[name]))
    for name, expression in entries(internal.get("licenses"), "licenses", ("name", "license")):
        if name not in roles:
            problems.append(f"{where} declares a licence for {name}, which is neither a "
                            "material nor a product of the step.")
        else:
            licenses.append(Declaration("license", name, expression, roles[name]))
    if isinstance(byproducts, list):
        for entry in byproducts[:MAX_DECLARATIONS]:
            if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)
                    and entry["name"].startswith(RECORD_DIGESTS_PREFIX)):
                continue
            of = entry["name"][len(RECORD_DIGESTS_PREFIX):]
            digest = entry.get("digest")
            sha256 = digest.get("sha256") if isinstance(digest, dict) else None
            if not isinstance(sha256, str) or len(sha256) != 64:
                problems.append(f"{where} lists record digests of {of} without a sha256.")
            elif of not in roles:
                problems.append(f"{where} lists record digests of {of}, which is neither a "
                                "material nor a product of the step.")
            else:
                digests.append(Declaration("record-digests", of, sha256, roles[of]))
    return Declarations(tuple(components), tuple(licenses), tuple(digests), tuple(problems))


def component_entries(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    """The signed form of (kind, name) pairs: sorted, each once."""
    return [{"component": k, "name": n} for k, n in sorted(set(pairs), key=lambda p: (p[1], p[0]))]


def license_entries(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    """The signed form of (name, expression) pairs: sorted by name."""
    return [{"license": e, "name": n} for n, e in sorted(set(pairs))]
