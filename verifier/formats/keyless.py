"""Sigstore keyless: sign with a CI's OIDC identity, verify certificate identities offline.

Signing goes through sigstore-python (Fulcio certificate, Rekor entry, timestamps) and writes
sigstore's own bundle v0.3. Verification never touches the network: it checks the bundle against
a trusted root (the one shipped in `verifier/schemas/`, or a file the user names), then pins the
identity the policy names. sigstore-python checks neither the DSSE payload type nor that the
statement's subjects cover the artifact; those checks are ours and live here and in `verify`.
`sigstore` is imported inside functions only, so that `--help` and key-only runs stay fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verifier.errors import InputError, SignatureError
from verifier.formats import readers
from verifier.formats.envelope import (
    INTOTO_PAYLOAD_TYPE,
    Bundle,
    b64decode,
    parse_bundle,
)
from verifier.formats.trustroot import _one_line, _verifier, read_bundle_json

if TYPE_CHECKING:
    from sigstore.models import Bundle as SigstoreBundle
    from sigstore.oidc import IdentityToken
    from sigstore.verify.policy import VerificationPolicy

TOKEN_VARIABLE = "SIGSTORE_ID_TOKEN"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
PRODUCTION_ROOT = "schemas/sigstore-trusted-root-production.json"
STAGING_ROOT = "schemas/sigstore-trusted-root-staging.json"


@dataclass(frozen=True)
class KeylessIdentity:
    issuer: str
    identity: str | None = None
    identity_regex: str | None = None
    repository: str | None = None
    ref: str | None = None
    workflow_sha: str | None = None
    trigger: str | None = None


def shipped_trusted_root(*, staging: bool = False) -> Path:
    """The Sigstore trusted root shipped with the package (public-good production or staging)."""
    return Path(str(resources.files("verifier").joinpath(STAGING_ROOT if staging
                                                         else PRODUCTION_ROOT)))


class _Claim:
    """One certificate claim a policy pins, accepted in any of the extensions Fulcio writes it
    to (the original GitHub/issuer extensions, now deprecated, and their v2 successors); on
    failure it names the claim, which sigstore's AnyOf does not."""

    def __init__(self, label: str, expected: str, alternatives: list[Any]) -> None:
        self._label, self._expected, self._alternatives = label, expected, alternatives

    def verify(self, certificate: Any) -> None:
        from sigstore.errors import VerificationError

        reasons = []
        for alternative in self._alternatives:
            try:
                alternative.verify(certificate)
                return
            except VerificationError as error:
                reasons.append(_one_line(error))
        raise VerificationError(f"the certificate's {self._label} is not {self._expected!r}: "
                                f"{reasons[0]}")


def identity_policy(spec: KeylessIdentity) -> VerificationPolicy:
    """The certificate checks a policy signer asks for, as a sigstore verification policy.

    With `identity_regex`, only the issuer and GitHub claims are checked here; the SAN is
    matched against the regex (fullmatch) after the bundle verified.
    """
    from sigstore.verify import policy

    checks: list[Any] = [_Claim("OIDC issuer", spec.issuer, [
        policy.OIDCIssuer(spec.issuer), policy.OIDCIssuerV2(spec.issuer)])]
    if spec.identity is not None:
        checks.append(policy.Identity(identity=spec.identity))
    if spec.repository is not None:
        checks.append(_Claim("repository", spec.repository, [
            policy.GitHubWorkflowRepository(spec.repository),
            policy.OIDCSourceRepositoryURI(f"https://github.com/{spec.repository}")]))
    if spec.ref is not None:
        checks.append(_Claim("ref", spec.ref, [
            policy.GitHubWorkflowRef(spec.ref), policy.OIDCSourceRepositoryRef(spec.ref)]))
    if spec.workflow_sha is not None:
        checks.append(_Claim("workflow sha", spec.workflow_sha, [
            policy.GitHubWorkflowSHA(spec.workflow_sha),
            policy.OIDCSourceRepositoryDigest(spec.workflow_sha)]))
    if spec.trigger is not None:
        checks.append(_Claim("trigger", spec.trigger, [
            policy.GitHubWorkflowTrigger(spec.trigger), policy.OIDCBuildTrigger(spec.trigger)]))
    return policy.AllOf(checks)


