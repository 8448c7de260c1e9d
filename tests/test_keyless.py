"""Keyless (Sigstore) verification against bundles signed by the real Sigstore instances.

The bundles in tests/fixtures/sigstore/ were signed through GitHub Actions' OIDC identity by
Sigstore's staging (Rekor v2, timestamp authority) and production instances; ORIGIN.md says
where they come from. Everything here runs offline: the trusted roots are files (the ones
embedded in the sigstore wheel, and the ones model-verifier ships).

The second half signs for real, end to end, against a loopback Sigstore (tests/sigstore_mock:
Fulcio, Rekor and a timestamp authority from the npm package @sigstore/mock, started on
127.0.0.1 by a fixture): `record --sigstore`, then `verify-model` with a policy naming the
identity. Those tests skip, saying why, where node or the npm packages are absent.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from verifier.errors import InputError, SignatureError
from verifier.formats.envelope import parse_bundle
from verifier.formats.keyless import check_keyless, verify_keyless
from verifier.judgement.policy import KeylessIdentity

FIXTURES = Path(__file__).parent / "fixtures" / "sigstore"
STAGING_BUNDLE = FIXTURES / "a.dsse.staging-rekor-v2.txt.sigstore.json"
STAGING_SUBJECT = FIXTURES / "a.txt"  # the conformance suite's a.txt, the statement's subject
WHEEL = FIXTURES / "bundle_v3_github.whl"
WHEEL_BUNDLE = FIXTURES / "bundle_v3_github.whl.sigstore"
GITHUB = "https://token.actions.githubusercontent.com"
BEACON = ("https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
          ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main")
BEACON_SPEC = KeylessIdentity(
    issuer=GITHUB, identity=BEACON,
    repository="sigstore-conformance/extremely-dangerous-public-oidc-beacon",
    ref="refs/heads/main", trigger="workflow_dispatch",
    workflow_sha="977e8d08554ca9bda279c96e91be2119fb67c730",
)
WHEEL_IDENTITY = ("https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml"
                  "@refs/tags/v0.1.2")


def _wheel_root(instance: str) -> Path:
    """A trusted root embedded in the installed sigstore wheel (not the copy we ship)."""
    import sigstore

    return (Path(sigstore.__file__).parent / "_store" / f"https%3A%2F%2F{instance}"
            / "trusted_root.json")


STAGING_ROOT = _wheel_root("tuf-repo-cdn.sigstage.dev")
PRODUCTION_ROOT = _wheel_root("tuf-repo-cdn.sigstore.dev")


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "verifier", *map(str, args)],
                          capture_output=True, text=True, check=False)


def verify_bundle(bundle: Path, artifact: Path, identity: str = BEACON, issuer: str = GITHUB,
                  *extra: str | Path) -> subprocess.CompletedProcess[str]:
    return cli("verify-bundle", bundle, "--artifact", artifact, "--identity", identity,
               "--issuer", issuer, "--json", *extra)


def staging_raw() -> dict[str, Any]:
    return json.loads(STAGING_BUNDLE.read_text())


# --- the fixtures are what ORIGIN.md says, checked without the product's code ---------------

def test_staging_bundle_signature_checks_out_independently() -> None:
    """DSSE PAE over the payload verifies under the leaf certificate's key; the subject is
    a.txt by sha256; the certificate names the beacon workflow."""
    raw = staging_raw()
    envelope = raw["dsseEnvelope"]
    payload = base64.b64decode(envelope["payload"])
    kind = envelope["payloadType"].encode()
    pae = b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)
    certificate = x509.load_der_x509_certificate(
        base64.b64decode(raw["verificationMaterial"]["certificate"]["rawBytes"]))
    public_key = certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(base64.b64decode(envelope["signatures"][0]["sig"]), pae,
                      ec.ECDSA(hashes.SHA256()))
    statement = json.loads(payload)
    assert statement["subject"][0]["digest"]["sha256"] == hashlib.sha256(
        STAGING_SUBJECT.read_bytes()).hexdigest()
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [BEACON]


# --- verify-bundle on the staging DSSE bundle --------------------------------------------

def test_staging_bundle_verifies_with_the_staging_root() -> None:
    result = verify_bundle(STAGING_BUNDLE, STAGING_SUBJECT, BEACON, GITHUB,
                           "--trusted-root", STAGING_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] is True
    assert report["subject"] == "a.txt"
    assert report["signer"] == BEACON


def test_staging_flag_uses_the_shipped_staging_root() -> None:
    result = verify_bundle(STAGING_BUNDLE, STAGING_SUBJECT, BEACON, GITHUB, "--staging")
    assert result.returncode == 0, result.stdout + result.stderr


def test_github_claims_in_the_certificate_are_checked() -> None:
    signature = verify_keyless(staging_raw(), BEACON_SPEC, STAGING_ROOT, "bundle")
    assert signature.identity == BEACON
    assert signature.payload_type == "application/vnd.in-toto+json"
    assert signature.payload == base64.b64decode(staging_raw()["dsseEnvelope"]["payload"])


@pytest.mark.parametrize(("field", "value", "named"), [
    ("identity", BEACON.replace("@refs/heads/main", "@refs/heads/dev"), "SANs"),
    ("issuer", "https://accounts.google.com", "OIDC issuer"),
    ("repository", "sigstore-conformance/another-repository", "repository"),
    ("ref", "refs/heads/release", "ref"),
    ("trigger", "push", "trigger"),
    ("workflow_sha", "0" * 40, "workflow sha"),
])
def test_a_wrong_identity_or_claim_fails(field: str, value: str, named: str) -> None:
    spec = KeylessIdentity(**{**BEACON_SPEC.__dict__, field: value})
    with pytest.raises(SignatureError, match=named):
        verify_keyless(staging_raw(), spec, STAGING_ROOT, "bundle")


@pytest.mark.parametrize(("identity", "issuer"), [
    (BEACON + "x", GITHUB),
    (BEACON, "https://oauth2.sigstore.dev/auth"),
])
def test_verify_bundle_exits_1_for_another_signer(identity: str, issuer: str) -> None:
    result = verify_bundle(STAGING_BUNDLE, STAGING_SUBJECT, identity, issuer, "--staging")
    assert result.returncode == 1
    assert json.loads(result.stdout)["verified"] is False
    assert "Traceback" not in result.stderr


def test_the_production_root_rejects_a_staging_bundle() -> None:
    for extra in (("--trusted-root", PRODUCTION_ROOT), ()):
        result = verify_bundle(STAGING_BUNDLE, STAGING_SUBJECT, BEACON, GITHUB, *extra)
        assert result.returncode == 1
        message = json.loads(result.stdout)["message"]
        assert "another" in message or "other than" in message


def test_a_tampered_payload_fails() -> None:
    raw = staging_raw()
    statement = json.loads(base64.b64decode(raw["dsseEnvelope"]["payload"]))
    statement["subject"][0]["digest"]["sha256"] = hashlib.sha256(b"evil").hexdigest()
    raw["dsseEnvelope"]["payload"] = base64.b64encode(
        json.dumps(statement, separators=(",", ":")).encode()).decode()
    with pytest.raises(SignatureError, match="does not verify"):
        verify_keyless(raw, BEACON_SPEC, STAGING_ROOT, "tampered")


def test_a_tampered_payload_fails_on_the_command_line(tmp_path: Path) -> None:
    raw = staging_raw()
    payload = base64.b64decode(raw["dsseEnvelope"]["payload"]).replace(b"a.txt", b"b.txt")
    raw["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    tampered = tmp_path / "tampered.sigstore.json"
    tampered.write_text(json.dumps(raw))
    result = verify_bundle(tampered, STAGING_SUBJECT, BEACON, GITHUB, "--staging")
    assert result.returncode == 1
    assert "does not verify" in json.loads(result.stdout)["message"]


def test_an_artifact_that_is_no_subject_fails() -> None:
    # The signature and identity verify; the file is simply not what the statement names.
    result = verify_bundle(STAGING_BUNDLE, FIXTURES / "a.dsse.staging-rekor-v2.txt", BEACON,
                           GITHUB, "--staging")
    assert result.returncode == 1
    assert "is not a subject" in json.loads(result.stdout)["message"]


def test_identity_regex_must_match_the_whole_san() -> None:
    whole = KeylessIdentity(issuer=GITHUB,
                            identity_regex=r"https://github\.com/sigstore-conformance/.+")
    assert verify_keyless(staging_raw(), whole, STAGING_ROOT, "b").identity == BEACON
    prefix = KeylessIdentity(issuer=GITHUB,
                             identity_regex=r"https://github\.com/sigstore-conformance/")
    with pytest.raises(SignatureError, match="issued to"):
        verify_keyless(staging_raw(), prefix, STAGING_ROOT, "b")
    wrong_issuer = KeylessIdentity(issuer="https://accounts.google.com", identity_regex=".*")
    with pytest.raises(SignatureError, match="OIDC issuer"):
        verify_keyless(staging_raw(), wrong_issuer, STAGING_ROOT, "b")
    with pytest.raises(InputError, match="not a valid regular expression"):
        verify_keyless(staging_raw(), KeylessIdentity(issuer=GITHUB, identity_regex="(["),
                       STAGING_ROOT, "b")


# --- the hook verify-model uses -------------------------------------------------------------

def test_check_keyless_returns_the_identity_or_none() -> None:
    bundle = parse_bundle(staging_raw(), "staging")
    assert check_keyless(bundle, BEACON_SPEC, STAGING_ROOT) == BEACON
    other = KeylessIdentity(**{**BEACON_SPEC.__dict__, "ref": "refs/heads/dev"})
    assert check_keyless(bundle, other, STAGING_ROOT) is None
    assert check_keyless(bundle, BEACON_SPEC, PRODUCTION_ROOT) is None


def test_check_keyless_refuses_a_payload_other_than_the_verified_one() -> None:
    """If our reading of a file ever differed from sigstore's, the bundle must not count."""
    bundle = parse_bundle(staging_raw(), "staging")
    forged = dataclasses.replace(bundle, payload=bundle.payload + b" ")
    assert check_keyless(forged, BEACON_SPEC, STAGING_ROOT) is None


