"""The Sigstore conformance suite's bundle-verify cases, through `verify-bundle`, by path and by
digest, as the suite's own harness drives a client (tests/fixtures/sigstore-conformance).

Each case directory holds bundle.sigstore.json and optionally artifact (else ../a.txt),
identity/issuer (else the suite's defaults), key.pub (then the bundle is key-signed) and
trusted_root.json (else Sigstore's public-good root, the one shipped with model-verifier).
A case whose name ends in `_fail` must not verify.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from helpers import assert_no_traceback, run

CASES = Path(__file__).parent / "fixtures" / "sigstore-conformance" / "bundle-verify"
IDENTITY = ("https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
            ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main")
ISSUER = "https://token.actions.githubusercontent.com"

# sigstore-python, which keyless verification delegates to, gets these wrong; its own
# conformance run marks them expected failures (sigstore-conformance's selftest workflow).
UPSTREAM = {
    "intoto-with-custom-trust-root": "sigstore-python 4.x refuses the integrated time of a "
    "Rekor intoto v0.0.2 entry ('Integrated time only supported for dsse/hashedrekord 0.0.1')",
    "trust-root-tsa-validity-end-inclusive": "sigstore-python 4.x treats the end of a TSA's "
    "validity in the trusted root as exclusive; the trusted-root format defines it as "
    "inclusive",
}


def _cases() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if p.is_dir())


def _arguments(case: Path, by_digest: bool) -> list[str]:
    artifact = case / "artifact" if (case / "artifact").exists() else CASES / "a.txt"
    target = (f"sha256:{hashlib.sha256(artifact.read_bytes()).hexdigest()}" if by_digest
              else str(artifact))
    args = ["verify-bundle", str(case / "bundle.sigstore.json"), "--artifact", target]
    if (case / "key.pub").exists():
        args += ["--key", str(case / "key.pub")]
    else:
        identity = (case / "identity").read_text().strip() if (case / "identity").exists() \
            else IDENTITY
        issuer = (case / "issuer").read_text().strip() if (case / "issuer").exists() else ISSUER
        args += ["--identity", identity, "--issuer", issuer]
    if (case / "trusted_root.json").exists():
        args += ["--trusted-root", str(case / "trusted_root.json")]
    return args


@pytest.mark.parametrize("by_digest", [False, True], ids=["path", "digest"])
@pytest.mark.parametrize("name", _cases())
def test_bundle_verify_case(name: str, by_digest: bool) -> None:
    if name in UPSTREAM:
        pytest.xfail(UPSTREAM[name])
    case = CASES / name
    result = run([*_arguments(case, by_digest), "--json"])
    assert_no_traceback(result)
    if name.endswith("_fail"):
        assert result.code in (1, 2), result.output
    else:
        assert result.code == 0, result.output
        assert json.loads(result.stdout)["verified"] is True


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_the_upstream_exceptions_still_fail_for_the_reason_given(name: str) -> None:
    """Should sigstore-python be fixed, this fails and the exception list above can shrink."""
    result = run([*_arguments(CASES / name, False)])
    assert result.code == 1, result.output


# --- managed-key bundles beyond the suite's cases: the log and timestamps are really checked


def _managed(tmp_path: Path, name: str = "managed-key-and-trusted-root") -> dict:
    return json.loads((CASES / name / "bundle.sigstore.json").read_text())


def _verify_managed(bundle: Path, key: Path, root: Path | None, *extra: str) -> object:
    args = ["verify-bundle", str(bundle), "--artifact", str(CASES / "a.txt"), "--key", str(key)]
    if root is not None:
        args += ["--trusted-root", str(root)]
    return run([*args, *extra])


def test_managed_key_log_entry_from_production_verifies_under_the_shipped_root() -> None:
    from verifier.formats.keyless import shipped_trusted_root

    case = CASES / "managed-key-happy-path"
    result = run(["verify-bundle", str(case / "bundle.sigstore.json"), "--artifact",
                  str(CASES / "a.txt"), "--key", str(case / "key.pub"), "--trusted-root",
                  str(shipped_trusted_root()), "--json"])
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    # Two verified times: the log's integrated time (SET) and the TSA timestamp.
    assert len(report["verified_times"]) == 2, report
    assert report["notes"] == []


def test_without_a_trusted_root_the_log_entry_is_reported_unchecked() -> None:
    case = CASES / "managed-key-happy-path"
    result = _verify_managed(case / "bundle.sigstore.json", case / "key.pub", None)
    assert result.code == 0, result.output
    assert "were not checked; give --trusted-root" in result.stdout


def test_managed_key_under_another_instance_root_fails() -> None:
    """The conformance bundle's log is a private instance: the public-good root refuses it."""
    from verifier.formats.keyless import shipped_trusted_root

    case = CASES / "managed-key-and-trusted-root"
    result = _verify_managed(case / "bundle.sigstore.json", case / "key.pub",
                             shipped_trusted_root())
    assert result.code == 1, result.output
    assert "log entry 1" in result.stdout


