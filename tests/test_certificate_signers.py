"""Certificate signers in a policy: a DSSE attestation signed by a key whose x509 chain leads to
the policy's roots counts; other roots, other names, expired or non-code-signing leaves, and
forged signatures do not. Certificates are made here with `cryptography` (tests/certificates)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from certificates import issue
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import INTOTO, assert_error, make_keys, pae, record_step, run, write_policy

# The recorded statement of each test's directory (set by the pki fixture).
PAYLOADS: dict[Path, bytes] = {}


def _der(certificate: Any) -> str:
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


def _attestation(path: Path, payload: bytes, key: Any, chain: list[Any]) -> None:
    """A bundle v0.3 with the payload signed by key and the chain (leaf first) beside it."""
    signature = key.sign(pae(INTOTO, payload), ec.ECDSA(hashes.SHA256()))
    path.write_text(json.dumps({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"x509CertificateChain": {
            "certificates": [{"rawBytes": _der(c)} for c in chain]}, "tlogEntries": []},
        "dsseEnvelope": {"payload": base64.b64encode(payload).decode(), "payloadType": INTOTO,
                         "signatures": [{"sig": base64.b64encode(signature).decode(),
                                         "keyid": ""}]},
    }))


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    root = issue("CN=Example Root CA,O=Example", ca=True)
    intermediate = issue("CN=Example Signing CA,O=Example", ca=True, issuer=root)
    leaf = issue("CN=release-signer,O=Example", issuer=intermediate, san="release@example.com")
    (tmp_path / "roots.pem").write_bytes(root[0].public_bytes(serialization.Encoding.PEM))
    # A real step statement, recorded with a throwaway key; the tests re-sign its payload.
    keys = make_keys(tmp_path, "throwaway")
    (tmp_path / "in.txt").write_text("x\n")
    recorded = record_step(tmp_path, "package", keys.private, ["in.txt"], ["model.bin"],
                           "import pathlib; pathlib.Path('model.bin').write_bytes(b'weights')",
                           out="recorded")
    assert recorded.code == 0, recorded.output
    bundle = json.loads((tmp_path / "recorded" / "package.intoto.json").read_text())
    (tmp_path / "attestations").mkdir()
    PAYLOADS[tmp_path] = base64.b64decode(bundle["dsseEnvelope"]["payload"])
    return {"root": root, "intermediate": intermediate, "leaf": leaf}


def _verify(tmp_path: Path, signer: dict[str, Any]) -> Any:
    write_policy(tmp_path / "policy.yaml", {
        "version": 1, "signers": {"release": {"certificate": {"roots": "roots.pem", **signer}}},
        "sources": [{"name": "in.txt", "sha256": hashlib.sha256(b"x\n").hexdigest()}],
        "steps": [{"name": "package", "signed_by": ["release"]}]})
    return run(["model.bin", "--policy", "policy.yaml", "--json"], cwd=tmp_path,
               program="verify-model")


def _sign(tmp_path: Path, leaf: tuple[Any, Any], *chain: Any) -> None:
    payload = PAYLOADS[tmp_path]
    _attestation(tmp_path / "attestations" / "package.intoto.json", payload, leaf[1],
                 [leaf[0], *chain])


def test_a_chained_attestation_verifies_by_subject_and_by_san(tmp_path: Path,
                                                               pki: dict[str, Any]) -> None:
    _sign(tmp_path, pki["leaf"], pki["intermediate"][0])
    for signer in ({"subject": "CN=release-signer,O=Example"}, {"san": "release@example.com"}):
        result = _verify(tmp_path, signer)
        assert result.code == 0, result.output
        report = json.loads(result.stdout)
        assert report["steps"][0]["signed_by"] == ["release"]


@pytest.mark.parametrize("signer", [{"subject": "CN=someone-else,O=Example"},
                                    {"san": "mallory@example.com"}])
def test_other_names_do_not_count(tmp_path: Path, pki: dict[str, Any],
                                  signer: dict[str, str]) -> None:
    _sign(tmp_path, pki["leaf"], pki["intermediate"][0])
    assert _verify(tmp_path, signer).code == 1


@pytest.mark.parametrize("spelled", [x509.UniformResourceIdentifier("release@example.com"),
                                     x509.DNSName("release@example.com")])
def test_a_uri_or_dns_san_spelling_the_email_does_not_count_as_the_email(
        tmp_path: Path, pki: dict[str, Any], spelled: x509.GeneralName) -> None:
    """The attack: a CA issues someone else a certificate whose URI or DNS SAN is the text of
    the policy's e-mail address; only an rfc822Name is that address."""
    impostor = issue("CN=someone-else,O=Example", issuer=pki["intermediate"], sans=[spelled])
    _sign(tmp_path, impostor, pki["intermediate"][0])
    result = _verify(tmp_path, {"san": "release@example.com"})
    assert result.code == 1, result.output
    assert json.loads(result.stdout)["steps"] == []