# --- the production message-signature bundle -----------------------------------------------

def test_production_message_signature_verifies_the_wheel() -> None:
    result = verify_bundle(WHEEL_BUNDLE, WHEEL, WHEEL_IDENTITY, GITHUB)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["signer"] == WHEEL_IDENTITY
    assert "message signature" in report["message"]


def test_message_signature_over_another_file_fails() -> None:
    result = verify_bundle(WHEEL_BUNDLE, STAGING_SUBJECT, WHEEL_IDENTITY, GITHUB)
    assert result.returncode == 1
    result = verify_bundle(WHEEL_BUNDLE, WHEEL, BEACON, GITHUB)
    assert result.returncode == 1


def test_production_bundle_fails_with_the_staging_root() -> None:
    result = verify_bundle(WHEEL_BUNDLE, WHEEL, WHEEL_IDENTITY, GITHUB, "--staging")
    assert result.returncode == 1


# --- unusable input: exit 2, one sentence ----------------------------------------------------

def test_unusable_inputs_exit_2(tmp_path: Path) -> None:
    not_json = tmp_path / "bundle.json"
    not_json.write_text("{")
    not_a_root = tmp_path / "root.json"
    not_a_root.write_text('{"mediaType": "nonsense"}')
    key_bundle = tmp_path / "key.json"
    raw = staging_raw()
    raw["verificationMaterial"] = {"publicKey": {"hint": "ab"}, "tlogEntries": []}
    key_bundle.write_text(json.dumps(raw))
    cases = [
        verify_bundle(not_json, STAGING_SUBJECT),
        verify_bundle(STAGING_BUNDLE, STAGING_SUBJECT, BEACON, GITHUB, "--trusted-root",
                      not_a_root),
        verify_bundle(STAGING_BUNDLE, STAGING_SUBJECT, BEACON, GITHUB, "--trusted-root",
                      tmp_path / "missing.json"),
        verify_bundle(key_bundle, STAGING_SUBJECT, BEACON, GITHUB, "--staging"),
        cli("verify-bundle", STAGING_BUNDLE, "--artifact", STAGING_SUBJECT, "--json"),
        cli("verify-bundle", STAGING_BUNDLE, "--artifact", STAGING_SUBJECT, "--identity",
            BEACON, "--issuer", GITHUB, "--staging", "--trusted-root", STAGING_ROOT),
    ]
    for result in cases:
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        text = result.stdout + result.stderr
        assert text.count("\n") <= 4  # one sentence (the JSON object spans 4 lines)


