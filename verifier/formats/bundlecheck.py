"""verify-bundle: one bundle, one artifact, one trusted key (keyless bundles: `keyless`).

The artifact is a path, or `sha256:HEX` when only its digest is at hand (the Sigstore
conformance suite verifies both ways). A key-signed bundle is either a DSSE envelope (an
in-toto attestation: the artifact must be one of its subjects) or a message signature over the
artifact itself (what `cosign sign-blob --key` writes). Log entries and timestamps a key-signed
bundle carries are checked against a trusted root when one is given (`transparency`); without
one they are reported as unchecked, never as verified.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.errors import InputError, SignatureError
from verifier.formats.envelope import (
    ACCEPTED_MEDIA_TYPES,
    INTOTO_PAYLOAD_TYPE,
    b64decode,
    parse_bundle,
)
from verifier.formats.signing import PublicKey, load_public_key
from verifier.formats.statement import VSA_PREDICATE_TYPE, parse_statement

_DIGEST = re.compile(r"sha256:([0-9a-fA-F]{64})")
# Message-signature bundles of every published version (v0.1 and v0.2 came before DSSE).
MESSAGE_MEDIA_TYPES = (*ACCEPTED_MEDIA_TYPES,
                       "application/vnd.dev.sigstore.bundle+json;version=0.1")


@dataclass(frozen=True)
class ArtifactRef:
    """The artifact a bundle should cover: a file or directory, or only a sha256 digest."""

    text: str
    path: Path | None = None
    given_sha256: str | None = None

    @classmethod
    def parse(cls, text: str) -> ArtifactRef:
        """`sha256:HEX` is a digest; anything else a path (write ./sha256:… for such a file)."""
        match = _DIGEST.fullmatch(text)
        if match:
            return cls(text, given_sha256=match.group(1).lower())
        if text.startswith("sha256:"):
            raise InputError(f"--artifact {text}: a digest is sha256: and 64 hex digits.")
        return cls(text, path=Path(text))

    def digest(self) -> tuple[str, str]:
        """(algorithm, hex): sha256 of a file or the given digest, dirHash of a directory."""
        if self.given_sha256 is not None:
            return "sha256", self.given_sha256
        from verifier.formats.digest import Hasher

        assert self.path is not None
        if not self.path.exists():
            raise InputError(f"{self.path}: no such artifact.")
        result = Hasher().digest_paths([self.path])[0]
        return result.algorithm, result.value

    def file_sha256(self) -> str:
        """The sha256 a message signature covers: one file's, or the digest given."""
        if self.path is not None and self.path.is_dir():
            raise InputError(f"{self.path}: a message signature covers one file, not a "
                             "directory.")
        return self.digest()[1]


@dataclass(frozen=True)
class BundleCheck:
    ok: bool
    message: str
    subject_name: str | None = None
    signer: str | None = None  # the certificate identity, for keyless bundles
    notes: tuple[str, ...] = field(default=())
    verified_times: tuple[str, ...] = field(default=())
    kind: str = "attestation"  # or "message-signature": a signature over the artifact itself

    def to_dict(self) -> dict[str, Any]:
        return {"verified": self.ok, "message": self.message, "subject": self.subject_name,
                "signer": self.signer, "notes": list(self.notes),
                "verified_times": list(self.verified_times), "kind": self.kind}


def _as_ref(artifact: Path | ArtifactRef) -> ArtifactRef:
    return artifact if isinstance(artifact, ArtifactRef) else ArtifactRef(str(artifact),
                                                                          path=artifact)


def check_bundle(bundle_path: Path, artifact: Path | ArtifactRef, key_path: Path,
                 trusted_root: Path | None = None) -> BundleCheck:
    """A key-signed bundle: signature under the given key, log entries and timestamps under
    the trusted root (when given), and the artifact covered (subject or signed digest)."""
    from verifier.formats.trustroot import read_bundle_json

    ref = _as_ref(artifact)
    key = load_public_key(key_path)
    raw = read_bundle_json(bundle_path)
    material = raw.get("verificationMaterial")
    if isinstance(material, dict) and (material.get("certificate")
                                       or material.get("x509CertificateChain")):
        raise InputError(f"{bundle_path}: is signed under a certificate, not a bare key; "
                         "verify a Sigstore bundle with --identity and --issuer, or one "
                         "chained to your own CA through a policy's certificate signer.")
    if "messageSignature" in raw and "dsseEnvelope" not in raw:
        return _message_signature(bundle_path, raw, ref, key, trusted_root)
    bundle = parse_bundle(raw, str(bundle_path))
    from verifier.formats.envelope import pae

    message = pae(bundle.payload_type, bundle.payload)
    verified = [entry.sig for entry in bundle.signatures if key.verify(entry.sig, message)]
    if not verified:
        return BundleCheck(False, f"{bundle_path}: the signature does not verify with "
                                  f"{key_path}.")
    times: list[str] = []
    notes = _unchecked(raw, trusted_root)
    if trusted_root is not None:
        from verifier.formats.transparency import Signed, check_log_and_time

        try:
            times = check_log_and_time(raw, Signed(verified[0], _der(key), None,
                                                   bundle.payload_type, bundle.payload),
                                       trusted_root, str(bundle_path))
        except SignatureError as error:
            return BundleCheck(False, str(error))
    result = subject_check(bundle_path, bundle.payload_type, bundle.payload, ref)
    return BundleCheck(result.ok, result.message, result.subject_name, notes=notes,
                       verified_times=tuple(times))


