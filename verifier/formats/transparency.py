"""Transparency-log entries and signed timestamps of a key-signed Sigstore bundle.

A "managed-key" bundle (cosign's `--key`, sigstore-go with a public key) is signed with a key
rather than a Fulcio certificate, yet may carry Rekor entries and RFC 3161 timestamps.
sigstore-python refuses such bundles outright (it expects a certificate), so the checks live
here, against a trusted root the caller names:

- every log entry's inclusion proof and signed checkpoint, and its signed entry timestamp when
  it has one, under the root's Rekor keys (sigstore-python's own Merkle and checkpoint code);
- every log entry's body says what the bundle says: the same signature, the same public key
  (the one the caller trusts, not the one the entry carries), the same artifact digest or DSSE
  payload;
- every RFC 3161 timestamp verifies under one of the root's timestamp authorities;
- at least one verified time exists (an integrated time vouched for by a signed entry
  timestamp, or a TSA timestamp), as the Sigstore client specification requires.

sigstore-python 4.x is imported here, including two of its internal modules (Merkle inclusion
and checkpoints): they are what its own verifier runs, and the version is pinned below 5.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.errors import InputError, SignatureError

MAX_TIMESTAMPS = 32  # sigstore-python's bound, so a bundle cannot make us verify thousands


@dataclass(frozen=True)
class Signed:
    """What the bundle signs, for comparing with a log entry's body."""

    signature: bytes
    public_der: bytes  # the trusted key, SubjectPublicKeyInfo DER
    artifact_sha256: bytes | None = None  # message signatures
    payload_type: str | None = None  # DSSE
    payload: bytes | None = None


def _b64(value: Any, what: str, source: str) -> bytes:
    try:
        if not isinstance(value, str):
            raise ValueError
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{source}: {what} is not valid base64.") from None


