"""in-toto Statement v1 with SLSA Provenance v1 (steps) and this project's rebuild predicate.

Everything that goes into signed bytes is serialised canonically: keys sorted, lists sorted
where order carries no meaning, no whitespace. The formats are specified in attestations/.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from verifier.errors import InputError
from verifier.formats.digest import PathDigest
from verifier.formats.envelope import STATEMENT_TYPE as STATEMENT_TYPE  # re-exported
from verifier.formats.readers import brief

PROVENANCE_TYPE = "https://slsa.dev/provenance/v1"
STEP_BUILD_TYPE = "https://model-verifier.dev/buildtypes/step/v1"
REBUILD_PREDICATE_TYPE = "https://model-verifier.dev/attestations/rebuild/v1"
VSA_PREDICATE_TYPE = "https://slsa.dev/verification_summary/v1"
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
    if not is_digest_set(digest):
        raise InputError(f"{source}: {role} {brief(value['name'])} has no valid digest.")


def is_digest_set(value: Any) -> bool:
    """An in-toto DigestSet: a non-empty map of algorithm names to digest strings."""
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items())


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
        raise InputError(f"{source}: is not SLSA provenance "
                         f"({brief(statement.predicate_type, 120)}).")
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
    if not isinstance(workdir, str):
        raise InputError(f"{source}: externalParameters.workingDirectory is not a string.")
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise InputError(f"{source}: externalParameters.env is not a map of strings.")
    internal = definition.get("internalParameters", {})
    if not isinstance(internal, dict):
        raise InputError(f"{source}: internalParameters is not an object.")
    environment = internal.get("environment", {})
    if not isinstance(environment, dict):
        raise InputError(f"{source}: internalParameters.environment is not an object.")
    _check_git(environment.get("git"), source)
    materials = definition.get("resolvedDependencies", [])
    if not isinstance(materials, list):
        raise InputError(f"{source}: resolvedDependencies is not a list.")
    for material in materials:
        _check_descriptor(material, source, "material")
    _check_run_details(statement.predicate.get("runDetails", {}), source)
    return StepRecord(
        statement=statement,
        step=step,
        argv=tuple(argv),
        working_directory=workdir,
        declared_env=dict(env),
        environment=environment,
        materials=tuple(materials),
    )


def _check_git(git: Any, source: str) -> None:
    """environment.git is absent, null (no repository) or {commit: str, dirty: bool}: source
    rules pinned to a commit read it."""
    if git is None:
        return
    if not isinstance(git, dict):
        raise InputError(f"{source}: environment.git is not an object.")
    if not isinstance(git.get("commit", ""), str) or not isinstance(git.get("dirty", False),
                                                                      bool):
        raise InputError(f"{source}: environment.git has a commit that is not a string or a "
                         "dirty flag that is not true or false.")


def _check_run_details(details: Any, source: str) -> None:
    """runDetails: an object whose metadata is an object and whose byproducts are named
    entries (exporters read the exit code and output digests from them)."""
    if not isinstance(details, dict):
        raise InputError(f"{source}: runDetails is not an object.")
    for name in ("builder", "metadata"):
        if not isinstance(details.get(name, {}), dict):
            raise InputError(f"{source}: runDetails.{name} is not an object.")
    byproducts = details.get("byproducts", [])
    if not isinstance(byproducts, list) or not all(
            isinstance(b, dict) and isinstance(b.get("name"), str)
            and isinstance(b.get("digest", {}), dict) for b in byproducts):
        raise InputError(f"{source}: runDetails.byproducts is not a list of named entries.")