def test_importing_keyless_does_not_import_sigstore() -> None:
    probe = ("import sys, verifier.formats.keyless, verifier.judgement.verify, verifier.cli; "
             "print('sigstore' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


# =============================================================================================
# End to end against the loopback Sigstore

from sigstore_mock.loopback import (  # noqa: E402  (the loopback half of this file)
    LoopbackSigstore,
    github_token,
    mint_token,
    running,
    skip_reason,
    workflow_identity,
)

REPOSITORY = "acme/tiny-model"
CI_IDENTITY = workflow_identity(REPOSITORY)
needs_loopback = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with running(tmp_path_factory.mktemp("loopback-sigstore")) as sigstore:
        yield sigstore


def make_step(workdir: Path) -> list[str]:
    """A tiny step: reads data/in.txt, writes model/weights.txt and model/config.json."""
    (workdir / "data").mkdir(parents=True)
    (workdir / "data" / "in.txt").write_text("1 2 3\n")
    script = ("import json, pathlib; m = pathlib.Path('model'); m.mkdir(exist_ok=True); "
              "(m / 'weights.txt').write_text(pathlib.Path('data/in.txt').read_text()[::-1]); "
              "(m / 'config.json').write_text(json.dumps({'layers': 1}))")
    return [sys.executable, "-c", script]


def record_keyless(workdir: Path, sigstore: LoopbackSigstore, token: str,
                   *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verifier", "record", "--step", "package",
         "--material", "data/in.txt", "--product", "model", "--sigstore",
         "--identity-token", token, "--trust-config", str(sigstore.trust_config),
         "--json", *extra, "--", *make_step(workdir)],
        cwd=workdir, capture_output=True, text=True, check=False,
        env={k: v for k, v in __import__("os").environ.items()
             if k not in ("GITHUB_ACTIONS", "SIGSTORE_ID_TOKEN")},
    )