def _key_der(pem_or_der: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    try:
        key = (serialization.load_pem_public_key(pem_or_der)
               if pem_or_der.lstrip().startswith(b"-----")
               else serialization.load_der_public_key(pem_or_der))
    except Exception:  # any unreadable key means "not ours"
        return b""
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _body_problem(body: dict[str, Any], kind: str, version: str, signed: Signed) -> str | None:
    """Why the entry body does not describe this bundle, or None when it does."""
    spec = body.get("spec") if isinstance(body, dict) else None
    if not isinstance(spec, dict):
        return "the entry body has no spec"
    try:
        if kind == "hashedrekord" and version == "0.0.1":
            data_hash = spec["data"]["hash"]
            signature = spec["signature"]
            key = _key_der(base64.b64decode(signature["publicKey"]["content"]))
            digest = bytes.fromhex(data_hash["value"])
            if signed.payload is not None:
                return "a DSSE envelope cannot be a hashedrekord 0.0.1 entry"
            if data_hash["algorithm"] != "sha256" or digest != signed.artifact_sha256:
                return "the entry is for another artifact digest"
            if base64.b64decode(signature["content"]) != signed.signature:
                return "the entry holds another signature"
            if key != signed.public_der:
                return "the entry names another public key"
            return None
        if kind == "hashedrekord" and version == "0.0.2":
            record = spec["hashedRekordV002"]
            algorithm = record["data"]["algorithm"]
            digest = base64.b64decode(record["data"]["digest"])
            signature = record["signature"]
            verifier = signature["verifier"]
            raw = (verifier.get("publicKey") or {}).get("rawBytes")
            key = _key_der(base64.b64decode(raw)) if raw else b""
            hashers = {"SHA2_256": hashlib.sha256, "SHA2_384": hashlib.sha384,
                       "SHA2_512": hashlib.sha512}
            if signed.payload is not None:
                from verifier.formats.envelope import pae

                assert signed.payload_type is not None
                if algorithm not in hashers:
                    return f"the entry hashes with {algorithm}"
                expected = hashers[algorithm](pae(signed.payload_type, signed.payload)).digest()
            else:
                if algorithm != "SHA2_256":
                    return f"the entry hashes with {algorithm}, not SHA2_256"
                expected = signed.artifact_sha256 or b""
            if digest != expected:
                return "the entry is for another digest"
            if base64.b64decode(signature["content"]) != signed.signature:
                return "the entry holds another signature"
            if key != signed.public_der:
                return "the entry names another public key"
            return None
        if kind == "dsse" and version == "0.0.1":
            if signed.payload is None:
                return "a message signature cannot be a dsse entry"
            payload_hash = spec["payloadHash"]
            if (payload_hash["algorithm"] != "sha256"
                    or payload_hash["value"] != hashlib.sha256(signed.payload).hexdigest()):
                return "the entry is for another payload"
            for entry in spec.get("signatures") or []:
                if (base64.b64decode(entry["signature"]) == signed.signature
                        and _key_der(base64.b64decode(entry["verifier"])) == signed.public_der):
                    return None
            return "the entry does not hold this signature under this key"
    except (KeyError, TypeError, ValueError, binascii.Error):
        return "the entry body is malformed"
    return f"log entries of kind {kind} {version} are not supported"


def _trusted_root(path: Path) -> Any:
    from verifier.formats.trustroot import _verifier

    return _verifier(str(path))


def check_log_and_time(raw: dict[str, Any], signed: Signed, trusted_root: Path,
                       source: str) -> list[str]:
    """Verify the bundle's log entries and timestamps against the trusted root.

    Returns the verified times (ISO 8601, for the report); raises SignatureError when anything
    does not verify, InputError when the bundle is malformed.
    """
    import datetime as dt

    from rfc3161_client import decode_timestamp_response
    from sigstore._internal.trust import KeyringPurpose
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import TransparencyLogEntry
    from sigstore_models.rekor.v1 import TransparencyLogEntry as EntryModel

    verifier = _trusted_root(trusted_root)
    material = raw.get("verificationMaterial") or {}
    entries = material.get("tlogEntries") or []
    stamps = ((material.get("timestampVerificationData") or {}).get("rfc3161Timestamps") or [])
    if not isinstance(entries, list) or not isinstance(stamps, list):
        raise InputError(f"{source}: tlogEntries and rfc3161Timestamps must be lists.")
    if not entries:
        raise SignatureError(f"{source}: carries no transparency-log entry to check against "
                             f"{trusted_root}.")
    if len(stamps) > MAX_TIMESTAMPS:
        raise InputError(f"{source}: carries {len(stamps)} timestamps; at most "
                         f"{MAX_TIMESTAMPS} are read.")
    keyring = verifier._trusted_root.rekor_keyring(KeyringPurpose.VERIFY)
    times: list[dt.datetime] = []
    for number, entry in enumerate(entries, start=1):
        label = f"{source}: log entry {number}"
        try:
            model = EntryModel.from_dict(entry)
            log_entry = TransparencyLogEntry(model)
        except Exception as error:  # pydantic and InvalidBundle: a malformed entry
            raise SignatureError(f"{label} is unusable ({_one_line(error)}).") from None
        kind = model.kind_version.kind
        version = model.kind_version.version
        try:
            body = json.loads(model.canonicalized_body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SignatureError(f"{label}: its body is not JSON.") from None
        problem = _body_problem(body, kind, version, signed)
        if problem is not None:
            raise SignatureError(f"{label} does not match the bundle ({problem}).")
        try:
            log_entry._verify(keyring)
        except SigstoreError as error:
            raise SignatureError(f"{label} does not verify under {trusted_root} "
                                 f"({_one_line(error)}).") from None
        if model.integrated_time and model.inclusion_promise:
            if not (kind in ("dsse", "hashedrekord") and version == "0.0.1"):
                raise SignatureError(f"{label}: an integrated time is only defined for "
                                     "dsse and hashedrekord 0.0.1 entries.")
            times.append(dt.datetime.fromtimestamp(int(model.integrated_time), tz=dt.UTC))
    seen: set[bytes] = set()
    for number, stamp in enumerate(stamps, start=1):
        data = _b64(stamp.get("signedTimestamp") if isinstance(stamp, dict) else None,
                    f"timestamp {number}", source)
        if data in seen:
            raise SignatureError(f"{source}: timestamp {number} appears twice.")
        seen.add(data)
        try:
            response = decode_timestamp_response(data)
        except Exception:  # the ASN.1 decoder's own errors
            raise InputError(f"{source}: timestamp {number} is not an RFC 3161 response.") \
                from None
        result = verifier._verify_signed_timestamp(response, signed.signature)
        if result is None:
            raise SignatureError(f"{source}: timestamp {number} does not verify under a "
                                 f"timestamp authority of {trusted_root}.")
        times.append(result.time)
    if not times:
        raise SignatureError(f"{source}: no verified time (no signed entry timestamp and no "
                             "trusted RFC 3161 timestamp).")
    return sorted(t.isoformat() for t in times)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    text = text.rstrip(".")
    return text[:200] + "…" if len(text) > 200 else text