def certificate_identities(certificate: Any) -> list[str]:
    """The identities a Fulcio certificate was issued to: its e-mail, URI and Sigstore SANs."""
    from cryptography import x509

    # Fulcio's "other name" SAN for usernames (sigstore-python checks the same OID).
    other_name = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.7")
    try:
        names = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    found = [*names.get_values_for_type(x509.RFC822Name),
             *names.get_values_for_type(x509.UniformResourceIdentifier)]
    found += [entry.value.decode(errors="replace")
              for entry in names.get_values_for_type(x509.OtherName)
              if entry.type_id == other_name]
    return sorted(set(found))


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise InputError(
            f"identity_regex {pattern!r} is not a valid regular expression ({error})."
        ) from None


def _sigstore_bundle(raw: dict[str, Any], source: str) -> SigstoreBundle:
    from sigstore.models import Bundle as SigstoreBundle

    if isinstance(raw.get("verificationMaterial"), dict) and "publicKey" in raw[
            "verificationMaterial"]:
        raise InputError(f"{source}: is signed with a key, not keyless; verify it with --key.")
    try:
        return SigstoreBundle.from_json(json.dumps(raw))
    except Exception as error:  # InvalidBundle, pydantic and base64 errors alike
        raise InputError(f"{source}: is not a valid Sigstore bundle ({_one_line(error)}).") \
            from None


@dataclass(frozen=True)
class KeylessSignature:
    """What a verified keyless bundle says: who signed, and the signed content."""

    identity: str  # the certificate SAN that satisfied the policy
    issuer: str
    payload_type: str | None = None  # DSSE bundles only
    payload: bytes | None = None


def _satisfied_identity(certificate: Any, spec: KeylessIdentity, source: str) -> str:
    """The SAN matching the spec (exact identity or regex fullmatch), else SignatureError."""
    identities = certificate_identities(certificate)
    if spec.identity is not None:
        if spec.identity in identities:
            return spec.identity
    else:
        assert spec.identity_regex is not None
        pattern = _compile(spec.identity_regex)
        for identity in identities:
            if pattern.fullmatch(identity):
                return identity
    wanted = spec.identity if spec.identity is not None else f"/{spec.identity_regex}/"
    raise SignatureError(f"{source}: the certificate was issued to "
                         f"{', '.join(identities) or 'no identity'}, not {wanted}.")


def verify_keyless(raw: dict[str, Any], spec: KeylessIdentity, trusted_root: Path | None,
                   source: str, *, artifact_sha256: str | None = None) -> KeylessSignature:
    """Verify a keyless bundle offline against a trusted root and a signer identity.

    A DSSE bundle returns its payload (the caller checks type and subjects); a message-signature
    bundle needs `artifact_sha256`, the digest of the file it signs. Raises SignatureError
    (exit 1) when it does not verify, InputError (exit 2) when bundle or root are unusable.
    """
    from sigstore.errors import Error as SigstoreError
    from sigstore.hashes import Hashed
    from sigstore_models.common.v1 import HashAlgorithm

    if spec.identity_regex is not None:
        _compile(spec.identity_regex)  # a bad regex is the policy's fault: exit 2 first
    verifier = _verifier(str(trusted_root or shipped_trusted_root()))
    bundle = _sigstore_bundle(raw, source)
    policy = identity_policy(spec)
    try:
        if "dsseEnvelope" in raw:
            payload_type, payload = verifier.verify_dsse(bundle, policy)
        elif artifact_sha256 is not None:
            digest = Hashed(algorithm=HashAlgorithm.SHA2_256,
                            digest=bytes.fromhex(artifact_sha256))
            verifier.verify_artifact(digest, bundle, policy)
            payload_type, payload = None, None
        else:
            raise InputError(f"{source}: is a message signature, not a DSSE attestation.")
    except SigstoreError as error:
        reason = _one_line(error)
        if len(reason) > 200:  # some sigstore messages carry whole checkpoints and hashes
            reason = reason[:200].rstrip() + "…"
        if "verified time" in reason or "chain" in reason:
            root = trusted_root or "the public-good trusted root shipped with model-verifier"
            reason += f"; was it signed by a Sigstore instance other than the one in {root}?"
        raise SignatureError(f"{source}: does not verify ({reason}).") from None
    identity = _satisfied_identity(bundle.signing_certificate, spec, source)
    return KeylessSignature(identity, spec.issuer, payload_type, payload)


