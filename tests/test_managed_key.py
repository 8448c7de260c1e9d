"""A key-signed ("managed key") DSSE bundle with a real Rekor entry and a real RFC 3161
timestamp from the loopback Sigstore (tests/sigstore_mock): `verify-bundle --key
--trusted-root` checks both against the root; each part that does not belong fails."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import INTOTO, pae, run
from sigstore_mock.loopback import LoopbackSigstore, running, skip_reason

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSigstore]:
    with running(tmp_path_factory.mktemp("loopback-sigstore")) as sigstore:
        yield sigstore


def _statement(artifact: Path) -> bytes:
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    return json.dumps({"_type": "https://in-toto.io/Statement/v1",
                       "subject": [{"name": artifact.name, "digest": {"sha256": digest}}],
                       "predicateType": "https://example.com/p", "predicate": {}}).encode()


def _logged(sigstore: LoopbackSigstore, key: Any, payload: bytes) -> dict[str, Any]:
    """Sign the payload, log the envelope in the loopback Rekor, timestamp the signature."""
    import requests
    from sigstore._internal.timestamp import TimestampAuthorityClient
    from sigstore.models import TransparencyLogEntry

    signature = key.sign(pae(INTOTO, payload), ec.ECDSA(hashes.SHA256()))
    envelope = {"payload": base64.b64encode(payload).decode(), "payloadType": INTOTO,
                "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}]}
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    response = requests.post(f"{sigstore.url}/api/v1/log/entries", timeout=30, json={
        "apiVersion": "0.0.1", "kind": "dsse", "spec": {"proposedContent": {
            "envelope": json.dumps(envelope), "verifiers": [base64.b64encode(pem).decode()]}}})
    assert response.status_code == 201, response.text
    entry = TransparencyLogEntry._from_v1_response(response.json())
    stamp = TimestampAuthorityClient(f"{sigstore.url}/api/v1/timestamp").request_timestamp(
        signature)
    return {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {
            "publicKey": {"hint": hashlib.sha256(pem).hexdigest()},
            "tlogEntries": [json.loads(entry._inner.to_json())],
            "timestampVerificationData": {"rfc3161Timestamps": [
                {"signedTimestamp": base64.b64encode(stamp.as_bytes()).decode()}]},
        },
        "dsseEnvelope": envelope,
    }


@pytest.fixture
def signed(loopback: LoopbackSigstore, tmp_path: Path) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "key.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"weights")
    return {"key": key, "bundle": _logged(loopback, key, _statement(artifact)),
            "artifact": artifact, "dir": tmp_path}


def _verify(signed: dict[str, Any], bundle: dict[str, Any], root: Path | None) -> Any:
    path = signed["dir"] / "bundle.json"
    path.write_text(json.dumps(bundle))
    args = ["verify-bundle", path, "--artifact", signed["artifact"], "--key",
            signed["dir"] / "key.pub", "--json"]
    return run([*args, "--trusted-root", root] if root is not None else args)


def test_log_entry_and_timestamp_verify_under_the_instance_root(
        loopback: LoopbackSigstore, signed: dict[str, Any]) -> None:
    result = _verify(signed, signed["bundle"], loopback.trusted_root)
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["verified_times"]) == 2, report  # the SET's integrated time and the TSA
    unchecked = _verify(signed, signed["bundle"], None)
    assert unchecked.code == 0 and json.loads(unchecked.stdout)["notes"], unchecked.output


def test_under_the_public_good_root_the_log_entry_fails(signed: dict[str, Any]) -> None:
    from verifier.formats.keyless import shipped_trusted_root

    result = _verify(signed, signed["bundle"], shipped_trusted_root())
    assert result.code == 1, result.output


def test_a_log_entry_of_another_envelope_fails(loopback: LoopbackSigstore,
                                               signed: dict[str, Any]) -> None:
    other = _logged(loopback, signed["key"], b'{"another": "payload"}')
    bundle = json.loads(json.dumps(signed["bundle"]))
    bundle["verificationMaterial"]["tlogEntries"] = other["verificationMaterial"]["tlogEntries"]
    result = _verify(signed, bundle, loopback.trusted_root)
    assert result.code == 1 and "does not match the bundle" in result.stdout, result.output


def test_a_timestamp_of_another_signature_fails(loopback: LoopbackSigstore,
                                                signed: dict[str, Any]) -> None:
    other = _logged(loopback, signed["key"], b'{"another": "payload"}')
    bundle = json.loads(json.dumps(signed["bundle"]))
    bundle["verificationMaterial"]["timestampVerificationData"] = other[
        "verificationMaterial"]["timestampVerificationData"]
    result = _verify(signed, bundle, loopback.trusted_root)
    assert result.code == 1 and "timestamp 1" in result.stdout, result.output


def test_the_logged_entry_of_the_same_envelope_under_another_key_fails(
        loopback: LoopbackSigstore, signed: dict[str, Any]) -> None:
    """The entry names the key it was logged with; a bundle verified with another key whose
    signature it is not cannot borrow it."""
    intruder = ec.generate_private_key(ec.SECP256R1())
    (signed["dir"] / "key.pub").write_bytes(intruder.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    result = _verify(signed, signed["bundle"], loopback.trusted_root)
    assert result.code == 1, result.output


def test_an_entry_logged_under_another_verifier_key_fails(loopback: LoopbackSigstore,
                                                          signed: dict[str, Any]) -> None:
    """The envelope is the bundle's, but the log says someone else's key vouched for it."""
    import requests
    from sigstore.models import TransparencyLogEntry

    other = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    envelope = signed["bundle"]["dsseEnvelope"]
    response = requests.post(f"{loopback.url}/api/v1/log/entries", timeout=30, json={
        "apiVersion": "0.0.1", "kind": "dsse", "spec": {"proposedContent": {
            "envelope": json.dumps(envelope), "verifiers": [base64.b64encode(other).decode()]}}})
    if response.status_code != 201:
        pytest.skip(f"the loopback Rekor refuses a mismatched verifier itself ({response.text})")
    bundle = json.loads(json.dumps(signed["bundle"]))
    bundle["verificationMaterial"]["tlogEntries"] = [json.loads(
        TransparencyLogEntry._from_v1_response(response.json())._inner.to_json())]
    result = _verify(signed, bundle, loopback.trusted_root)
    assert result.code == 1 and "this signature under this key" in result.stdout, result.output