def _der(key: PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                                serialization.PublicFormat.SubjectPublicKeyInfo)


def _unchecked(raw: dict[str, Any], trusted_root: Path | None) -> tuple[str, ...]:
    if trusted_root is not None:
        return ()
    material = raw.get("verificationMaterial") or {}
    carried = []
    if material.get("tlogEntries"):
        carried.append("transparency-log entries")
    if (material.get("timestampVerificationData") or {}).get("rfc3161Timestamps"):
        carried.append("signed timestamps")
    if not carried:
        return ()
    return (f"its {' and '.join(carried)} were not checked; give --trusted-root to check "
            "them",)


def _message_signature(bundle_path: Path, raw: dict[str, Any], ref: ArtifactRef,
                       key: PublicKey, trusted_root: Path | None) -> BundleCheck:
    """A signature over the artifact's bytes (hashedrekord), verified with a trusted key."""
    source = str(bundle_path)
    if raw.get("mediaType") not in MESSAGE_MEDIA_TYPES:
        raise InputError(f"{source}: is not a Sigstore bundle (mediaType is "
                         f"{raw.get('mediaType')!r}).")
    signature_part = raw["messageSignature"]
    if not isinstance(signature_part, dict):
        raise InputError(f"{source}: messageSignature is not an object.")
    try:
        signature = b64decode(signature_part.get("signature"))
    except ValueError:
        raise InputError(f"{source}: the message signature is not valid base64.") from None
    digest_hex = ref.file_sha256()
    digest = bytes.fromhex(digest_hex)
    stated = signature_part.get("messageDigest")
    if stated is not None:
        # The digest in the bundle is only a hint, but one that disagrees marks another file.
        try:
            stated_digest = b64decode(stated.get("digest"))
        except (AttributeError, ValueError):
            raise InputError(f"{source}: messageDigest is malformed.") from None
        if stated.get("algorithm") != "SHA2_256" or stated_digest != digest:
            return BundleCheck(False, f"{source}: its message digest is not the sha256 of "
                                      f"{ref.text}.")
    if not _verifies_over_digest(key, signature, digest, ref):
        return BundleCheck(False, f"{source}: the signature over {ref.text} does not verify "
                                  f"with {key.source}.")
    times: list[str] = []
    if trusted_root is not None:
        from verifier.formats.transparency import Signed, check_log_and_time

        try:
            times = check_log_and_time(raw, Signed(signature, _der(key), digest), trusted_root,
                                       source)
        except SignatureError as error:
            return BundleCheck(False, str(error))
    name = ref.path.name if ref.path is not None else ref.text
    return BundleCheck(True, f"{source}: verified; it is a message signature over {ref.text}, "
                             "not an in-toto attestation.", name,
                       notes=_unchecked(raw, trusted_root), verified_times=tuple(times),
                       kind="message-signature")


def _verifies_over_digest(key: PublicKey, signature: bytes, digest: bytes,
                          ref: ArtifactRef) -> bool:
    """Does the signature cover the artifact whose sha256 is `digest`? ECDSA and RSA sign the
    sha256 prehash (as hashedrekord records it); Ed25519 signs the bytes themselves."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

    public = key.key
    prehashed = utils.Prehashed(hashes.SHA256())
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, digest, ec.ECDSA(prehashed))
            return True
        if isinstance(public, rsa.RSAPublicKey):
            for pad in (padding.PKCS1v15(), padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                         salt_length=padding.PSS.AUTO)):
                try:
                    public.verify(signature, digest, pad, prehashed)
                    return True
                except InvalidSignature:
                    continue
            return False
        if isinstance(public, ed25519.Ed25519PublicKey):
            if ref.path is None:
                raise InputError(f"{ref.text}: an Ed25519 message signature covers the file's "
                                 "bytes, so it cannot be checked by digest; give the file.")
            return key.verify(signature, ref.path.read_bytes())
    except (InvalidSignature, ValueError):
        return False
    return False


def subject_check(bundle_path: Path, payload_type: str, payload: bytes,
                  artifact: Path | ArtifactRef) -> BundleCheck:
    """After the signature verified: in-toto payload type, and the artifact among subjects."""
    if payload_type != INTOTO_PAYLOAD_TYPE:
        return BundleCheck(False, f"{bundle_path}: payload type {payload_type!r} is not "
                                  f"{INTOTO_PAYLOAD_TYPE}.")
    refusal = failed_result(payload_type, payload, str(bundle_path))
    if refusal is not None:  # a signed "no" must never read as OK
        return BundleCheck(False, refusal)
    ref = _as_ref(artifact)
    statement = parse_statement(payload, str(bundle_path))
    algorithm, value = ref.digest()
    for subject in statement.subjects:
        if subject["digest"].get(algorithm) == value:
            return BundleCheck(True, f"{bundle_path}: verified; {ref.text} is subject "
                                     f"{subject['name']}.", subject["name"])
    return BundleCheck(False, f"{bundle_path}: {ref.text} ({algorithm} "
                              f"{value[:16]}…) is not a subject of this attestation.")


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