def write_policy(path: Path, signer: dict[str, str], trusted_root: Path | None) -> Path:
    import yaml

    policy: dict[str, Any] = {
        "version": 1,
        "signers": {"ci": {"sigstore": {"issuer": GITHUB, **signer}}},
        "sources": [{"pattern": "data/*", "unpinned": True}],
        "steps": [{"name": "package", "signed_by": ["ci"]}],
    }
    if trusted_root is not None:
        policy["trusted_root"] = str(trusted_root)
    path.write_text(yaml.safe_dump(policy))
    return path


@pytest.fixture(scope="module")
def recorded(loopback: LoopbackSigstore, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("keyless-build")
    result = record_keyless(workdir, loopback, github_token(REPOSITORY))
    assert result.returncode == 0, result.stdout + result.stderr
    return workdir, json.loads(result.stdout)


@needs_loopback
def test_record_sigstore_writes_sigstores_own_bundle(
        loopback: LoopbackSigstore, recorded: tuple[Path, dict[str, Any]]) -> None:
    """Certificate chained to the loopback CA, log entry, RFC 3161 timestamp; the DSSE
    signature covers our canonical statement bytes (checked here with `cryptography`)."""
    workdir, output = recorded
    assert output["signer"] == f"sigstore:{GITHUB}:{CI_IDENTITY}"
    bundle = json.loads((workdir / "attestations" / "package.intoto.json").read_text())
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    material = bundle["verificationMaterial"]
    assert material["tlogEntries"][0]["kindVersion"] == {"kind": "dsse", "version": "0.0.1"}
    assert material["timestampVerificationData"]["rfc3161Timestamps"]
    envelope = bundle["dsseEnvelope"]
    payload = base64.b64decode(envelope["payload"])
    statement = json.loads(payload)
    assert payload == json.dumps(statement, sort_keys=True, separators=(",", ":"),
                                 ensure_ascii=False).encode()
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    subjects = {s["name"]: s["digest"] for s in statement["subject"]}
    assert subjects["model/weights.txt"] == {
        "sha256": hashlib.sha256((workdir / "model" / "weights.txt").read_bytes()).hexdigest()}
    assert "dirHash" in subjects["model"]  # a digest sigstore's own Statement model refuses
    leaf = x509.load_der_x509_certificate(
        base64.b64decode(material["certificate"]["rawBytes"]))
    kind = envelope["payloadType"].encode()
    pae = b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)
    public_key = leaf.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(base64.b64decode(envelope["signatures"][0]["sig"]), pae,
                      ec.ECDSA(hashes.SHA256()))
    root = json.loads(loopback.trusted_root.read_text())
    ca = x509.load_der_x509_certificate(base64.b64decode(
        root["certificateAuthorities"][0]["certChain"]["certificates"][0]["rawBytes"]))
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [CI_IDENTITY]


