"""verify-vsa: is this signed verification summary a PASS for this artifact, from this verifier?

A VSA is only useful to a deployment gate when every one of its claims is checked: the
signature (the verifier's key or keyless identity), that it is a VSA at all, that its subject is
the artifact in hand (by digest), that the result is PASSED, that the policy it was checked
against is the one the gate expects (by digest), and that it is recent enough. A FAILED VSA is
a valid, signed "no": it verifies as a signature and still never passes a gate.

A directory is hashed as the summary says it was: without the files its recorded ignore patterns
match. Patterns its policy holds are the policy's (bound by its digest); patterns given to that
one run (`verify-model --ignore`) are accepted only when the gate names them too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.errors import InputError
from verifier.formats import readers
from verifier.formats.bundlecheck import failed_result as failed_result  # verify-bundle's check
from verifier.formats.digest import Hasher, LinkRule, PathDigest
from verifier.formats.envelope import INTOTO_PAYLOAD_TYPE, Bundle
from verifier.formats.statement import VSA_PREDICATE_TYPE, Statement, parse_statement
from verifier.judgement.policy import check_ignore_pattern
from verifier.judgement.verify import ignore_rule
from verifier.judgement.vsa import IGNORED_FIELD
from verifier.neighbours.hub import ATTESTATIONS_PATTERN, snapshot_links

MAX_RECORDED_PATTERNS = 256
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> dt.timedelta:
    """`90s`, `30m`, `24h`, `7d`, `2w`: InputError otherwise."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise InputError(f"--max-age {text!r} is not a duration such as 30m, 24h or 7d.")
    return dt.timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


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


@dataclass(frozen=True)
class RecordedIgnores:
    """The ignore patterns a directory's summarised digest was made with."""

    policy: tuple[str, ...] = ()
    run: tuple[str, ...] = ()

    @property
    def patterns(self) -> tuple[str, ...]:
        return (*self.policy, *self.run)


def recorded_ignores(predicate: dict[str, Any], source: str) -> RecordedIgnores:
    """The summary's ignore record (none: no patterns); InputError naming the file when it is
    malformed."""
    record = predicate.get(IGNORED_FIELD)
    if record is None:
        return RecordedIgnores()
    lists = {}
    for key in ("policyPatterns", "runPatterns"):
        value = record.get(key, []) if isinstance(record, dict) else None
        if (not isinstance(value, list) or len(value) > MAX_RECORDED_PATTERNS
                or not all(isinstance(p, str) and check_ignore_pattern(p) is None
                           for p in value)):
            raise InputError(f"{source}: its {IGNORED_FIELD} record is not a list of at most "
                             f"{MAX_RECORDED_PATTERNS} relative ignore patterns under {key!r}.")
        lists[key] = tuple(value)
    return RecordedIgnores(lists["policyPatterns"], lists["runPatterns"])


def _subject_algorithm(statement: Statement, artifact: Path) -> str:
    """What to hash the artifact with: a directory by dirHash; a file by sha256, or by BLAKE3
    when that is all the summary's subjects carry (a policy accepting blake3 hashes so)."""
    if artifact.is_dir():
        return "dirHash"
    carried = {algorithm for subject in statement.subjects for algorithm in subject["digest"]}
    return "blake3" if "blake3" in carried and "sha256" not in carried else "sha256"


def check_vsa(bundle: Bundle, signer_verified: bool, signer: str, artifact: Path, *,
              accept_ignores: Sequence[str] = (), policy: Path | None = None,
              max_age: dt.timedelta | None = None, now: dt.datetime | None = None,
              hasher: Hasher | None = None) -> VsaCheck:
    """Every claim of the VSA against what the caller expects; all failures are collected.
    `accept_ignores` are the ignore patterns outside the policy the caller accepts."""
    for pattern in accept_ignores:
        if (why := check_ignore_pattern(pattern)) is not None:
            raise InputError(f"--ignore: {why}.")
    if not artifact.exists():
        raise InputError(f"{artifact}: no such file or directory to check the summary "
                         "against.")
    expected_policy = None if policy is None else hashlib.sha256(readers.read_bytes(
        policy, "policy", readers.MAX_POLICY_BYTES)).hexdigest()
    source = bundle.source
    check = VsaCheck(False, source, str(artifact))
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
    ignores = recorded_ignores(predicate, source)
    snapshot, links = snapshot_links(artifact)
    if snapshot is not None:  # a Hub snapshot's attestations are never part of its digest
        accept_ignores = (*accept_ignores, ATTESTATIONS_PATTERN)
    digest = _digest_as_summarised(artifact, statement, ignores, hasher or Hasher(), links)
    if digest.links:
        from verifier.neighbours.hub import blob_problems

        check.failures.extend(blob_problems(digest))
    check.summary = {"result": result if isinstance(result, str) else None,
                     "timeVerified": predicate.get("timeVerified")
                     if isinstance(predicate.get("timeVerified"), str) else None,
                     "policy_sha256": policy_digest, "signer": signer,
                     "ignore_patterns": {"policy": list(ignores.policy),
                                         "run": list(ignores.run)},
                     "ignored": list(digest.ignored)}
    for pattern in ignores.run:
        if pattern not in accept_ignores:
            check.failures.append(
                f"{source}: was verified with --ignore {pattern!r}, which its policy does not "
                f"hold; pass --ignore {pattern!r} to accept the files it leaves out.")
    if not any(s["digest"].get(digest.algorithm) == digest.value for s in statement.subjects):
        left_out = (f", without the {len(digest.ignored)} file(s) its ignore patterns match"
                    if digest.ignored else "")
        check.failures.append(f"{source}: is not about {artifact} ({digest.algorithm} "
                              f"{digest.value[:16]}…{left_out}): no subject has its digest.")
    if result != "PASSED":
        check.failures.append(f"{source}: its verificationResult is {str(result)[:40]!r}: the "
                              "artifact did not pass verification.")
    if expected_policy is not None and policy_digest != expected_policy:
        check.failures.append(f"{source}: was checked against another policy (sha256 "
                              f"{str(policy_digest)[:16]}…), not {policy} "
                              f"({expected_policy[:16]}…).")
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


def _digest_as_summarised(artifact: Path, statement: Statement, ignores: RecordedIgnores,
                          hasher: Hasher, links: LinkRule | None = None) -> PathDigest:
    algorithm = _subject_algorithm(statement, artifact)
    algorithms = ("sha256",) if algorithm == "dirHash" else (algorithm,)
    return hasher.digest_paths([artifact], algorithms, ignore_rule(ignores.patterns),
                               links)[0]


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