def check_keyless(bundle: Bundle, spec: KeylessIdentity, trusted_root: Path | None
                  ) -> str | None:
    """The keyless check `verify` uses (trust.KeylessCheck): the signing identity, or None.

    Besides the Sigstore checks, the payload sigstore verified must be the very payload we
    read from the same file, so that nothing downstream can act on other bytes.
    """
    # A bad trusted root or regex is the policy's fault and stops verification (exit 2); a
    # bundle sigstore cannot even read counts for nothing, like any other unreadable file.
    _verifier(str(trusted_root or shipped_trusted_root()))
    if spec.identity_regex is not None:
        _compile(spec.identity_regex)
    try:
        signature = verify_keyless(bundle.raw, spec, trusted_root, bundle.source)
    except (SignatureError, InputError):
        return None
    if signature.payload != bundle.payload or signature.payload_type != bundle.payload_type:
        return None
    return signature.identity


def check_keyless_bundle(bundle_path: Path, artifact: Any, spec: KeylessIdentity,
                         trusted_root: Path | None = None) -> Any:
    """verify-bundle for a keyless bundle: Sigstore checks, identity, payload type, subject.

    `artifact` is a path or a `bundlecheck.ArtifactRef` (a path or `sha256:HEX`). Returns a
    `bundlecheck.BundleCheck`; a message-signature bundle (what `sigstore sign` writes for a
    plain file) is verified against the artifact's sha256 directly.
    """
    from verifier.formats.bundlecheck import ArtifactRef, BundleCheck, subject_check

    ref = artifact if isinstance(artifact, ArtifactRef) else ArtifactRef(str(artifact),
                                                                         path=artifact)
    raw = read_bundle_json(bundle_path)
    if "messageSignature" in raw:
        try:
            signature = verify_keyless(raw, spec, trusted_root, str(bundle_path),
                                       artifact_sha256=ref.file_sha256())
        except SignatureError as error:
            return BundleCheck(False, str(error))
        name = ref.path.name if ref.path is not None else ref.text
        return BundleCheck(True, f"{bundle_path}: verified; it is a message signature over "
                                 f"{ref.text}, not an in-toto attestation.", name,
                           signer=signature.identity, kind="message-signature")
    parse_bundle(raw, str(bundle_path))  # the same shape checks as every other bundle
    try:
        signature = verify_keyless(raw, spec, trusted_root, str(bundle_path))
    except SignatureError as error:
        return BundleCheck(False, str(error))
    assert signature.payload is not None and signature.payload_type is not None
    result = subject_check(bundle_path, signature.payload_type, signature.payload, ref)
    return BundleCheck(result.ok, result.message, result.subject_name,
                       signer=signature.identity)


# ---------------------------------------------------------------------------------------------
# Signing