@pytest.mark.parametrize(("general", "text"), [
    (x509.UniformResourceIdentifier("spiffe://example.com/release"), "spiffe://example.com/release"),
    (x509.DNSName("release.example.com"), "release.example.com")])
def test_a_uri_or_dns_san_counts_when_the_policy_names_that_kind(
        tmp_path: Path, pki: dict[str, Any], general: x509.GeneralName, text: str) -> None:
    leaf = issue("CN=release-signer,O=Example", issuer=pki["intermediate"], sans=[general])
    _sign(tmp_path, leaf, pki["intermediate"][0])
    assert _verify(tmp_path, {"san": text}).code == 0


def test_a_chain_to_another_root_does_not_count_even_with_the_root_inside(
        tmp_path: Path, pki: dict[str, Any]) -> None:
    other_root = issue("CN=Example Root CA,O=Example", ca=True)
    other_leaf = issue("CN=release-signer,O=Example", issuer=other_root)
    _sign(tmp_path, other_leaf, other_root[0])  # the bundle brings its own root: ignored
    assert _verify(tmp_path, {"subject": "CN=release-signer,O=Example"}).code == 1


def test_a_missing_intermediate_breaks_the_chain(tmp_path: Path, pki: dict[str, Any]) -> None:
    _sign(tmp_path, pki["leaf"])
    assert _verify(tmp_path, {"subject": "CN=release-signer,O=Example"}).code == 1


def test_an_expired_leaf_does_not_count(tmp_path: Path, pki: dict[str, Any]) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    expired = issue("CN=release-signer,O=Example", issuer=pki["intermediate"],
                    not_before=past - dt.timedelta(days=5), not_after=past)
    _sign(tmp_path, expired, pki["intermediate"][0])
    assert _verify(tmp_path, {"subject": "CN=release-signer,O=Example"}).code == 1


def test_a_leaf_not_for_code_signing_does_not_count(tmp_path: Path,
                                                    pki: dict[str, Any]) -> None:
    tls = issue("CN=release-signer,O=Example", issuer=pki["intermediate"], code_signing=False)
    _sign(tmp_path, tls, pki["intermediate"][0])
    assert _verify(tmp_path, {"subject": "CN=release-signer,O=Example"}).code == 1


def test_a_leaf_that_is_no_ca_cannot_issue_the_signing_certificate(
        tmp_path: Path, pki: dict[str, Any]) -> None:
    """A code-signing leaf used as an issuer: the chain breaks at a non-CA."""
    grandchild = issue("CN=release-signer,O=Example", issuer=pki["leaf"])
    _sign(tmp_path, grandchild, pki["leaf"][0], pki["intermediate"][0])
    assert _verify(tmp_path, {"subject": "CN=release-signer,O=Example"}).code == 1


def test_a_signature_by_another_key_under_the_right_certificate_does_not_count(
        tmp_path: Path, pki: dict[str, Any]) -> None:
    intruder = ec.generate_private_key(ec.SECP256R1())
    _sign(tmp_path, (pki["leaf"][0], intruder), pki["intermediate"][0])
    assert _verify(tmp_path, {"subject": "CN=release-signer,O=Example"}).code == 1