@needs_loopback
@pytest.mark.parametrize(("signer", "expected"), [
    ({"identity": CI_IDENTITY, "repository": REPOSITORY, "ref": "refs/heads/main",
      "trigger": "push", "workflow_sha": "a" * 40}, 0),
    ({"identity_regex": r"https://github\.com/acme/[^/]+/\.github/workflows/.+@refs/heads/main"},
     0),
    ({"identity": workflow_identity("acme/other-model")}, 1),
    ({"identity": CI_IDENTITY, "repository": "acme/other-model"}, 1),
    ({"identity": CI_IDENTITY, "ref": "refs/heads/dev"}, 1),
    ({"identity_regex": r"https://github\.com/acme/"}, 1),  # fullmatch, not a prefix
])
def test_verify_model_pins_the_identity(loopback: LoopbackSigstore,
                                        recorded: tuple[Path, dict[str, Any]],
                                        signer: dict[str, str], expected: int,
                                        tmp_path: Path) -> None:
    workdir, _ = recorded
    policy = write_policy(tmp_path / "policy.yaml", signer, loopback.trusted_root)
    result = cli("verify", workdir / "model", "--policy", policy,
                 "--attestations", workdir / "attestations", "--json")
    assert result.returncode == expected, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == ("PASS" if expected == 0 else "FAIL")
    if expected == 0:
        assert report["steps"][0]["signed_by"] == ["ci"]


@needs_loopback
def test_verify_model_console_script_and_trusted_root_flag(
        loopback: LoopbackSigstore, recorded: tuple[Path, dict[str, Any]],
        tmp_path: Path) -> None:
    workdir, _ = recorded
    policy = write_policy(tmp_path / "policy.yaml", {"identity": CI_IDENTITY}, None)
    verify_model = Path(sys.executable).parent / "verify-model"
    base = [str(verify_model), str(workdir / "model" / "weights.txt"), "--policy", str(policy),
            "--attestations", str(workdir / "attestations")]
    # The shipped public-good root does not know the loopback instance: nothing verifies.
    assert subprocess.run(base, capture_output=True, check=False).returncode == 1
    passed = subprocess.run([*base, "--trusted-root", str(loopback.trusted_root)],
                            capture_output=True, text=True, check=False)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "PASS" in passed.stdout


@needs_loopback
def test_verify_bundle_with_the_loopback_root(loopback: LoopbackSigstore,
                                              recorded: tuple[Path, dict[str, Any]]) -> None:
    workdir, _ = recorded
    bundle = workdir / "attestations" / "package.intoto.json"
    good = verify_bundle(bundle, workdir / "model", CI_IDENTITY, GITHUB, "--trusted-root",
                         loopback.trusted_root)
    assert good.returncode == 0, good.stdout + good.stderr
    assert json.loads(good.stdout)["subject"] == "model"
    other = verify_bundle(bundle, workdir / "model", workflow_identity("acme/x"), GITHUB,
                          "--trusted-root", loopback.trusted_root)
    assert other.returncode == 1