class SigstoreSigner:
    """Signs DSSE payloads through Sigstore with an OIDC identity (record/rebuild --sigstore).

    The credential and the instance are checked when the signer is made, before a step runs,
    so that a missing permission costs seconds, not a training run. An ambient CI token is
    fetched again at signing time if the first one expired while the step ran.
    """

    def __init__(self, identity_token: str | None = None, trust_config: Path | None = None
                 ) -> None:
        self._explicit = identity_token or os.environ.get(TOKEN_VARIABLE) or None
        self._trust_config = trust_config
        self._token = self._obtain_token()
        self._context = self._signing_context()
        self._identity = f"sigstore:{self._token.federated_issuer}:{self._token.identity}"

    @property
    def identity(self) -> str:
        """`sigstore:ISSUER:IDENTITY`; after signing, IDENTITY is the certificate's SAN."""
        return self._identity

    def _obtain_token(self) -> IdentityToken:
        from sigstore.oidc import IdentityToken, detect_credential

        raw = self._explicit
        if raw is None:
            if os.environ.get("GITHUB_ACTIONS") and not (
                    os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL")
                    and os.environ.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")):
                raise InputError(
                    "cannot sign with Sigstore: this GitHub Actions job has no OIDC token "
                    "(ACTIONS_ID_TOKEN_REQUEST_URL is not set); add `permissions: id-token: "
                    "write` to the job."
                )
            try:
                raw = detect_credential()
            except Exception as error:  # IdentityError and the id package's own errors
                raise InputError(f"cannot sign with Sigstore: the CI's ambient OIDC "
                                 f"credential could not be obtained ({_one_line(error)}).") \
                    from None
            if raw is None:
                raise InputError(
                    "cannot sign with Sigstore: no OIDC identity token; pass --identity-token "
                    f"TOKEN, set {TOKEN_VARIABLE}, or run in CI with an ambient credential "
                    "(GitHub Actions: `permissions: id-token: write`)."
                )
        try:
            return IdentityToken(raw)
        except Exception as error:
            raise InputError(
                "cannot sign with Sigstore: the OIDC identity token is unusable "
                f"({_token_problem(error)})."
            ) from None

    def _signing_context(self) -> Any:
        from sigstore.models import ClientTrustConfig
        from sigstore.sign import SigningContext

        if self._trust_config is not None:
            path = self._trust_config
            text = readers.read_text(path, "Sigstore trust config", readers.MAX_TRUST_BYTES,
                                     missing=f"{path}: no such Sigstore trust config file.")
            try:
                return SigningContext.from_trust_config(ClientTrustConfig.from_json(text))
            except Exception as error:
                raise InputError(f"{path}: is not a usable Sigstore ClientTrustConfig "
                                 f"({_one_line(error)}).") from None
        try:
            return SigningContext.from_trust_config(ClientTrustConfig.production())
        except Exception as error:  # TUFError, network errors
            raise InputError(
                "cannot sign with Sigstore: the public-good instance's signing configuration "
                f"could not be fetched ({_one_line(error)}); pass --trust-config FILE for "
                "another instance."
            ) from None

    def _fresh_token(self) -> IdentityToken:
        if self._token.in_validity_period():
            return self._token
        if self._explicit is not None:
            raise InputError("cannot sign with Sigstore: the OIDC identity token expired while "
                             "the step ran; no attestation was written.")
        self._token = self._obtain_token()
        return self._token

    def sign_dsse(self, payload: bytes, payload_type: str) -> dict:
        """Sign the payload (an in-toto statement's exact bytes); return sigstore's bundle."""
        if payload_type != INTOTO_PAYLOAD_TYPE:
            raise InputError(f"Sigstore signs in-toto statements only, not {payload_type!r}.")
        token = self._fresh_token()
        statement = _exact_statement(payload)
        try:
            with self._context.signer(token) as signer:
                bundle = signer.sign_dsse(statement)
        except InputError:
            raise
        except Exception as error:  # Fulcio, Rekor, TSA, network: all mean "could not sign"
            raise InputError(f"cannot sign with Sigstore: {_describe_signing_error(error)}; "
                             "no attestation was written.") from None
        data = json.loads(bundle.to_json())
        signed = b64decode(data["dsseEnvelope"]["payload"])
        if signed != payload:  # would be a sigstore change; never write other bytes than ours
            raise InputError("cannot sign with Sigstore: the signed payload differs from the "
                             "statement (sha256 "
                             f"{hashlib.sha256(signed).hexdigest()[:16]}…); nothing written.")
        identities = certificate_identities(bundle.signing_certificate)
        if identities:
            self._identity = f"sigstore:{token.federated_issuer}:{identities[0]}"
        return data


def _token_problem(error: BaseException) -> str:
    """What is wrong with a token sigstore refused, from the JWT library's own exception."""
    import jwt

    cause = error.__cause__
    if isinstance(cause, jwt.ExpiredSignatureError) or "validity period" in str(error):
        return "it has expired, or is not valid yet"
    if isinstance(cause, jwt.ImmatureSignatureError):
        return "it is not valid yet"
    if isinstance(cause, jwt.InvalidAudienceError):
        return "its audience is not 'sigstore'"
    if isinstance(cause, jwt.MissingRequiredClaimError):
        return f"it lacks the {cause.claim!r} claim"
    if isinstance(cause, jwt.DecodeError):
        return "it is malformed, not a JWT"
    return _one_line(error)


def _describe_signing_error(error: BaseException) -> str:
    import requests

    if isinstance(error, requests.ConnectionError):
        return "the Sigstore instance could not be reached"
    if isinstance(error, requests.Timeout):
        return "the Sigstore instance did not answer in time"
    cause = error.__cause__
    detail = _one_line(error)
    if detail == type(error).__name__ and cause is not None:
        detail = f"{detail}: {_one_line(cause)}"
    return f"{type(error).__name__}: {detail}" if detail != type(error).__name__ else detail


def _exact_statement(payload: bytes) -> Any:
    """A sigstore `Statement` whose signed bytes are exactly `payload`.

    `Statement(bytes)` keeps the bytes as given (what is signed is PAE over them), but its model
    only admits SHA-2/SHA-3 digest names, while in-toto's DigestSet, and our directory
    subjects, also use `dirHash`. For such a statement the bytes are handed over unvalidated;
    they are our own canonical, already shape-checked statement.
    """
    from sigstore.dsse import Statement
    from sigstore.errors import Error as SigstoreError

    from verifier.formats.statement import parse_statement

    parse_statement(payload, "the statement to sign")
    try:
        return Statement(payload)
    except SigstoreError:
        statement = Statement.__new__(Statement)
        statement._contents = payload
        return statement
