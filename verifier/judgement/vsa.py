"""SLSA Verification Summary (VSA v1): one small signed verdict for a deployment system.

`verify-model --vsa FILE` turns its report into an in-toto Statement whose subject is the
artifact and whose predicate says which policy (by digest) and which attestations (by digest)
gave which result, then signs it into a bundle exactly like every other attestation here.
A FAILED verification is summarised too: a signed "no" is as useful to a gate as a signed "yes".

verifiedLevels: SLSA_BUILD_LEVEL_1 when the chain verified (signed provenance of every step,
checked against the policy's signers; higher build levels depend on the build platform, which a
local verifier cannot vouch for), plus MODEL_VERIFIER_REBUILD_QUORUM_<k> when the policy
demanded, and got, k independent matching rebuilds of its steps; FAILED otherwise.

A directory verified with ignore patterns has a digest made without the files they match, so
the summary says which patterns those were (the policy's, and those given for the run), and
which files they left out, in the extension field IGNORED_FIELD; `verify-vsa` hashes the
directory the same way, and accepts patterns the policy does not hold only when told to.

`resourceUri`, `policy.uri` and `inputAttestations[].uri` are URIs, as SLSA VSA v1 asks: a
local file is an absolute `file:` URI (RFC 8089), and a file fetched from a registry is named
by its own locator (`oci://REPOSITORY@sha256:…`, through `labels`). `verify-vsa` reads none of
them (it checks digests), so summaries written with plain paths before still verify.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verifier.formats import readers
from verifier.formats.envelope import INTOTO_PAYLOAD_TYPE, canonical_bundle_text, write_atomic
from verifier.formats.statement import STATEMENT_TYPE, canonical_json

if TYPE_CHECKING:
    from verifier.formats.envelope import Signer
    from verifier.judgement.policy import Policy
    from verifier.judgement.verify import Report

VSA_PREDICATE_TYPE = "https://slsa.dev/verification_summary/v1"
VERIFIER_ID = "https://model-verifier.dev/verifiers/verify-model/v1"
IGNORED_FIELD = "https://model-verifier.dev/vsa/ignored/v1"


def _file_sha256(path: Path) -> str:
    # The policy and attestation files were read (bounded) already; read bounded again, since
    # a file may have been swapped for something else in between.
    return hashlib.sha256(readers.read_bytes(path, "file to summarise",
                                             readers.MAX_BUNDLE_BYTES)).hexdigest()


def _file_of(source: str) -> Path:
    """The file an attestation came from (a JSON-lines source reads `FILE:LINE`)."""
    path = Path(source)
    if path.is_file():
        return path
    head, _, line = source.rpartition(":")
    return Path(head) if line.isdigit() and Path(head).is_file() else path


def file_uri(path: Path, labels: dict[str, str] | None = None) -> str:
    """The URI of a local file: what `labels` says it stands for (a registry locator) when its
    path is, or is inside, one they name; else its absolute `file:` URI."""
    text = path.as_posix()
    for local, locator in sorted((labels or {}).items(), key=lambda item: -len(item[0])):
        if text == local or text.startswith(local.rstrip("/") + "/"):
            return locator + text[len(local):]
    return Path(os.path.abspath(text)).as_uri()


def input_attestations(report: Report, labels: dict[str, str] | None = None
                       ) -> list[dict[str, Any]]:
    """Every attestation file the verdict rests on, as the evaluation found them: the chain's
    step attestations and the rebuild attestations counted towards its quorums. A JSON-lines
    file counts as one attestation (its digest covers every line)."""
    files = {_file_of(source) for source in report.evidence}
    return [{"uri": file_uri(path, labels), "digest": {"sha256": _file_sha256(path)}}
            for path in sorted(files)]


def verified_levels(report: Report, policy: Policy) -> list[str]:
    if not report.passed:
        return ["FAILED"]
    levels = ["SLSA_BUILD_LEVEL_1"]
    kinds = {getattr(q, "kind", "rebuild") for q in report.rebuilds}
    if policy.rebuild is not None and "rebuild" in kinds:
        levels.append(f"MODEL_VERIFIER_REBUILD_QUORUM_{policy.rebuild.quorum}")
    # A few replayed segments are not a rebuild of the whole step: named apart.
    if policy.rebuild is not None and "replay" in kinds:
        levels.append(f"MODEL_VERIFIER_SEGMENT_REPLAY_QUORUM_{policy.rebuild.quorum}")
    return levels


def vsa_statement(report: Report, policy: Policy, *, time_verified: datetime | None = None,
                  labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The VSA statement (unsigned) for a verify-model report; `labels`: local paths and the
    registry locators they stand for (see file_uri)."""
    moment = (time_verified or datetime.now(UTC)).astimezone(UTC)
    artifact = Path(report.artifact)
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": artifact.name or artifact.as_posix(), "digest": report.digest}],
        "predicateType": VSA_PREDICATE_TYPE,
        "predicate": {
            "verifier": {"id": VERIFIER_ID},
            "timeVerified": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "resourceUri": file_uri(artifact, labels),
            "policy": {"uri": file_uri(policy.path, labels),
                       "digest": {"sha256": _file_sha256(policy.path)}},
            "inputAttestations": input_attestations(report, labels),
            "verificationResult": "PASSED" if report.passed else "FAILED",
            "verifiedLevels": verified_levels(report, policy),
            "slsaVersion": "1.0",
            **({IGNORED_FIELD: {
                "policyPatterns": sorted(report.ignore_patterns["policy"]),
                "runPatterns": sorted(report.ignore_patterns["run"]),
                "files": sorted(item["file"] for item in report.ignored),
            }} if report.ignore_patterns else {}),
        },
    }


def write_vsa(path: Path, report: Report, policy: Policy, signer: Signer, *,
              time_verified: datetime | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Sign the VSA into a Sigstore bundle at `path` (an existing file is replaced only with
    `overwrite`); return the statement."""
    statement = vsa_statement(report, policy, time_verified=time_verified)
    bundle = signer.sign_dsse(canonical_json(statement), INTOTO_PAYLOAD_TYPE)
    write_atomic(path, canonical_bundle_text(bundle), overwrite=overwrite)
    return statement
