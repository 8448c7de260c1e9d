"""verify-bundle: one bundle, one artifact, one trusted key (keyless bundles: `keyless`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.digest import Hasher
from verifier.envelope import INTOTO_PAYLOAD_TYPE, read_bundle
from verifier.errors import InputError
from verifier.signing import bundle_signed_by, load_public_key
from verifier.statement import parse_statement


@dataclass(frozen=True)
class BundleCheck:
    ok: bool
    message: str
    subject_name: str | None = None
    signer: str | None = None  # the certificate identity, for keyless bundles

    def to_dict(self) -> dict[str, Any]:
        return {"verified": self.ok, "message": self.message, "subject": self.subject_name,
                "signer": self.signer}


def check_bundle(bundle_path: Path, artifact: Path, key_path: Path) -> BundleCheck:
    """Signature under the given key, in-toto payload type, artifact digest among subjects."""
    key = load_public_key(key_path)
    bundle = read_bundle(bundle_path)
    if bundle.is_keyless:
        raise InputError(f"{bundle_path}: is a keyless (Sigstore) bundle; it has no key to check.")
    if not bundle_signed_by(bundle, key):
        return BundleCheck(False, f"{bundle_path}: the signature does not verify with {key_path}.")
    return subject_check(bundle_path, bundle.payload_type, bundle.payload, artifact)


def subject_check(bundle_path: Path, payload_type: str, payload: bytes,
                  artifact: Path) -> BundleCheck:
    """After the signature verified: in-toto payload type, and the artifact among subjects."""
    if payload_type != INTOTO_PAYLOAD_TYPE:
        return BundleCheck(False, f"{bundle_path}: payload type {payload_type!r} is not "
                                  f"{INTOTO_PAYLOAD_TYPE}.")
    from verifier.vsa_check import failed_result

    refusal = failed_result(payload_type, payload, str(bundle_path))
    if refusal is not None:  # a signed "no" must never read as OK
        return BundleCheck(False, refusal)
    statement = parse_statement(payload, str(bundle_path))
    digest = Hasher().digest_paths([artifact])[0]
    for subject in statement.subjects:
        if subject["digest"].get(digest.algorithm) == digest.value:
            return BundleCheck(True, f"{bundle_path}: verified; {artifact} is subject "
                                     f"{subject['name']}.", subject["name"])
    return BundleCheck(False, f"{bundle_path}: {artifact} ({digest.algorithm} "
                              f"{digest.value[:16]}…) is not a subject of this attestation.")
