"""The OMS specification's own test vectors: the key vector (ECDSA P-384) and the certificate
vector (x509 chain to a private CA) verify; changed files, other keys and other roots do not.
Material and origin: tests/fixtures/oms-vectors/ORIGIN.md."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import pae, read_json, write_policy

from verifier.errors import InputError, SignatureError, VerificationFailure
from verifier.judgement.policy import load_policy
from verifier.judgement.trust import TrustedSigners
from verifier.neighbours.oms import verify_directory

VECTORS = Path(__file__).parent / "fixtures" / "oms-vectors"


def _model(tmp_path: Path, vector: str) -> Path:
    model = tmp_path / "model"
    shutil.copytree(VECTORS / "model", model)
    shutil.copy(VECTORS / "spec" / f"{vector}.bundle.json", model / "model.sig")
    return model


def _policy(tmp_path: Path, signers: dict) -> TrustedSigners:
    for name in ("ca-cert.pem", "signing-key-pub.pem"):
        shutil.copy(VECTORS / "keys" / name, tmp_path / name)
    path = write_policy(tmp_path / "policy.yaml", {
        "version": 1, "signers": signers,
        "steps": [{"name": "package", "signed_by": sorted(signers)}]})
    return TrustedSigners(load_policy(path))


def _attribute(signers: TrustedSigners) -> Any:
    return lambda bundle: signers.attribute(bundle).names


def test_the_vectors_are_what_the_origin_note_says() -> None:
    """Independently of model-verifier: the P-384 signature and the chain, with cryptography."""
    for vector in ("key", "certificate"):
        envelope = read_json(VECTORS / "spec" / f"{vector}.bundle.json")["dsseEnvelope"]
        message = pae(envelope["payloadType"], base64.b64decode(envelope["payload"]))
        public = serialization.load_pem_public_key(
            (VECTORS / "keys" / "signing-key-pub.pem").read_bytes())
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert public.curve.name == "secp384r1"
        public.verify(base64.b64decode(envelope["signatures"][0]["sig"]), message,
                      ec.ECDSA(hashes.SHA384()))
    chain = read_json(VECTORS / "spec" / "certificate.bundle.json")[
        "verificationMaterial"]["x509CertificateChain"]["certificates"]
    leaf, intermediate = (x509.load_der_x509_certificate(base64.b64decode(c["rawBytes"]))
                          for c in chain)
    root = x509.load_pem_x509_certificate((VECTORS / "keys" / "ca-cert.pem").read_bytes())
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)


def test_the_key_vector_verifies_with_its_p384_key(tmp_path: Path) -> None:
    model = _model(tmp_path, "key")
    signers = _policy(tmp_path, {"release": {"key": "signing-key-pub.pem"}})
    check = verify_directory(model, _attribute(signers))
    assert check.signed_by == ("release",) and check.files == 2
    (model / "signme-2").write_bytes(b"changed")
    with pytest.raises(VerificationFailure, match="changed: signme-2"):
        verify_directory(model, _attribute(signers))


def test_the_certificate_vector_verifies_by_subject_and_chain(tmp_path: Path) -> None:
    model = _model(tmp_path, "certificate")
    signers = _policy(tmp_path, {"release": {"certificate": {
        "roots": "ca-cert.pem", "subject": "CN=intermediate-ca"}}})
    check = verify_directory(model, _attribute(signers))
    assert check.signed_by == ("release",) and check.files == 2
    assert signers.identity_of("release").startswith("x509:")


def test_the_certificate_vector_under_another_root_or_subject_counts_for_nothing(
        tmp_path: Path) -> None:
    from certificates import issue

    model = _model(tmp_path, "certificate")
    # A root of the same name that did not issue this chain; then the right root with other
    # names.
    impostor, _ = issue("CN=root-ca", ca=True)
    (tmp_path / "impostor.pem").write_bytes(impostor.public_bytes(serialization.Encoding.PEM))
    for spec in ({"roots": "impostor.pem", "subject": "CN=intermediate-ca"},
                 {"roots": "ca-cert.pem", "subject": "CN=someone-else"},
                 {"roots": "ca-cert.pem", "san": "release@example.com"}):
        signers = _policy(tmp_path, {"release": {"certificate": spec}})
        with pytest.raises(SignatureError, match="not signed by any trusted key"):
            verify_directory(model, _attribute(signers))


def test_the_certificate_vector_with_a_forged_leaf_counts_for_nothing(tmp_path: Path) -> None:
    """A leaf with the same subject from another CA, holding a key of the attacker's."""
    from certificates import issue

    model = _model(tmp_path, "certificate")
    bundle = read_json(model / "model.sig")
    key = ec.generate_private_key(ec.SECP384R1())
    forged_root, root_key = issue("CN=root-ca", ca=True)
    leaf, _ = issue("CN=intermediate-ca", issuer=(forged_root, root_key), key=key)
    envelope = bundle["dsseEnvelope"]
    message = pae(envelope["payloadType"], base64.b64decode(envelope["payload"]))
    envelope["signatures"][0]["sig"] = base64.b64encode(
        key.sign(message, ec.ECDSA(hashes.SHA384()))).decode()
    bundle["verificationMaterial"]["x509CertificateChain"]["certificates"] = [
        {"rawBytes": base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()}
        for c in (leaf, forged_root)]
    (model / "model.sig").write_text(json.dumps(bundle))
    signers = _policy(tmp_path, {"release": {"certificate": {
        "roots": "ca-cert.pem", "subject": "CN=intermediate-ca"}}})
    with pytest.raises(SignatureError):
        verify_directory(model, _attribute(signers))


