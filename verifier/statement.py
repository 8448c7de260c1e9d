"""in-toto Statement v1 with SLSA Provenance v1 (steps) and this project's rebuild predicate.

Everything that goes into signed bytes is serialised canonically: keys sorted, lists sorted
where order carries no meaning, no whitespace. The formats are specified in attestations/.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from verifier.digest import PathDigest
from verifier.errors import InputError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PROVENANCE_TYPE = "https://slsa.dev/provenance/v1"
STEP_BUILD_TYPE = "https://model-verifier.dev/buildtypes/step/v1"
REBUILD_PREDICATE_TYPE = "https://model-verifier.dev/attestations/rebuild/v1"
BUILDER_ID = "https://model-verifier.dev/builders/local/v1"

ResourceDescriptor = dict[str, Any]


def canonical_json(value: Any) -> bytes:
    """The bytes that get signed: sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def payload_digest(payload: bytes) -> str:
    """How a rebuild names the attestation it rebuilt: sha256 of the DSSE payload bytes."""
    return hashlib.sha256(payload).hexdigest()


def descriptors(digests: list[PathDigest], names: list[str]) -> list[ResourceDescriptor]:
    """Resource descriptors for files (sha256, plus blake3 when it was computed) and
    directories (dirHash + every file).

    `names` are the POSIX relative names the user's paths are recorded under, one per digest.
    """
    found: dict[str, ResourceDescriptor] = {}
    for digest, name in zip(digests, names, strict=True):
        if digest.is_dir:
            found[name] = {"name": name, "digest": {"dirHash": digest.dir_hash}}
            for relative in digest.files:
                full = f"{name}/{relative}" if name != "." else relative
                found[full] = {"name": full, "digest": digest.file_digest_set(relative)}
        else:
            found[name] = {"name": name, "digest": digest.digest_set()}
    return [found[key] for key in sorted(found)]


def step_statement(
    *,
    step: str,
    argv: list[str],
    working_directory: str,
    declared_env: dict[str, str],
    environment: dict[str, Any],
    materials: list[ResourceDescriptor],
    products: list[ResourceDescriptor],
    invocation_id: str,
    started_on: str,
    finished_on: str,
    byproducts: list[ResourceDescriptor],
) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": products,
        "predicateType": PROVENANCE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": STEP_BUILD_TYPE,
                "externalParameters": {
                    "step": step,
                    "argv": argv,
                    "workingDirectory": working_directory,
                    "env": dict(sorted(declared_env.items())),
                },
                "internalParameters": {"environment": environment},
                "resolvedDependencies": materials,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID},
                "metadata": {
                    "invocationId": invocation_id,
                    "startedOn": started_on,
                    "finishedOn": finished_on,
                },
                "byproducts": byproducts,
            },
        },
    }


@dataclass(frozen=True)
class Statement:
    """A parsed in-toto Statement v1 with the fields verification needs."""

    source: str
    subjects: tuple[ResourceDescriptor, ...]
    predicate_type: str
    predicate: dict[str, Any]
    payload_sha256: str

    def subject_digests(self) -> dict[str, dict[str, str]]:
        return {s["name"]: s["digest"] for s in self.subjects}

    def has_subject_digest(self, algorithm: str, value: str) -> bool:
        return any(s["digest"].get(algorithm) == value for s in self.subjects)


def parse_statement(payload: bytes, source: str) -> Statement:
    """Parse and shape-check an in-toto Statement v1 payload."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, huge integers
        raise InputError(f"{source}: the signed payload is not JSON.") from None
    if not isinstance(data, dict) or data.get("_type") != STATEMENT_TYPE:
        raise InputError(f"{source}: the signed payload is not an in-toto Statement v1.")
    subjects = data.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise InputError(f"{source}: the statement has no subjects.")
    for subject in subjects:
        _check_descriptor(subject, source, "subject")
    predicate = data.get("predicate")
    if not isinstance(predicate, dict):
        raise InputError(f"{source}: the statement has no predicate object.")
    predicate_type = data.get("predicateType")
    if not isinstance(predicate_type, str):
        raise InputError(f"{source}: the statement has no predicateType.")
    return Statement(
        source, tuple(subjects), predicate_type, predicate, payload_digest(payload)
    )


def _check_descriptor(value: Any, source: str, role: str) -> None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise InputError(f"{source}: a {role} has no name.")
    digest = value.get("digest")
    if not isinstance(digest, dict) or not digest or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in digest.items()
    ):
        raise InputError(f"{source}: {role} {value['name']!r} has no valid digest.")


@dataclass(frozen=True)
class StepRecord:
    """The step view of a provenance statement written by `record`."""

    statement: Statement
    step: str
    argv: tuple[str, ...]
    working_directory: str
    declared_env: dict[str, str]
    environment: dict[str, Any]
    materials: tuple[ResourceDescriptor, ...]

    @property
    def source(self) -> str:
        return self.statement.source

    @property
    def products(self) -> tuple[ResourceDescriptor, ...]:
        return self.statement.subjects


def as_step(statement: Statement) -> StepRecord:
    """Read a step record out of a statement, or raise InputError saying why it is not one."""
    source = statement.source
    if statement.predicate_type != PROVENANCE_TYPE:
        raise InputError(f"{source}: is not SLSA provenance ({statement.predicate_type}).")
    definition = statement.predicate.get("buildDefinition")
    if not isinstance(definition, dict) or definition.get("buildType") != STEP_BUILD_TYPE:
        raise InputError(f"{source}: provenance has another buildType than {STEP_BUILD_TYPE}.")
    external = definition.get("externalParameters")
    if not isinstance(external, dict):
        raise InputError(f"{source}: provenance has no externalParameters.")
    step = external.get("step")
    argv = external.get("argv")
    workdir = external.get("workingDirectory", ".")
    env = external.get("env", {})
    if not isinstance(step, str) or not step:
        raise InputError(f"{source}: externalParameters.step is missing.")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise InputError(f"{source}: externalParameters.argv is not a list of strings.")
    if not isinstance(workdir, str) or not isinstance(env, dict):
        raise InputError(f"{source}: externalParameters has a malformed field.")
    internal = definition.get("internalParameters") or {}
    environment = internal.get("environment", {}) if isinstance(internal, dict) else {}
    materials = definition.get("resolvedDependencies", [])
    if not isinstance(materials, list):
        raise InputError(f"{source}: resolvedDependencies is not a list.")
    for material in materials:
        _check_descriptor(material, source, "material")
    return StepRecord(
        statement=statement,
        step=step,
        argv=tuple(argv),
        working_directory=workdir,
        declared_env={str(k): str(v) for k, v in env.items()},
        environment=environment if isinstance(environment, dict) else {},
        materials=tuple(materials),
    )