def test_a_policy_naming_both_or_neither_name_or_no_roots_file_is_refused(
        tmp_path: Path, pki: dict[str, Any]) -> None:
    _sign(tmp_path, pki["leaf"], pki["intermediate"][0])
    result = _verify(tmp_path, {"subject": "CN=x", "san": "y@example.com"})
    assert result.code == 2, result.output
    result = _verify(tmp_path, {})
    assert result.code == 2, result.output
    write_policy(tmp_path / "policy.yaml", {
        "version": 1, "signers": {"release": {"certificate": {"roots": "missing.pem",
                                                              "subject": "CN=x"}}},
        "steps": [{"name": "package", "signed_by": ["release"]}]})
    result = run(["model.bin", "--policy", "policy.yaml"], cwd=tmp_path, program="verify-model")
    assert_error(result, 2, "missing.pem", "release")


def test_one_certificate_named_twice_is_one_rebuilder(tmp_path: Path) -> None:
    """A rebuilder's certificate listed once by subject and once by SAN sends two rebuild
    bundles: one identity, so one rebuild, never a quorum of two. And the step's own
    certificate, listed as a rebuilder under its SAN, never rebuilds its own step."""
    from graphs import World, sha

    root = issue("CN=Root,O=Ex", ca=True)
    alice = issue("CN=alice,O=Ex", issuer=root, san="alice@example.com")
    bob = issue("CN=bob,O=Ex", issuer=root, san="bob@example.com")
    world = World.create(tmp_path, ["unused"])
    (tmp_path / "roots.pem").write_bytes(root[0].public_bytes(serialization.Encoding.PEM))
    model = world.file("model.bin", "weights")
    train = world.step("train", {"data.csv": sha("data")}, {"model.bin": model})
    _attestation(tmp_path / "attestations" / "train.intoto.json", train.payload, bob[1],
                 [bob[0]])
    for run_id, signer in (("first", alice), ("second", alice), ("own", bob)):
        bundle = world.rebuild(train, "unused", run_id=run_id)
        _attestation(tmp_path / "attestations" / f"{run_id}.rebuild.intoto.json",
                     base64.b64decode(bundle["dsseEnvelope"]["payload"]), signer[1],
                     [signer[0]])
    roots = {"roots": "roots.pem"}
    world.policy({
        "signers": {"trainer": {"certificate": {**roots, "subject": "CN=bob,O=Ex"}},
                    "rb-subject": {"certificate": {**roots, "subject": "CN=alice,O=Ex"}},
                    "rb-san": {"certificate": {**roots, "san": "alice@example.com"}},
                    "bob-san": {"certificate": {**roots, "san": "bob@example.com"}}},
        "sources": [{"name": "data.csv", "sha256": sha("data")}],
        "steps": [{"name": "train", "signed_by": ["trainer"]}],
        "rebuild": {"quorum": 2, "rebuilders": ["rb-subject", "rb-san", "bob-san"],
                    "steps": ["train"]},
    })
    code, report, _ = world.verify("model.bin")
    assert code == 1
    assert len(report["rebuilds"]) == 1, report["problems"]
    [quorum] = report["rebuilds"]
    assert len(quorum["counted"]) == 1, quorum
    assert "1 of 2 required" in " ".join(p["message"] for p in report["problems"])


def test_trust_anchors_named_by_a_relative_path_are_read_again(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """One process (a service, or these tests) verifying for two policies whose roots file,
    or Sigstore trusted root, has the same relative name must read each: never answer one
    directory's trust anchors with another's."""
    from verifier.formats import keyless
    from verifier.formats.certsigner import load_roots

    first, second = tmp_path / "first", tmp_path / "second"
    for folder, name in ((first, "CN=First"), (second, "CN=Second")):
        folder.mkdir()
        root = issue(name, ca=True)
        (folder / "roots.pem").write_bytes(root[0].public_bytes(serialization.Encoding.PEM))
    (first / "trusted_root.json").write_bytes(keyless.shipped_trusted_root().read_bytes())
    (second / "trusted_root.json").write_bytes(
        keyless.shipped_trusted_root(staging=True).read_bytes())
    seen = []
    for folder in (first, second):
        monkeypatch.chdir(folder)
        [root] = load_roots(Path("roots.pem"))
        seen.append((root.subject.rfc4514_string(), keyless._verifier("trusted_root.json")))
    assert [s[0] for s in seen] == ["CN=First", "CN=Second"]
    assert seen[0][1] is not seen[1][1]