def test_the_certificate_vector_does_not_verify_with_a_key_signer_of_another_key(
        tmp_path: Path) -> None:
    model = _model(tmp_path, "certificate")
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    (tmp_path / "other.pub").write_bytes(other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    signers = _policy(tmp_path, {"other": {"key": "other.pub"}})
    with pytest.raises(SignatureError):
        verify_directory(model, _attribute(signers))


def test_our_key_hint_is_the_one_oms_defines() -> None:
    """OMS (model_signing) names a key by sha256 of its SubjectPublicKeyInfo PEM."""
    from verifier.formats.signing import load_public_key

    hint = read_json(VECTORS / "spec" / "key.bundle.json")["verificationMaterial"][
        "publicKey"]["hint"]
    assert load_public_key(VECTORS / "keys" / "signing-key-pub.pem").hint == hint


@pytest.mark.parametrize("algorithm", ["p384", "p521"])
def test_sign_model_with_larger_curves_verifies_with_the_real_tool(
        tmp_path: Path, algorithm: str) -> None:
    import subprocess
    import sys

    from helpers import make_keys, run

    tool = Path(sys.executable).parent / "model_signing"
    if not tool.exists():
        pytest.skip("model_signing (dev extra) is not installed")
    keys = make_keys(tmp_path, "k", algorithm)
    model = tmp_path / "model"
    shutil.copytree(VECTORS / "model", model)
    result = run(["sign-model", model, "--key", keys.private])
    assert result.code == 0, result.output
    checked = subprocess.run(
        [str(tool), "verify", "key", str(model), "--signature", str(model / "model.sig"),
         "--public_key", str(keys.public)], capture_output=True, text=True, timeout=120,
        check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_verify_bundle_with_a_key_on_the_certificate_vector_says_what_to_do(
        tmp_path: Path) -> None:
    from helpers import assert_error, run

    model = _model(tmp_path, "certificate")
    result = run(["verify-bundle", model / "model.sig", "--artifact", model / "signme-1",
                  "--key", VECTORS / "keys" / "signing-key-pub.pem"])
    assert_error(result, 2, "model.sig", "certificate signer")


def test_the_sigstore_vector_verifies_keylessly_offline(tmp_path: Path) -> None:
    """Signed by a real Sigstore (public-good Rekor, IBM's OIDC issuer); the shipped trusted
    root suffices. Its files are model-transparency's v1.1.0-sigstore ones."""
    from verifier.formats.keyless import check_keyless

    model = tmp_path / "model"
    shutil.copytree(VECTORS / "model-sigstore", model)
    shutil.copy(VECTORS / "spec" / "sigstore.bundle.json", model / "model.sig")
    issuer = "https://sigstore.verify.ibm.com/oauth2"
    for identity, expected in (("stefanb@us.ibm.com", ("release",)),
                               ("mallory@example.com", ())):
        path = write_policy(tmp_path / "policy.yaml", {
            "version": 1, "signers": {"release": {"sigstore": {"issuer": issuer,
                                                               "identity": identity}}},
            "steps": [{"name": "package", "signed_by": ["release"]}]})
        signers = TrustedSigners(load_policy(path), check_keyless)
        if expected:
            assert verify_directory(model, _attribute(signers)).signed_by == expected
        else:
            with pytest.raises(SignatureError):
                verify_directory(model, _attribute(signers))


def test_the_spec_s_wrong_predicate_vector_is_refused() -> None:
    from verifier.neighbours.oms import read_oms

    with pytest.raises(InputError, match="not an OMS signature"):
        read_oms(VECTORS / "spec" / "wrong-predicate.bundle.json")


def test_a_sigstore_signature_without_its_log_entries_says_why_it_is_not_counted(
        tmp_path: Path) -> None:
    """The conformance vector missing-tlog-entries: the sigstore vector with its Rekor entries
    removed. It verifies for nobody, and the note says why instead of only "not counted"."""
    from verifier.judgement.verify import verify_artifact

    model = tmp_path / "model"
    shutil.copytree(VECTORS / "model-sigstore", model)
    bundle = read_json(VECTORS / "spec" / "sigstore.bundle.json")
    bundle["verificationMaterial"]["tlogEntries"] = []
    (model / "model.sig").write_text(json.dumps(bundle))
    (tmp_path / "none").mkdir()
    issuer = "https://sigstore.verify.ibm.com/oauth2"
    for identity in ("stefanb@us.ibm.com", "mallory@example.com"):
        path = write_policy(tmp_path / "policy.yaml", {
            "version": 1, "signers": {"release": {"sigstore": {"issuer": issuer,
                                                               "identity": identity}}},
            "steps": [{"name": "package", "signed_by": ["release"]}]})
        report = verify_artifact(model, load_policy(path), [tmp_path / "none"])
        [evidence] = report.oms
        assert evidence["verdict"] == "unattributed"
        [note] = [n for n in report.notes if "model.sig" in n]
        assert "carries no transparency-log entry" in note, note
    # With its log entries, under another identity: the certificate is the reason.
    (model / "model.sig").write_text((VECTORS / "spec" / "sigstore.bundle.json").read_text())
    report = verify_artifact(model, load_policy(path), [tmp_path / "none"])
    [note] = [n for n in report.notes if "model.sig" in n]
    assert "satisfies no keyless identity" in note, note