def test_managed_key_with_another_valid_key_fails(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "other.pub").write_bytes(other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    case = CASES / "managed-key-and-trusted-root"
    result = _verify_managed(case / "bundle.sigstore.json", tmp_path / "other.pub",
                             case / "trusted_root.json")
    assert result.code == 1, result.output


@pytest.mark.parametrize("attack", ["set", "integrated-time", "body-digest", "body-key",
                                    "drop-entry"])
def test_managed_key_tampered_log_entry_fails(tmp_path: Path, attack: str) -> None:
    import base64

    case = CASES / "managed-key-and-trusted-root"
    bundle = _managed(tmp_path)
    entry = bundle["verificationMaterial"]["tlogEntries"][0]
    if attack == "set":
        signature = bytearray(base64.b64decode(entry["inclusionPromise"]["signedEntryTimestamp"]))
        signature[-1] ^= 1
        entry["inclusionPromise"]["signedEntryTimestamp"] = base64.b64encode(signature).decode()
    elif attack == "integrated-time":
        entry["integratedTime"] = str(int(entry["integratedTime"]) + 1)
    elif attack in ("body-digest", "body-key"):
        # A body that names what the attacker wants no longer hashes to the logged leaf.
        body = json.loads(base64.b64decode(entry["canonicalizedBody"]))
        if attack == "body-digest":
            body["spec"]["data"]["hash"]["value"] = "0" * 64
        else:
            body["spec"]["signature"]["publicKey"]["content"] = base64.b64encode(
                b"-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n").decode()
        entry["canonicalizedBody"] = base64.b64encode(
            json.dumps(body, separators=(",", ":")).encode()).decode()
    else:
        bundle["verificationMaterial"]["tlogEntries"] = []
    (tmp_path / "b.json").write_text(json.dumps(bundle))
    result = _verify_managed(tmp_path / "b.json", case / "key.pub", case / "trusted_root.json")
    assert result.code == 1, result.output


def test_a_dsse_key_bundle_without_log_entry_fails_when_a_root_is_demanded(
        tmp_path: Path) -> None:
    from helpers import make_keys, record_step

    keys = make_keys(tmp_path, "k")
    (tmp_path / "in.txt").write_text("x\n")
    assert record_step(tmp_path, "s", keys.private, ["in.txt"], ["out.txt"],
                       "import shutil; shutil.copy('in.txt', 'out.txt')").code == 0
    bundle = tmp_path / "attestations" / "s.intoto.json"
    plain = run(["verify-bundle", bundle, "--artifact", tmp_path / "out.txt", "--key",
                 keys.public])
    assert plain.code == 0, plain.output
    rooted = run(["verify-bundle", bundle, "--artifact", tmp_path / "out.txt", "--key",
                  keys.public, "--trusted-root",
                  CASES / "managed-key-and-trusted-root" / "trusted_root.json"])
    assert rooted.code == 1 and "no transparency-log entry" in rooted.stdout, rooted.output


def test_a_bad_digest_argument_is_one_sentence() -> None:
    from helpers import assert_error

    case = CASES / "managed-key-happy-path"
    result = run(["verify-bundle", str(case / "bundle.sigstore.json"), "--artifact",
                  "sha256:abc", "--key", str(case / "key.pub")])
    assert_error(result, 2, "sha256:abc", "64 hex")