@needs_loopback
def test_rebuild_sigstore_signs_the_rebuild(loopback: LoopbackSigstore,
                                            recorded: tuple[Path, dict[str, Any]],
                                            tmp_path: Path) -> None:
    workdir, _ = recorded
    rebuilder = workflow_identity("rebuilders/tiny-model", "rebuild.yml")
    token = github_token("rebuilders/tiny-model", workflow="rebuild.yml")
    result = subprocess.run(
        [sys.executable, "-m", "verifier", "rebuild", str(workdir / "attestations"),
         "--source", str(workdir), "--out", str(tmp_path / "rebuilds"), "--sigstore",
         "--identity-token", token, "--trust-config", str(loopback.trust_config), "--json",
         "--trust-identity", CI_IDENTITY, "--trust-issuer", GITHUB,
         "--trusted-root", str(loopback.trusted_root)],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    written = tmp_path / "rebuilds" / "keyless" / "package.rebuild.intoto.json"
    raw = json.loads(written.read_text())
    signature = verify_keyless(raw, KeylessIdentity(issuer=GITHUB, identity=rebuilder),
                               loopback.trusted_root, "rebuild")
    assert json.loads(signature.payload or b"{}")["predicateType"] == (
        "https://model-verifier.dev/attestations/rebuild/v1")


# --- signing that cannot happen: exit 2, one sentence, no attestation ----------------------

@needs_loopback
@pytest.mark.parametrize(("token", "said"), [
    ("not-a-jwt", "malformed"),
    (mint_token(CI_IDENTITY, issued_at=1_600_000_000), "expired"),
    (mint_token(CI_IDENTITY, aud="someone-else"), "audience"),
])
def test_unusable_token_fails_before_the_step_runs(loopback: LoopbackSigstore, token: str,
                                                   said: str, tmp_path: Path) -> None:
    result = record_keyless(tmp_path, loopback, token)
    assert result.returncode == 2, result.stdout + result.stderr
    assert said in json.loads(result.stdout)["error"]
    assert not (tmp_path / "model").exists()  # the command never ran
    assert not (tmp_path / "attestations").exists()


@needs_loopback
def test_unreachable_instance_writes_no_attestation(loopback: LoopbackSigstore,
                                                    tmp_path: Path) -> None:
    config = json.loads(loopback.trust_config.read_text())
    for services in ("caUrls", "rekorTlogUrls", "tsaUrls"):
        for service in config["signingConfig"][services]:
            service["url"] = service["url"].replace(loopback.url, "http://127.0.0.1:9")
    unreachable = tmp_path / "unreachable.json"
    unreachable.write_text(json.dumps(config))
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "verifier", "record", "--step", "package", "--material",
         "data/in.txt", "--product", "model", "--sigstore", "--identity-token",
         github_token(), "--trust-config", str(unreachable), "--", *make_step(workdir)],
        cwd=workdir, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "could not be reached" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (workdir / "attestations").exists()


