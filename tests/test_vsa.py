"""verify-model --vsa: a signed SLSA Verification Summary of the verdict.

The summary is checked the way a deployment system would: the DSSE signature with a few lines of
PAE and `cryptography` (not with the code under test), then each predicate field against digests
computed here with hashlib.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from audit_fixtures import Chain, cli, real_chain, sha256_file
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

MODEL = "build/model/model.safetensors"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    chain = real_chain(tmp_path_factory)
    if not (chain.root / "keys" / "verifier.key").exists():
        cli("keygen", "keys/verifier", cwd=chain.root)
    return chain


def verify_model(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The verify-model entry point itself, as a deployment gate runs it."""
    return subprocess.run(
        [sys.executable, "-c", "from verifier.cli import verify_model_main; verify_model_main()",
         *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300,
    )


def checked_statement(bundle_path: Path, public_key: Path) -> dict[str, Any]:
    """Verify the bundle's DSSE signature independently and return its statement."""
    envelope = json.loads(bundle_path.read_text())["dsseEnvelope"]
    payload = base64.b64decode(envelope["payload"])
    payload_type = envelope["payloadType"].encode()
    pae = b"DSSEv1 %d %b %d %b" % (len(payload_type), payload_type, len(payload), payload)
    key = load_pem_public_key(public_key.read_bytes())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    [signature] = envelope["signatures"]
    key.verify(base64.b64decode(signature["sig"]), pae, ec.ECDSA(hashes.SHA256()))
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    return json.loads(payload)


def test_passing_verification_writes_a_signed_vsa(chain: Chain, tmp_path: Path) -> None:
    vsa = tmp_path / "model.vsa.intoto.json"
    result = verify_model(MODEL, "--policy", chain.policy, "--attestations", "attestations",
                          "--attestations", "rebuilds", "--vsa", vsa,
                          "--key", "keys/verifier.key", cwd=chain.root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"wrote signed verification summary {vsa} (PASSED)" in result.stdout
    statement = checked_statement(vsa, chain.public("verifier"))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/verification_summary/v1"
    assert statement["subject"] == [{"name": "model.safetensors",
                                     "digest": {"sha256": sha256_file(chain.root / MODEL)}}]
    predicate = statement["predicate"]
    assert predicate["verifier"]["id"].startswith("https://")
    assert predicate["verificationResult"] == "PASSED"
    assert predicate["verifiedLevels"] == ["SLSA_BUILD_LEVEL_1",
                                           "MODEL_VERIFIER_REBUILD_QUORUM_2"]
    assert predicate["slsaVersion"] == "1.0"
    # URIs (SLSA VSA v1), not paths: absolute file: URIs of what was read.
    assert predicate["resourceUri"] == (chain.root / MODEL).absolute().as_uri()
    verified_at = dt.datetime.fromisoformat(predicate["timeVerified"].replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.UTC) - verified_at).total_seconds()) < 600
    assert predicate["policy"] == {"uri": chain.policy.absolute().as_uri(),
                                   "digest": {"sha256": sha256_file(chain.policy)}}
    inputs = {i["uri"]: i["digest"]["sha256"] for i in predicate["inputAttestations"]}
    files = [*chain.attestations.glob("*.json"), *chain.rebuilds.rglob("*.json")]
    expected = sorted(p.absolute().as_uri() for p in files)
    assert sorted(inputs) == expected  # three steps, seven rebuilds (rebuilder-c's dissent too)
    for uri, digest in inputs.items():
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(uri).path))
        assert digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_changed_vsa_no_longer_verifies(chain: Chain, tmp_path: Path) -> None:
    vsa = tmp_path / "model.vsa.intoto.json"
    result = cli("verify", MODEL, "--policy", chain.policy, "--attestations", "attestations",
                 "--vsa", vsa, "--key", "keys/verifier.key", cwd=chain.root, check=False)
    assert result.returncode == 1  # the rebuild quorum needs the rebuilds directory
    bundle = json.loads(vsa.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["predicate"]["verificationResult"] == "FAILED"
    statement["predicate"]["verificationResult"] = "PASSED"
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(bundle))
    with pytest.raises(InvalidSignature):
        checked_statement(forged, chain.public("verifier"))


def test_failing_verification_is_summarised_as_failed(chain: Chain, tmp_path: Path) -> None:
    tampered = tmp_path / "model.safetensors"
    shutil.copy(chain.root / MODEL, tampered)
    with tampered.open("r+b") as stream:
        stream.seek(-1, os.SEEK_END)
        last = stream.read(1)
        stream.seek(-1, os.SEEK_END)
        stream.write(bytes([last[0] ^ 1]))
    vsa = tmp_path / "tampered.vsa.json"
    result = verify_model(tampered, "--policy", chain.policy, "--attestations", "attestations",
                          "--attestations", "rebuilds", "--vsa", vsa,
                          "--key", "keys/verifier.key", "--json", cwd=chain.root)
    assert result.returncode == 1
    assert json.loads(result.stdout)["vsa"] == str(vsa)
    statement = checked_statement(vsa, chain.public("verifier"))
    assert statement["subject"][0]["digest"] == {"sha256": sha256_file(tampered)}
    assert statement["predicate"]["verificationResult"] == "FAILED"
    assert statement["predicate"]["verifiedLevels"] == ["FAILED"]


def test_vsa_needs_a_signer_and_a_signer_needs_vsa(chain: Chain, tmp_path: Path) -> None:
    vsa = tmp_path / "never.json"
    unsigned = verify_model(MODEL, "--policy", chain.policy, "--vsa", vsa, cwd=chain.root)
    assert unsigned.returncode == 2 and "--key" in unsigned.stderr
    assert not vsa.exists()
    stray_key = verify_model(MODEL, "--policy", chain.policy, "--key", "keys/verifier.key",
                             cwd=chain.root)
    assert stray_key.returncode == 2 and "--vsa" in stray_key.stderr


def test_verify_model_help_shows_vsa_without_importing_cryptography() -> None:
    probe = (
        "import sys\n"
        "from verifier.cli import verify_model_main\n"
        "sys.argv = ['verify-model', '--help']\n"
        "try:\n    verify_model_main()\nexcept SystemExit:\n    pass\n"
        "print('cryptography' in sys.modules, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)
    text = " ".join(result.stdout.split())  # help is wrapped to the terminal's width
    assert "--vsa" in text and "verification summary" in text
    assert result.stderr.strip() == "False"
