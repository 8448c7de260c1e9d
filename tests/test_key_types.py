"""Every key type a neighbouring format uses: ECDSA P-256/P-384/P-521, Ed25519, RSA (PSS and
PKCS#1 v1.5). Signatures are checked here with `cryptography` and PAE written from the spec."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from helpers import INTOTO, assert_error, make_keys, pae, read_json, record_step, run, write_json

CURVES = {"p256": ("secp256r1", hashes.SHA256), "p384": ("secp384r1", hashes.SHA384),
          "p521": ("secp521r1", hashes.SHA512)}


def _spki(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _statement(artifact: Path) -> bytes:
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    return json.dumps({"_type": "https://in-toto.io/Statement/v1",
                       "subject": [{"name": artifact.name, "digest": {"sha256": digest}}],
                       "predicateType": "https://example.com/p", "predicate": {}}).encode()


def _bundle(payload: bytes, signature: bytes) -> dict:
    return {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": "anything"}, "tlogEntries": []},
            "dsseEnvelope": {"payload": base64.b64encode(payload).decode(), "payloadType": INTOTO,
                             "signatures": [{"sig": base64.b64encode(signature).decode(),
                                             "keyid": ""}]}}


@pytest.mark.parametrize("algorithm", ["p256", "p384", "p521"])
def test_keygen_writes_each_curve_and_record_signs_with_the_curve_hash(
        tmp_path: Path, algorithm: str) -> None:
    keys = make_keys(tmp_path, "k", algorithm)
    private = serialization.load_pem_private_key(keys.private.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    curve, digest = CURVES[algorithm]
    assert private.curve.name == curve
    (tmp_path / "in.txt").write_text("x\n")
    result = record_step(tmp_path, "copy", keys.private, ["in.txt"], ["out.txt"],
                         "import shutil; shutil.copy('in.txt', 'out.txt')")
    assert result.code == 0, result.output
    bundle = read_json(tmp_path / "attestations" / "copy.intoto.json")
    envelope = bundle["dsseEnvelope"]
    message = pae(envelope["payloadType"], base64.b64decode(envelope["payload"]))
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    public = serialization.load_pem_public_key(keys.public_pem)
    public.verify(signature, message, ec.ECDSA(digest()))  # type: ignore[call-arg,arg-type]
    checked = run(["verify-bundle", tmp_path / "attestations" / "copy.intoto.json",
                   "--artifact", tmp_path / "out.txt", "--key", keys.public])
    assert checked.code == 0, checked.output


def test_old_algorithm_name_is_an_alias(tmp_path: Path) -> None:
    result = run(["keygen", tmp_path / "k", "--algorithm", "ecdsa-p256", "--json"])
    assert result.code == 0, result.output
    assert json.loads(result.stdout)["algorithm"] == "p256"
    key = serialization.load_pem_private_key((tmp_path / "k.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"


@pytest.mark.parametrize("curve,right,wrong", [
    (ec.SECP384R1(), hashes.SHA384(), hashes.SHA256()),
    (ec.SECP521R1(), hashes.SHA512(), hashes.SHA256()),
])
def test_the_hash_is_the_one_the_curve_implies(tmp_path: Path, curve: ec.EllipticCurve,
                                               right: hashes.HashAlgorithm,
                                               wrong: hashes.HashAlgorithm) -> None:
    key = ec.generate_private_key(curve)
    (tmp_path / "k.pub").write_bytes(_spki(key.public_key()))
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(b"weights")
    payload = _statement(artifact)
    for algorithm, code in ((right, 0), (wrong, 1)):
        signature = key.sign(pae(INTOTO, payload), ec.ECDSA(algorithm))
        write_json(tmp_path / "b.json", _bundle(payload, signature))
        result = run(["verify-bundle", tmp_path / "b.json", "--artifact", artifact,
                      "--key", tmp_path / "k.pub"])
        assert result.code == code, (algorithm.name, result.output)


@pytest.mark.parametrize("scheme", ["pss-sha256", "pkcs1-sha256", "pss-sha512", "pkcs1-sha384"])
def test_rsa_signatures_verify_under_either_padding(tmp_path: Path, scheme: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.pub").write_bytes(_spki(key.public_key()))
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(b"weights")
    payload = _statement(artifact)
    kind, name = scheme.split("-")
    digest = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}[name]
    pad = (padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.DIGEST_LENGTH)
           if kind == "pss" else padding.PKCS1v15())
    write_json(tmp_path / "b.json", _bundle(payload, key.sign(pae(INTOTO, payload), pad, digest)))
    ok = run(["verify-bundle", tmp_path / "b.json", "--artifact", artifact,
              "--key", tmp_path / "rsa.pub"])
    assert ok.code == 0, ok.output
    # The same signature over a changed payload, or under another RSA key, does not verify.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "other.pub").write_bytes(_spki(other.public_key()))
    bad = run(["verify-bundle", tmp_path / "b.json", "--artifact", artifact,
               "--key", tmp_path / "other.pub"])
    assert bad.code == 1, bad.output


def test_short_rsa_keys_and_other_curves_are_refused_with_a_sentence(tmp_path: Path) -> None:
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(b"w")
    write_json(tmp_path / "b.json", _bundle(_statement(artifact), b"sig"))
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (tmp_path / "short.pub").write_bytes(_spki(short.public_key()))
    result = run(["verify-bundle", tmp_path / "b.json", "--artifact", artifact,
                  "--key", tmp_path / "short.pub"])
    assert_error(result, 2, "short.pub", "1024 bits")
    odd = ec.generate_private_key(ec.SECP256K1())
    (tmp_path / "k1.pub").write_bytes(_spki(odd.public_key()))
    result = run(["verify-bundle", tmp_path / "b.json", "--artifact", artifact,
                  "--key", tmp_path / "k1.pub"])
    assert_error(result, 2, "k1.pub", "secp256k1")


def test_a_policy_accepts_rsa_p384_and_ed25519_signers(tmp_path: Path) -> None:
    """The same key types count in verify-model's policy signers."""
    make_keys(tmp_path, "ed", "ed25519")
    make_keys(tmp_path, "p384", "p384")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    (tmp_path / "rsa.key").write_bytes(rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (tmp_path / "rsa.pub").write_bytes(_spki(rsa_key.public_key()))
    (tmp_path / "in.txt").write_text("x\n")
    steps = [("one", tmp_path / "p384.key", "in.txt", "a.txt"),
             ("two", tmp_path / "ed.key", "a.txt", "b.txt"),
             ("three", tmp_path / "rsa.key", "b.txt", "c.txt")]
    for step, key, material, product in steps:
        code = (f"import pathlib; pathlib.Path({product!r}).write_text("
                f"pathlib.Path({material!r}).read_text() + {step!r})")
        result = record_step(tmp_path, step, key, [material], [product], code)
        assert result.code == 0, result.output
    # RSA signing is PSS over SHA-256 (securesystemslib's rsassa-pss-sha256): check it here.
    bundle = read_json(tmp_path / "attestations" / "three.intoto.json")
    envelope = bundle["dsseEnvelope"]
    rsa_key.public_key().verify(
        base64.b64decode(envelope["signatures"][0]["sig"]),
        pae(envelope["payloadType"], base64.b64decode(envelope["payload"])),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
        hashes.SHA256())
    import yaml

    policy = {"version": 1, "signers": {"p384": {"key": "p384.pub"}, "ed": {"key": "ed.pub"},
                                        "rsa": {"key": "rsa.pub"}},
              "sources": [{"name": "in.txt", "sha256": hashlib.sha256(b"x\n").hexdigest()}],
              "steps": [{"name": "one", "signed_by": ["p384"]},
                        {"name": "two", "signed_by": ["ed"], "after": ["one"]},
                        {"name": "three", "signed_by": ["rsa"], "after": ["two"]}]}
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    result = run(["c.txt", "--policy", "policy.yaml"], cwd=tmp_path, program="verify-model")
    assert result.code == 0, result.output
    # Swap the RSA signer for another RSA key: the step is no longer signed by a policy signer.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.pub").write_bytes(_spki(other.public_key()))
    result = run(["c.txt", "--policy", "policy.yaml"], cwd=tmp_path, program="verify-model")
    assert result.code == 1, result.output


def test_ed25519_public_key_is_still_accepted(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "ed.pub").write_bytes(_spki(key.public_key()))
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(b"w")
    payload = _statement(artifact)
    write_json(tmp_path / "b.json", _bundle(payload, key.sign(pae(INTOTO, payload))))
    result = run(["verify-bundle", tmp_path / "b.json", "--artifact", artifact,
                  "--key", tmp_path / "ed.pub"])
    assert result.code == 0, result.output
