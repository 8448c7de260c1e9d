"""Hardware keys: a real SoftHSM2 token, initialised here, signs through `--key pkcs11:…` for
record, rebuild, sign-model, export and verify-model --vsa; every signature is checked with
the public key exported from the token (python-pkcs11 + cryptography, not the product)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from helpers import assert_error, make_keys, pae, read_json, record_step, run, write_policy

pkcs11 = pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed")

PIN = "4711-token-pin"


def _softhsm_module() -> Path | None:
    candidates = [Path("/usr/lib/softhsm/libsofthsm2.so"),
                  Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
                  Path("/usr/local/lib/softhsm/libsofthsm2.so")]
    if shutil.which("dpkg"):
        listed = subprocess.run(["dpkg", "-L", "libsofthsm2"], capture_output=True, text=True,
                                check=False).stdout.split()
        candidates = [Path(p) for p in listed if p.endswith("libsofthsm2.so")] + candidates
    return next((p for p in candidates if p.is_file()), None)


@dataclass(frozen=True)
class Token:
    module: Path
    pin_file: Path
    ec_public: Path  # PEM exported from the token
    rsa_public: Path
    ed_public: Path

    def uri(self, label: str, pin: str | None = None) -> str:
        secret = f"pin-value={pin}" if pin is not None else f"pin-source={self.pin_file}"
        return f"pkcs11:token=model-verifier;object={label}?module-path={self.module}&{secret}"


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Token]:
    module = _softhsm_module()
    if module is None or shutil.which("softhsm2-util") is None:
        pytest.skip("SoftHSM2 (Debian softhsm2) is not installed")
    from pkcs11 import Attribute, KeyType, Mechanism
    from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters
    from pkcs11.util.rsa import encode_rsa_public_key

    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    config = root / "softhsm2.conf"
    config.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n"
                      "log.level = ERROR\n")
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(config)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "model-verifier",
                    "--pin", PIN, "--so-pin", "so-secret"], check=True, capture_output=True)
    library = pkcs11.lib(str(module))
    with library.get_token(token_label="model-verifier").open(rw=True, user_pin=PIN) as session:
        parameters = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True)
        ec_public, _ = parameters.generate_keypair(store=True, label="release-ec")
        rsa_public, _ = session.generate_keypair(KeyType.RSA, 2048, store=True,
                                                 label="release-rsa")
        ec_pem = serialization.load_der_public_key(encode_ec_public_key(ec_public))
        rsa_der = encode_rsa_public_key(rsa_public)
        edwards = session.create_domain_parameters(
            KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: encode_named_curve_parameters(
                "1.3.101.112")}, local=True)  # id-Ed25519
        ed_public, _ = edwards.generate_keypair(
            store=True, label="release-ed", mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN)
        point = bytes(ed_public[Attribute.EC_POINT])
        ed_key = ed25519.Ed25519PublicKey.from_public_bytes(point[-32:])
    rsa_key = serialization.load_der_public_key(rsa_der)
    paths = []
    for name, key in (("ec.pub", ec_pem), ("rsa.pub", rsa_key), ("ed.pub", ed_key)):
        (root / name).write_bytes(key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        paths.append(root / name)
    (root / "pin").write_text(PIN + "\n")
    yield Token(module, root / "pin", paths[0], paths[1], paths[2])
    if previous is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = previous


def _check_dsse(bundle: dict, public_pem: Path) -> dict:
    """The DSSE signature verifies under the exported key; returns the statement."""
    envelope = bundle["dsseEnvelope"]
    payload = base64.b64decode(envelope["payload"])
    message = pae(envelope["payloadType"], payload)
    key = serialization.load_pem_public_key(public_pem.read_bytes())
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    if isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(signature, message)
    else:
        assert isinstance(key, rsa.RSAPublicKey)
        key.verify(signature, message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                    salt_length=padding.PSS.AUTO),
                   hashes.SHA256())
    return json.loads(payload)


def _record(work: Path, key: str, step: str = "copy") -> object:
    (work / "in.txt").write_text("input\n")
    return record_step(work, step, key, ["in.txt"], ["out.txt"],  # type: ignore[arg-type]
                       "import shutil; shutil.copy('in.txt', 'out.txt')")


@pytest.mark.parametrize("label", ["release-ec", "release-rsa", "release-ed"])
def test_record_signs_on_the_token(token: Token, tmp_path: Path, label: str) -> None:
    public = {"release-ec": token.ec_public, "release-rsa": token.rsa_public,
              "release-ed": token.ed_public}[label]
    result = _record(tmp_path, token.uri(label))
    assert result.code == 0, result.output  # type: ignore[attr-defined]
    bundle = read_json(tmp_path / "attestations" / "copy.intoto.json")
    statement = _check_dsse(bundle, public)
    assert statement["subject"][0]["digest"]["sha256"] == hashlib.sha256(b"input\n").hexdigest()
    assert PIN not in (tmp_path / "attestations" / "copy.intoto.json").read_text()
    checked = run(["verify-bundle", tmp_path / "attestations" / "copy.intoto.json",
                   "--artifact", tmp_path / "out.txt", "--key", public])
    assert checked.code == 0, checked.output


def test_sign_model_on_the_token_verifies_with_the_exported_key(token: Token,
                                                                tmp_path: Path) -> None:
    from verifier.formats.signing import bundle_signed_by, load_public_key
    from verifier.neighbours.oms import verify_directory

    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\x01" * 1000)
    result = run(["sign-model", model, "--key", token.uri("release-ec")])
    assert result.code == 0, result.output
    _check_dsse(read_json(model / "model.sig"), token.ec_public)
    key = load_public_key(token.ec_public)
    check = verify_directory(model, lambda b: ("release",) if bundle_signed_by(b, key) else ())
    assert check.signed_by == ("release",)


def test_export_links_signed_on_the_token_verify_with_securesystemslib(
        token: Token, tmp_path: Path) -> None:
    from in_toto.models.metadata import Metablock
    from securesystemslib.signer import SSlibKey

    assert _record(tmp_path, token.uri("release-ec")).code == 0  # type: ignore[attr-defined]
    result = run(["export", tmp_path / "attestations", "--key", token.uri("release-ec"),
                  "--out", tmp_path / "links", "--json"])
    assert result.code == 0, result.output
    [link] = json.loads(result.stdout)["links"]
    public = SSlibKey.from_crypto(serialization.load_pem_public_key(
        token.ec_public.read_bytes()))
    metablock = Metablock.load(link["link"])
    as_dict = public.to_dict()
    as_dict["keyid"] = public.keyid
    metablock.verify_signature(as_dict)
    assert link["keyid"] == public.keyid


def test_verify_model_vsa_signed_on_the_token(token: Token, tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "builder")
    assert _record(tmp_path, str(keys.private)).code == 0  # type: ignore[attr-defined]
    write_policy(tmp_path / "policy.yaml", {
        "version": 1, "signers": {"builder": {"key": "builder.pub"}},
        "sources": [{"name": "in.txt", "sha256": hashlib.sha256(b"input\n").hexdigest()}],
        "steps": [{"name": "copy", "signed_by": ["builder"]}]})
    result = run(["out.txt", "--policy", "policy.yaml", "--vsa", "vsa.json", "--key",
                  token.uri("release-rsa")], cwd=tmp_path, program="verify-model")
    assert result.code == 0, result.output
    statement = _check_dsse(read_json(tmp_path / "vsa.json"), token.rsa_public)
    assert statement["predicate"]["verificationResult"] == "PASSED"


def test_rebuild_signs_on_the_token(token: Token, tmp_path: Path) -> None:
    keys = make_keys(tmp_path, "builder")
    assert _record(tmp_path, str(keys.private)).code == 0  # type: ignore[attr-defined]
    result = run(["rebuild", tmp_path / "attestations", "--source", tmp_path,
                  "--trust-key", keys.public, "--key", token.uri("release-ec"),
                  "--out", tmp_path / "rebuilds", "--json"])
    assert result.code == 0, result.output
    # The rebuilder's folder is named after the key's label on the token.
    [written] = list((tmp_path / "rebuilds" / "release-ec").glob("*.json"))
    _check_dsse(read_json(written), token.ec_public)


def test_unusable_token_keys_are_one_sentence_and_write_nothing(token: Token,
                                                                tmp_path: Path) -> None:
    result = _record(tmp_path, token.uri("release-ec", pin="wrong-pin"))
    assert_error(result, 2,  # type: ignore[arg-type]
                 "pkcs11:token=model-verifier;object=release-ec", "PIN")
    assert "wrong-pin" not in result.output  # type: ignore[attr-defined]
    result = _record(tmp_path, token.uri("no-such-key"))
    assert_error(result, 2, "no private key")  # type: ignore[arg-type]
    result = _record(tmp_path, "pkcs11:token=model-verifier;object=release-ec"
                               f"?pin-source={token.pin_file}")
    assert_error(result, 2, "module-path")  # type: ignore[arg-type]
    result = _record(tmp_path, token.uri("release-ec").replace(str(token.module),
                                                               "/nonexistent/lib.so"))
    assert_error(result, 2, "/nonexistent/lib.so")  # type: ignore[arg-type]
    assert not (tmp_path / "attestations").exists()


STEAL_PIN = ("import pathlib, subprocess, sys\n"
             "subprocess.run(['umount', '-l', sys.argv[1]], capture_output=True)\n"
             "pathlib.Path('out.txt').write_text('PIN:' + pathlib.Path(sys.argv[1]).read_text())\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="the attack needs root (as CI runs)")
@pytest.mark.parametrize("spelling", ["relative", "file-uri"])
def test_a_pin_file_inside_the_checkout_is_hidden_from_the_recorded_step(
        token: Token, tmp_path: Path, spelling: str) -> None:
    """The PIN unlocks the token's key as the key file unlocks a PEM key: a step recorded with
    `--key pkcs11:…&pin-source=FILE` (FILE in the checkout, as a CI job would keep it) reads
    it, as root, empty, and tries to unmount what hides it first."""
    from test_rebuild_hostile import bwrap_works

    if not bwrap_works():
        pytest.skip("bubblewrap cannot start here")
    work = tmp_path / "work"
    (work / "secrets").mkdir(parents=True)
    (work / "secrets" / "pin.txt").write_text(PIN + "\n")
    (work / "steal.py").write_text(STEAL_PIN)
    source = ("secrets/pin.txt" if spelling == "relative"
              else f"file://{work / 'secrets' / 'pin.txt'}")
    key = (f"pkcs11:token=model-verifier;object=release-ec?module-path={token.module}"
           f"&pin-source={source}")
    result = run(["record", "--step", "steal", "--key", key, "--sandbox", "bwrap", "--no-trace",
                  "--material", "steal.py", "--product", "out.txt", "--out", "att", "--",
                  sys.executable, "steal.py", "secrets/pin.txt"], cwd=work)
    assert result.code == 0, result.output
    assert (work / "out.txt").read_text() == "PIN:"
    bundle = (work / "att" / "steal.intoto.json").read_text()
    assert PIN not in bundle
    _check_dsse(json.loads(bundle), token.ec_public)
