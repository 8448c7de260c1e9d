"""The tool's own credentials never reach a step, and no secret of the recorder's environment is
signed through the step's settings report (issue 20, item 3).

The attack: `record` with an encrypted key (its password in MODEL_VERIFIER_KEY_PASSWORD), an OIDC
token, a cloud secret and a package index URL with a password in the environment; the step dumps
its environment into its product and reports every piece of every value that could pass for a
device name as `torch.devices`. The attestation's bytes (the DSSE payload decoded here, and the
signature checked here, without the product's code) hold none of them.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import assert_error, dsse_verifies, python_step, read_json, run

from verifier.errors import InputError
from verifier.formats import keyless, signing
from verifier.steps import environment, rebuild
from verifier.steps.sandbox import Sandbox

SECRETS = {
    "MODEL_VERIFIER_KEY_PASSWORD": "kp-Horse7Battery",
    "SIGSTORE_ID_TOKEN": ("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL3Rva2VuLmFjdGlvbnMiLCJzdWIi"
                          "OiJyZXBvOmV4YW1wbGUifQ.c2lnbmF0dXJlMTIzNDU2Nzg5MA"),
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",  # a valid device name
    "PIP_INDEX_URL": "https://ci:Pypi0Token77@pypi.example.com/simple",
}
TOOL = ("MODEL_VERIFIER_KEY_PASSWORD", "SIGSTORE_ID_TOKEN")
# Every value, cut into the pieces the device grammar lets through, the secrets' first.
DUMP = (
    "import json, os, re; env = dict(os.environ); "
    "open('env.txt', 'w').write(json.dumps(env, sort_keys=True)); "
    "first = [env.get(n, '') for n in " + repr(sorted(SECRETS)) + "]; "
    "pieces = [p.strip()[:64] for v in first + sorted(env.values()) "
    "for p in re.split(r'[^A-Za-z0-9 .:()+-]+', v)]; "
    "ok = re.compile(r'^[A-Za-z0-9][A-Za-z0-9 .:()+-]{0,63}$'); "
    "devices = list(dict.fromkeys(p for p in pieces if ok.match(p)))[:64]; "
    "json.dump({'torch': {'devices': devices}}, open(os.environ['MODEL_VERIFIER_REPORT'], 'w'))"
)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, object]:
    root = tmp_path_factory.mktemp("secrets")
    key = ec.generate_private_key(ec.SECP256R1())
    (root / "builder.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(SECRETS["MODEL_VERIFIER_KEY_PASSWORD"].encode())))
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    work = root / "work"
    work.mkdir()
    (work / "in.txt").write_text("data\n", encoding="utf-8")
    result = run(["record", "--step", "dump", "--key", root / "builder.key", "--material",
                  "in.txt", "--product", "env.txt", "--", *python_step(DUMP)],
                 cwd=work, env=SECRETS)
    assert result.code == 0, result.output
    return work, public, result


def test_the_tools_credentials_never_reach_the_step(recorded) -> None:
    work, _, _ = recorded
    seen = json.loads((work / "env.txt").read_text(encoding="utf-8"))
    for name in TOOL:
        assert name not in seen
        assert SECRETS[name] not in (work / "env.txt").read_text(encoding="utf-8")
    # The user's own step still gets the user's own cloud credentials.
    assert seen["AWS_SECRET_ACCESS_KEY"] == SECRETS["AWS_SECRET_ACCESS_KEY"]


def test_no_secret_is_signed_through_the_report(recorded) -> None:
    work, public, result = recorded
    path = work / "attestations" / "dump.intoto.json"
    bundle = read_json(path)
    assert dsse_verifies(bundle, public)  # the bytes checked below are the signed ones
    payload = base64.b64decode(bundle["dsseEnvelope"]["payload"]).decode("utf-8")
    raw = path.read_text(encoding="utf-8")
    for value in (*SECRETS.values(), "Pypi0Token77"):
        pieces = [] if "://" in value else [value[i:i + 8] for i in range(0, len(value) - 7, 4)]
        assert value not in raw
        for piece in (value, *pieces):  # (the bundle's base64 may spell a JWT's by chance)
            assert piece not in payload, piece
    assert "holds the value of a secret variable" in result.output
    environ = json.loads(payload)["predicate"]["buildDefinition"]["internalParameters"][
        "environment"]
    # (and the suite's own MODEL_VERIFIER_SANDBOX where bubblewrap cannot start: tests/conftest.py)
    assert environ["withheld"] == sorted({*TOOL, *(
        n for n in os.environ if n.startswith("MODEL_VERIFIER_") and n != "MODEL_VERIFIER_REPORT")})
    assert {"AWS_SECRET_ACCESS_KEY", "PIP_INDEX_URL"} <= set(environ["inherited"])
    assert not set(TOOL) & set(environ["inherited"])
    assert "devices" not in (environ["torch"] or {})


@pytest.mark.parametrize("option", [
    "AWS_SECRET_ACCESS_KEY", "MODEL_VERIFIER_KEY_PASSWORD", "SIGSTORE_ID_TOKEN",
    "HF_TOKEN=hf_abc", "INDEX=https://ci:Pypi0Token77@pypi.example.com/simple"])
def test_a_declared_secret_is_refused(recorded, option: str) -> None:
    work, _, _ = recorded
    marker = work / "ran.txt"
    result = run(["record", "--step", "again", "--key", work.parent / "builder.key",
                  "--material", "in.txt", "--product", "out.txt", "--env", option, "--",
                  *python_step(f"open({str(marker)!r}, 'w').close()")], cwd=work, env=SECRETS)
    assert_error(result, 2, "--env", "looks like a secret")
    assert not marker.exists()


def test_the_secret_rule() -> None:
    assert tuple(sorted(environment.TOOL_CREDENTIALS)) == environment.TOOL_CREDENTIALS
    assert signing.PASSWORD_VARIABLE in environment.TOOL_CREDENTIALS
    assert keyless.TOKEN_VARIABLE in environment.TOOL_CREDENTIALS
    for name in ("HF_TOKEN", "GITHUB_TOKEN", "OPENAI_API_KEY", "apiKey", "DB_PASSWORD",
                 "AWS_ACCESS_KEY_ID", "GOOGLE_APPLICATION_CREDENTIALS", "SSH_AUTH_SOCK",
                 "SOFTHSM_PIN", "MODEL_VERIFIER_CACHE", "NPM_SECRETS"):
        assert environment.looks_secret(name), name
    for name in ("KEYBOARD", "XKB_KEYMAP", "PATH", "PWD", "OMP_NUM_THREADS",
                 environment.REPORT_VARIABLE):
        assert not environment.looks_secret(name, "x"), name
    assert environment.looks_secret("INDEX", "https://u:p@example.com/")


@pytest.mark.parametrize("device", [
    SECRETS["SIGSTORE_ID_TOKEN"], "/root/.ssh/id_ed25519", "hf_abcdef", "A=B", "x" * 65,
    "user@example.com", ""])
def test_the_report_refuses_what_is_no_device_name(tmp_path: Path, device: str) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"torch": {"devices": ["cuda:0", device]}}), encoding="utf-8")
    with pytest.raises(InputError, match="devices"):
        environment.read_report(report)


def test_the_report_keeps_device_names_and_refuses_secret_pieces(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    names = ["cuda:0", "NVIDIA H100 80GB HBM3", "Tesla V100-SXM2-16GB",
             "Intel(R) Data Center GPU Max 1550", "cpu"]
    report.write_text(json.dumps({"torch": {"devices": names}}), encoding="utf-8")
    assert environment.read_report(report, ["wJalrXUtnFEMIK7MDENG"]) == {
        "torch": {"devices": names}}
    for devices in (["wJalrXUtnFEMIK7MDENG"], ["wJalrXUt", "nFEMIK7MDENG"], ["UtnFEMIK7M"]):
        report.write_text(json.dumps({"torch": {"devices": devices}}), encoding="utf-8")
        with pytest.raises(InputError, match="secret"):
            environment.read_report(report, ["wJalrXUtnFEMIK7MDENG"])


def test_a_rebuilt_step_gets_no_tool_credential_even_declared(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODEL_VERIFIER_KEY_PASSWORD", "kp")
    env = rebuild.step_environment({"SIGSTORE_ID_TOKEN": "t", "MODEL_VERIFIER_KEY_PASSWORD": "p",
                                    "SEED": "1"}, tmp_path, Sandbox("none", False))
    assert env["SEED"] == "1"
    assert not any(environment.is_tool_credential(name) for name in env)
