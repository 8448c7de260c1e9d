"""Certificate signers: a DSSE bundle signed by a key whose x509 certificate chains to a root
the policy names (OMS's certificate method, or any private PKI).

The bundle carries the leaf first, then intermediates (`verificationMaterial.x509CertificateChain`,
or a lone `certificate`). It counts for a policy signer when:

- the DSSE signature verifies under the leaf's public key (the curve's hash for ECDSA);
- the leaf chains through the bundle's intermediates to one of the roots in the policy's
  `roots` file, every certificate valid at the verification time, every issuer a CA allowed
  to sign certificates (cryptography's X.509 path validation, RFC 5280 profile for CAs);
- the leaf's key usage allows digital signatures and its extended key usage names code
  signing;
- the leaf's subject (RFC 4514 text) or one of its subject alternative names equals what the
  policy names, as a name of the kind the policy's text is: `release@example.com` is an e-mail
  address (rfc822Name), `https://…` or any `scheme:…` a URI, anything else a DNS name. A URI or
  DNS name that merely spells an e-mail address is another name, held by whoever the CA gave
  it to.

The bundle says nothing trustworthy about when it was signed (OMS certificate bundles carry no
timestamp), so the chain must be valid now: the same choice model_signing makes. A root
certificate inside the bundle is ignored; only the policy's file supplies roots.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.errors import InputError
from verifier.formats import readers
from verifier.formats.envelope import Bundle, b64decode, pae


@dataclass(frozen=True)
class CertificateIdentity:
    """A policy signer of the `certificate` kind."""

    roots: Path
    subject: str | None = None
    san: str | None = None

    @property
    def wanted(self) -> str:
        if self.subject is not None:
            return f"subject {self.subject}"
        return f"{san_kind(self.san or '')} SAN {self.san}"


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def san_kind(text: str) -> str:
    """The kind of subject alternative name a policy's `san` text means: a URI when it starts
    with a scheme, else an e-mail address when it holds '@', else a DNS name."""
    if _SCHEME.match(text):
        return "URI"
    return "e-mail" if "@" in text else "DNS"


def load_roots(path: Path) -> tuple[Any, ...]:
    """The PEM certificates in a roots file; InputError naming the file when unusable. The
    file is read every time (a relative name, or a file replaced since, must never be answered
    from memory); only the parsing of the same bytes is remembered."""
    data = readers.read_bytes(path, "PEM file of root certificates", readers.MAX_TRUST_BYTES,
                              missing=f"{path}: no such certificate roots file.")
    roots = _parsed_roots(data)
    if not roots:
        raise InputError(f"{path}: holds no PEM certificate.")
    return roots


@functools.lru_cache(maxsize=32)
def _parsed_roots(data: bytes) -> tuple[Any, ...]:
    from cryptography import x509

    try:
        return tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        return ()


def roots_fingerprint(path: Path) -> str:
    """A short, stable name for a roots file's content (for signer identities)."""
    from cryptography.hazmat.primitives import serialization

    digest = hashlib.sha256()
    for root in load_roots(path):
        digest.update(root.public_bytes(serialization.Encoding.DER))
    return digest.hexdigest()[:16]


def bundle_certificates(raw: dict[str, Any]) -> list[Any]:
    """The certificates a bundle carries, leaf first; [] when it carries none or bad ones."""
    from cryptography import x509

    material = raw.get("verificationMaterial")
    if not isinstance(material, dict):
        return []
    chain = material.get("x509CertificateChain")
    entries = chain.get("certificates") if isinstance(chain, dict) else None
    if entries is None and isinstance(material.get("certificate"), dict):
        entries = [material["certificate"]]
    if not isinstance(entries, list):
        return []
    certificates = []
    for entry in entries[:10]:  # a longer chain is no chain any CA issues
        try:
            certificates.append(x509.load_der_x509_certificate(b64decode(entry["rawBytes"])))
        except (KeyError, TypeError, ValueError):
            return []
    return certificates


