"""Who signed a bundle, in the policy's own names.

A bundle is attributed to every policy signer whose key (or keyless identity, or certificate
chain) verifies it; the keyid hint inside the bundle is never consulted. Two names sharing one
key are one identity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from verifier.errors import InputError
from verifier.formats.certsigner import (
    CertificateIdentity,
    check_certificate_signer,
    leaf_key_hint,
    roots_fingerprint,
)
from verifier.formats.envelope import Bundle, pae
from verifier.formats.signing import PublicKey, load_public_key
from verifier.judgement.policy import KeylessIdentity, Policy

# Checks one keyless bundle against one identity; returns the signing identity or None.
KeylessCheck = Callable[[Bundle, KeylessIdentity, Path | None], str | None]


@dataclass(frozen=True)
class Attribution:
    names: tuple[str, ...]  # policy signer names that verify the bundle
    identities: tuple[str, ...]  # the distinct underlying identities (key hint, cert identity)
    # (name, identity): the identity under which each name verified it. A key's is its hint; a
    # certificate's, its leaf key's hint; a keyless signature's, the certificate's issuer and
    # SAN, whatever pattern of the policy matched it.
    pairs: tuple[tuple[str, str], ...] = ()


def attribution_of(pairs: Iterable[tuple[str, str]]) -> Attribution:
    """The attribution made of (name, identity) pairs."""
    ordered = tuple(sorted(set(pairs)))
    return Attribution(tuple(sorted({n for n, _ in ordered})),
                       tuple(sorted({i for _, i in ordered})), ordered)


def merged(first: Attribution, second: Attribution) -> Attribution:
    """Both copies' verified signers (two files carrying one payload)."""
    return Attribution(
        tuple(sorted(set(first.names) | set(second.names))),
        tuple(sorted(set(first.identities) | set(second.identities))),
        tuple(sorted(set(first.pairs) | set(second.pairs))))


class TrustedSigners:
    """The policy's signers, loaded once, able to say who signed a bundle."""

    def __init__(self, policy: Policy, keyless_check: KeylessCheck | None = None) -> None:
        self._keys: dict[str, PublicKey] = {}
        self._names_by_hint: dict[str, list[str]] = {}
        self._keyless: dict[str, KeylessIdentity] = {}
        self._certificates: dict[str, tuple[CertificateIdentity, str]] = {}
        self._keyless_check = keyless_check
        self._trusted_root = policy.trusted_root
        for name, spec in sorted(policy.signers.items()):
            if spec.key_path is not None:
                try:
                    self._keys[name] = load_public_key(spec.key_path)
                except InputError as error:
                    raise InputError(f"{policy.path}: signer {name!r}: {error}") from None
                self._names_by_hint.setdefault(self._keys[name].hint, []).append(name)
            elif spec.keyless is not None:
                self._keyless[name] = spec.keyless
            elif spec.certificate is not None:
                try:
                    roots = roots_fingerprint(spec.certificate.roots)
                except InputError as error:
                    raise InputError(f"{policy.path}: signer {name!r}: {error}") from None
                self._certificates[name] = (spec.certificate, roots)

    def attribute(self, bundle: Bundle) -> Attribution:
        pairs: set[tuple[str, str]] = set()
        if bundle.is_keyless:
            if self._keyless_check is not None:
                for name, spec in self._keyless.items():
                    identity = self._keyless_check(bundle, spec, self._trusted_root)
                    if identity is not None:
                        pairs.add((name, f"sigstore:{spec.issuer}:{identity}"))
            for name, (certificate, _) in self._certificates.items():
                if check_certificate_signer(bundle, certificate) is not None:
                    # One certificate is one signer however the policy names it (by subject,
                    # by SAN, or as a plain key): its identity is its key.
                    pairs.add((name, f"key:{leaf_key_hint(bundle)}"))
        else:
            for hint in self._verifying_hints(bundle):
                pairs.update((name, f"key:{hint}") for name in self._names_by_hint[hint])
        return attribution_of(pairs)

    def attribute_message(self, message: bytes, signatures: Iterable[bytes]) -> Attribution:
        """The key signers under whose key one of the signatures over `message` verifies:
        for evidence that is not a DSSE bundle (in-toto's classic links sign canonical JSON).
        Keyless and certificate signers need a bundle, so they never match here."""
        pairs: set[tuple[str, str]] = set()
        candidates = list(signatures)
        for hint, owners in self._names_by_hint.items():
            if any(self._keys[owners[0]].verify(sig, message) for sig in candidates):
                pairs.update((name, f"key:{hint}") for name in owners)
        return attribution_of(pairs)

    def _verifying_hints(self, bundle: Bundle) -> set[str]:
        """The policy keys (by hint) under which some signature of the bundle verifies.

        The key a signature's keyid (or the bundle's hint) names is tried first, so an honest
        bundle costs one verification however many signers the policy has; only when it does
        not verify are the other keys tried. The hint orders the work, it never decides trust.
        """
        message = pae(bundle.payload_type, bundle.payload)
        found: set[str] = set()
        for entry in bundle.signatures:
            named = [h for h in (entry.keyid, bundle.public_key_hint) if h in self._names_by_hint]
            for hint in dict.fromkeys(named + list(self._names_by_hint)):
                if self._keys[self._names_by_hint[hint][0]].verify(entry.sig, message):
                    found.add(hint)
                    break
        return found

    @property
    def keyless_names(self) -> list[str]:
        return sorted(self._keyless)

    @property
    def certificate_names(self) -> list[str]:
        return sorted(self._certificates)

    @property
    def key_hints(self) -> set[str]:
        """The hints (sha256 of the public key PEM) of the policy's keys."""
        return set(self._names_by_hint)

    def identity_of(self, name: str) -> str:
        if name in self._keys:
            return f"key:{self._keys[name].hint}"
        if name in self._certificates:
            certificate, roots = self._certificates[name]
            return f"x509:{roots}:{certificate.subject or certificate.san}"
        spec = self._keyless[name]
        return f"sigstore:{spec.issuer}:{spec.identity or spec.identity_regex}"


def unattributed_reason(bundle: Bundle, signers: TrustedSigners) -> str:
    """Why no policy signer verifies a bundle, as far as the bundle and the policy's kinds of
    signer tell (for a note: a signature that counts for nothing must say why)."""
    material = bundle.raw.get("verificationMaterial")
    material = material if isinstance(material, dict) else {}
    if not bundle.is_keyless:
        return ("its signature verifies under no key the policy names (another key, or "
                "altered after signing)")
    if not (signers.keyless_names or signers.certificate_names):
        return "it is signed with a certificate, and the policy names only key signers"
    if signers.keyless_names and not material.get("tlogEntries"):
        return ("it carries no transparency-log entry, so no Sigstore identity can verify it "
                "(neither its inclusion in the log nor when it was signed is proven)"
                + ("; and no certificate signer of the policy accepts its certificate"
                   if signers.certificate_names else ""))
    return ("its certificate satisfies no keyless identity or certificate signer of the policy "
            "(another identity, issuer, CA, or Sigstore instance)")