def test_no_credential_says_how_to_get_one(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ACTIONS_ID_TOKEN", "GITHUB_", "SIGSTORE_"))}
    base = [sys.executable, "-m", "verifier", "record", "--step", "s", "--product", "x",
            "--sigstore", "--", "true"]
    result = subprocess.run(base, cwd=tmp_path, capture_output=True, text=True, env=env,
                            check=False)
    assert result.returncode == 2
    assert "--identity-token" in result.stderr and "SIGSTORE_ID_TOKEN" in result.stderr
    in_actions = subprocess.run(base, cwd=tmp_path, capture_output=True, text=True,
                                env={**env, "GITHUB_ACTIONS": "true"}, check=False)
    assert in_actions.returncode == 2
    assert "permissions: id-token: write" in in_actions.stderr
    both = subprocess.run([*base[:-2], "--key", "k.key", "--", "true"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, check=False)
    assert both.returncode == 2 and "exclude" in both.stderr


def test_check_keyless_ignores_an_unreadable_bundle_but_not_a_bad_root(tmp_path: Path) -> None:
    raw = staging_raw()
    raw["verificationMaterial"]["certificate"]["rawBytes"] = base64.b64encode(b"junk").decode()
    broken = parse_bundle(raw, "broken")
    assert check_keyless(broken, BEACON_SPEC, STAGING_ROOT) is None
    bad_root = tmp_path / "root.json"
    bad_root.write_text("[]")
    with pytest.raises(InputError, match="not a usable Sigstore trusted root"):
        check_keyless(parse_bundle(staging_raw(), "staging"), BEACON_SPEC, bad_root)


@needs_loopback
@pytest.mark.parametrize("part", ["canonicalizedBody", "inclusionPromise"])
def test_a_log_entry_that_does_not_match_fails(loopback: LoopbackSigstore,
                                               recorded: tuple[Path, dict[str, Any]],
                                               part: str, tmp_path: Path) -> None:
    workdir, _ = recorded
    raw = json.loads((workdir / "attestations" / "package.intoto.json").read_text())
    entry = raw["verificationMaterial"]["tlogEntries"][0]
    if part == "canonicalizedBody":
        body = json.loads(base64.b64decode(entry["canonicalizedBody"]))
        body["spec"]["payloadHash"]["value"] = hashlib.sha256(b"another payload").hexdigest()
        entry["canonicalizedBody"] = base64.b64encode(json.dumps(body).encode()).decode()
    else:
        entry["integratedTime"] = str(int(entry["integratedTime"]) + 3600)
    changed = tmp_path / "changed.intoto.json"
    changed.write_text(json.dumps(raw))
    result = verify_bundle(changed, workdir / "model", CI_IDENTITY, GITHUB, "--trusted-root",
                           loopback.trusted_root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "does not verify" in json.loads(result.stdout)["message"]


@needs_loopback
def test_a_keyless_rebuilder_pattern_counts_the_real_identity(loopback: LoopbackSigstore,
                                                              tmp_path: Path) -> None:
    """Rebuilders named by identity_regex are told apart by the certificate's SAN, not by the
    pattern's text: the training workflow matched by an org-wide pattern never rebuilds its
    own step, and one rebuild workflow matched by two patterns is one rebuilder."""
    from graphs import INTOTO, World, sha

    from verifier.formats.keyless import SigstoreSigner

    train_token = github_token("acme/model", workflow="train.yml")
    rebuild_token = github_token("acme/rebuilder", workflow="rebuild.yml")
    train_id = workflow_identity("acme/model", "train.yml")
    rebuild_id = workflow_identity("acme/rebuilder", "rebuild.yml")

    def judged(name: str, rebuilders: dict[str, Any], quorum: int, tokens: list[str]
               ) -> dict[str, Any]:
        world = World.create(tmp_path / name, ["unused"])
        model = world.file("model.bin", "weights")
        train = world.step("train", {"data.csv": sha("data")}, {"model.bin": model})
        world.write(SigstoreSigner(train_token, loopback.trust_config).sign_dsse(
            train.payload, INTOTO))
        for index, token in enumerate(tokens):
            bundle = world.rebuild(train, "unused", run_id=f"run-{index}")
            world.write(SigstoreSigner(token, loopback.trust_config).sign_dsse(
                base64.b64decode(bundle["dsseEnvelope"]["payload"]), INTOTO))
        world.policy({
            "signers": {"trainer": {"sigstore": {"issuer": GITHUB, "identity": train_id}},
                        **{n: {"sigstore": {"issuer": GITHUB, **spec}}
                           for n, spec in rebuilders.items()}},
            "trusted_root": str(loopback.trusted_root),
            "sources": [{"name": "data.csv", "sha256": sha("data")}],
            "steps": [{"name": "train", "signed_by": ["trainer"]}],
            "rebuild": {"quorum": quorum, "rebuilders": sorted(rebuilders),
                        "steps": ["train"]},
        })
        code, report, _ = world.verify("model.bin")
        assert code == 1, report
        return report

    own = judged("own", {"acme-ci": {"identity_regex": r"https://github\.com/acme/.+"}}, 1,
                 [train_token])
    assert own["rebuilds"][0]["counted"] == []
    twice = judged("twice", {"rb-exact": {"identity": rebuild_id},
                             "rb-org": {"identity_regex": r"https://github\.com/acme/rebuilder/.+"}},
                   2, [rebuild_token, rebuild_token])
    assert len(twice["rebuilds"][0]["counted"]) == 1