def _names(leaf: Any) -> tuple[str, list[tuple[str, str]]]:
    """The leaf's subject and its (kind, value) subject alternative names."""
    from cryptography import x509

    kinds = (("e-mail", x509.RFC822Name), ("URI", x509.UniformResourceIdentifier),
             ("DNS", x509.DNSName))
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        values = [(kind, str(v)) for kind, general in kinds
                  for v in sans.get_values_for_type(general)]
    except x509.ExtensionNotFound:
        values = []
    return leaf.subject.rfc4514_string(), values


def chain_problem(certificates: list[Any], roots: tuple[Any, ...], at: dt.datetime) -> str | None:
    """Why the leaf does not chain to the roots for code signing at `at`, or None if it does."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID
    from cryptography.x509.verification import (
        ExtensionPolicy,
        PolicyBuilder,
        Store,
        VerificationError,
    )

    if not certificates:
        return "it carries no certificate"
    leaf, intermediates = certificates[0], certificates[1:]
    # The leaf's own extensions are checked below (code signing, not TLS client auth); the CAs
    # above it get the RFC 5280 CA profile.
    verifier = (PolicyBuilder().store(Store(list(roots))).time(at)
                .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                                    ee_policy=ExtensionPolicy.permit_all())
                .build_client_verifier())
    try:
        verifier.verify(leaf, intermediates)
    except (VerificationError, ValueError) as error:
        return f"its certificate does not chain to the roots ({' '.join(str(error).split())})"
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.digital_signature:
            return "its certificate's key usage does not allow digital signatures"
    except x509.ExtensionNotFound:
        return "its certificate has no key usage"
    try:
        extended = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "its certificate has no extended key usage (code signing is required)"
    if ExtendedKeyUsageOID.CODE_SIGNING not in extended:
        return "its certificate is not for code signing"
    return None


def check_certificate_signer(bundle: Bundle, spec: CertificateIdentity,
                             at: dt.datetime | None = None) -> str | None:
    """The matched subject or SAN when the bundle is signed under spec, else None."""
    from verifier.formats.signing import public_key_from

    certificates = bundle_certificates(bundle.raw)
    if not certificates:
        return None
    try:
        key = public_key_from(certificates[0].public_key(), bundle.source)
    except InputError:
        return None
    message = pae(bundle.payload_type, bundle.payload)
    if not any(key.verify(entry.sig, message) for entry in bundle.signatures):
        return None
    if chain_problem(certificates, load_roots(spec.roots),
                     at or dt.datetime.now(dt.UTC)) is not None:
        return None
    subject, sans = _names(certificates[0])
    if spec.subject is not None:
        return subject if subject == spec.subject else None
    wanted = (san_kind(spec.san or ""), spec.san)
    return spec.san if wanted in sans else None


def leaf_key_hint(bundle: Bundle) -> str:
    """The hint (as for a PEM key) of the key in the bundle's leaf certificate."""
    from verifier.formats.signing import public_key_from

    return public_key_from(bundle_certificates(bundle.raw)[0].public_key(), bundle.source).hint


def explain(bundle: Bundle, spec: CertificateIdentity, at: dt.datetime | None = None) -> str:
    """Why a bundle does not count for this certificate signer (for messages)."""
    from verifier.formats.signing import public_key_from

    certificates = bundle_certificates(bundle.raw)
    if not certificates:
        return "it carries no x509 certificate chain"
    try:
        key = public_key_from(certificates[0].public_key(), bundle.source)
    except InputError as error:
        return str(error)
    message = pae(bundle.payload_type, bundle.payload)
    if not any(key.verify(entry.sig, message) for entry in bundle.signatures):
        return "its signature does not verify under its certificate's key"
    problem = chain_problem(certificates, load_roots(spec.roots), at or dt.datetime.now(dt.UTC))
    if problem is not None:
        return problem
    subject, sans = _names(certificates[0])
    return (f"its certificate is issued to {subject}"
            + (f" ({', '.join(f'{k} {v}' for k, v in sans)})" if sans else "")
            + f", not {spec.wanted}")
