"""verify-vsa: is this signed verification summary a PASS for this artifact, from this verifier?

A VSA is only useful to a deployment gate when every one of its claims is checked: the
signature (the verifier's key or keyless identity), that it is a VSA at all, that its subject is
the artifact in hand (by digest), that the result is PASSED, that the policy it was checked
against is the one the gate expects (by digest), and that it is recent enough. A FAILED VSA is
a valid, signed "no": it verifies as a signature and still never passes a gate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.errors import InputError
from verifier.formats.envelope import INTOTO_PAYLOAD_TYPE, Bundle
from verifier.formats.statement import parse_statement

VSA_PREDICATE_TYPE = "https://slsa.dev/verification_summary/v1"
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> dt.timedelta:
    """`90s`, `30m`, `24h`, `7d`, `2w`: InputError otherwise."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise InputError(f"--max-age {text!r} is not a duration such as 30m, 24h or 7d.")
    return dt.timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def failed_result(payload_type: str, payload: bytes, source: str) -> str | None:
    """For a verified bundle: the sentence saying it is a VSA whose result is not PASSED, or
    None when it is no VSA or a PASSED one. verify-bundle uses it so that a signed "no" never
    reads as OK."""
    if payload_type != INTOTO_PAYLOAD_TYPE:
        return None
    try:
        statement = parse_statement(payload, source)
    except InputError:
        return None
    if statement.predicate_type != VSA_PREDICATE_TYPE:
        return None
    result = statement.predicate.get("verificationResult")
    if result == "PASSED":
        return None
    return (f"{source}: is a verification summary whose result is {str(result)[:40]!r}: the "
            "artifact did not pass verification.")


@dataclass
class VsaCheck:
    passed: bool
    vsa: str
    artifact: str
    failures: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": "PASS" if self.passed else "FAIL", "vsa": self.vsa,
                "artifact": self.artifact, "failures": self.failures, **self.summary}


def check_vsa(bundle: Bundle, signer_verified: bool, signer: str, artifact_digest: dict[str, str],
              artifact: str, *, policy: Path | None = None, max_age: dt.timedelta | None = None,
              now: dt.datetime | None = None) -> VsaCheck:
    """Every claim of the VSA against what the caller expects; all failures are collected."""
    source = bundle.source
    check = VsaCheck(False, source, artifact)
    if not signer_verified:
        check.failures.append(f"{source}: its signature does not verify as {signer}.")
        return check
    if bundle.payload_type != INTOTO_PAYLOAD_TYPE:
        check.failures.append(f"{source}: payload type {bundle.payload_type[:80]!r} is not "
                              "in-toto, so this is no verification summary.")
        return check
    statement = parse_statement(bundle.payload, source)
    if statement.predicate_type != VSA_PREDICATE_TYPE:
        check.failures.append(f"{source}: is a {statement.predicate_type[:120]!r} attestation, "
                              "not a verification summary.")
        return check
    predicate = statement.predicate
    result = predicate.get("verificationResult")
    verified_at = _time(predicate.get("timeVerified"))
    policy_digest = _digest(predicate.get("policy"))
    check.summary = {"result": result if isinstance(result, str) else None,
                     "timeVerified": predicate.get("timeVerified")
                     if isinstance(predicate.get("timeVerified"), str) else None,
                     "policy_sha256": policy_digest, "signer": signer}
    if not any(all(s["digest"].get(a) == v for a, v in artifact_digest.items())
               for s in statement.subjects):
        algorithm, value = next(iter(artifact_digest.items()))
        check.failures.append(f"{source}: is not about {artifact} ({algorithm} {value[:16]}…): "
                              "no subject has its digest.")
    if result != "PASSED":
        check.failures.append(f"{source}: its verificationResult is {str(result)[:40]!r}: the "
                              "artifact did not pass verification.")
    if policy is not None:
        try:
            expected = hashlib.sha256(policy.read_bytes()).hexdigest()
        except OSError as error:
            raise InputError(f"{policy}: cannot be read ({error.strerror}).") from None
        if policy_digest != expected:
            check.failures.append(f"{source}: was checked against another policy (sha256 "
                                  f"{str(policy_digest)[:16]}…), not {policy} "
                                  f"({expected[:16]}…).")
    if max_age is not None:
        moment = (now or dt.datetime.now(dt.UTC))
        if verified_at is None:
            check.failures.append(f"{source}: has no readable timeVerified, so its age is "
                                  "unknown.")
        elif verified_at > moment + dt.timedelta(minutes=5):
            check.failures.append(f"{source}: claims to be verified in the future "
                                  f"({predicate['timeVerified']}).")
        elif moment - verified_at > max_age:
            check.failures.append(f"{source}: was verified at {predicate['timeVerified']}, "
                                  f"older than the {max_age} allowed.")
    check.passed = not check.failures
    return check


def _time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _digest(policy: Any) -> str | None:
    digest = policy.get("digest") if isinstance(policy, dict) else None
    value = digest.get("sha256") if isinstance(digest, dict) else None
    return value if isinstance(value, str) else None
