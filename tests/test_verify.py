"""verify-bundle and verify / verify-model on small recorded chains: what passes, what fails
and what the report says. Each failure test changes one thing of a chain that passes."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from helpers import (
    Chain,
    assert_error,
    assert_no_traceback,
    dsse_verifies,
    payload_of,
    read_json,
    run,
    run_executable,
    sign_bundle,
    write_json,
    write_policy,
)


def verify(chain: Chain, *extra: str, program: str = "model-verifier"):
    args = ["verify", "dist/model.bin", *extra] if program == "model-verifier" else [
        "dist/model.bin", *extra]
    result = run(args, cwd=chain.work, program=program)
    assert_no_traceback(result)
    return result


def problems(chain: Chain, *extra: str) -> list[str]:
    result = verify(chain, "--json", *extra)
    report = json.loads(result.stdout)
    assert result.code == (0 if report["verdict"] == "PASS" else 1), result.output
    return [p["message"] for p in report["problems"]]


def only_problem(chain: Chain) -> str:
    found = problems(chain)
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------- verify-bundle


def verify_bundle(chain: Chain, bundle: Path, key: str = "builder",
                  artifact: str = "dist/model.bin", *extra: str):
    result = run(["verify-bundle", bundle, "--artifact", artifact, "--key",
                  chain.keys(key).public, *extra], cwd=chain.work)
    assert_no_traceback(result)
    return result


def test_verify_bundle_ok_with_the_signers_key(chain: Chain) -> None:
    result = verify_bundle(chain, chain.attestation("package"))
    assert result.code == 0, result.output
    assert result.stdout.startswith("OK  ")
    assert "dist/model.bin" in result.stdout
    # and the independent check agrees
    assert dsse_verifies(read_json(chain.attestation("package")), chain.keys("builder").public_pem)


def test_verify_bundle_json(chain: Chain) -> None:
    result = verify_bundle(chain, chain.attestation("package"), "builder", "dist/model.bin",
                           "--json")
    assert result.code == 0
    assert json.loads(result.stdout)["verified"] is True
    assert json.loads(result.stdout)["subject"] == "dist/model.bin"


def test_verify_bundle_of_a_directory_artifact_uses_dirhash(chain: Chain) -> None:
    result = verify_bundle(chain, chain.attestation("package"), "builder", "dist")
    assert result.code == 0, result.output
    assert "subject dist" in result.stdout


def test_verify_bundle_fails_with_another_key(chain: Chain) -> None:
    result = verify_bundle(chain, chain.attestation("package"), "outsider")
    assert result.code == 1
    assert result.stdout.startswith("FAIL  ")
    assert str(chain.attestation("package").relative_to(chain.work)) in result.stdout \
        or str(chain.attestation("package")) in result.stdout
    assert "signature" in result.stdout


def test_verify_bundle_fails_when_the_artifact_is_not_a_subject(chain: Chain) -> None:
    chain.artifact.write_bytes(b"not the packaged model")
    result = verify_bundle(chain, chain.attestation("package"))
    assert result.code == 1
    assert "dist/model.bin" in result.stdout and "not a subject" in result.stdout
    # another step's product is not a subject of package either
    result = verify_bundle(chain, chain.attestation("package"), "builder", "data/clean.txt")
    assert result.code == 1 and "not a subject" in result.stdout


def test_verify_bundle_fails_for_another_payload_type(chain: Chain) -> None:
    bundle = read_json(chain.attestation("package"))
    payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
    forged = sign_bundle(payload, "text/plain", chain.keys("builder").private)
    assert dsse_verifies(forged, chain.keys("builder").public_pem)  # validly signed...
    write_json(chain.work / "plain.json", forged)
    result = verify_bundle(chain, chain.work / "plain.json")
    assert result.code == 1  # ...but not an in-toto statement
    assert "text/plain" in result.stdout and "plain.json" in result.stdout


def test_verify_bundle_rejects_payload_type_swapped_after_signing(chain: Chain) -> None:
    bundle = read_json(chain.attestation("package"))
    bundle["dsseEnvelope"]["payloadType"] = "text/plain"
    write_json(chain.work / "swapped.json", bundle)
    assert verify_bundle(chain, chain.work / "swapped.json").code == 1  # PAE covers the type


def _signed_with_plus_or_slash(chain: Chain) -> dict:
    """The package statement signed afresh until its standard base64 signature holds '+' or
    '/', so that the URL-safe spelling really differs (ECDSA signatures are randomised)."""
    payload = base64.b64decode(read_json(chain.attestation("package"))["dsseEnvelope"]["payload"])
    for _ in range(200):
        bundle = sign_bundle(payload, "application/vnd.in-toto+json",
                             chain.keys("builder").private)
        signature = bundle["dsseEnvelope"]["signatures"][0]["sig"]
        if ("+" in signature or "/" in signature) and signature.endswith("="):
            return bundle
    raise AssertionError("no signature with '+' or '/' in 200 tries")


@pytest.mark.parametrize("encoding", ["standard-unpadded", "urlsafe-padded", "urlsafe-unpadded"])
def test_verify_bundle_accepts_standard_and_urlsafe_base64(chain: Chain, encoding: str) -> None:
    def encode(data: bytes) -> str:
        text = (base64.urlsafe_b64encode(data) if encoding.startswith("urlsafe")
                else base64.b64encode(data)).decode()
        return text.rstrip("=") if encoding.endswith("unpadded") else text

    bundle = _signed_with_plus_or_slash(chain)
    original_sig = bundle["dsseEnvelope"]["signatures"][0]["sig"]
    envelope = bundle["dsseEnvelope"]
    envelope["payload"] = encode(base64.b64decode(envelope["payload"]))
    envelope["signatures"][0]["sig"] = encode(base64.b64decode(original_sig))
    assert envelope["signatures"][0]["sig"] != original_sig  # the spelling really changed
    write_json(chain.work / "reencoded.json", bundle)
    assert verify_bundle(chain, chain.work / "reencoded.json").code == 0
    assert verify_bundle(chain, chain.work / "reencoded.json", "outsider").code == 1


def test_keyid_hint_does_not_change_the_result(chain: Chain) -> None:
    bundle = read_json(chain.attestation("package"))
    outsider_hint = chain.keys("outsider").hint
    assert bundle["verificationMaterial"]["publicKey"]["hint"] == chain.keys("builder").hint
    bundle["verificationMaterial"]["publicKey"]["hint"] = outsider_hint
    for entry in bundle["dsseEnvelope"]["signatures"]:
        entry["keyid"] = outsider_hint
    write_json(chain.work / "hinted.json", bundle)
    assert verify_bundle(chain, chain.work / "hinted.json", "builder").code == 0
    assert verify_bundle(chain, chain.work / "hinted.json", "outsider").code == 1


def test_verify_bundle_with_an_empty_signature_fails(chain: Chain) -> None:
    bundle = read_json(chain.attestation("package"))
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = ""
    write_json(chain.work / "empty-sig.json", bundle)
    assert verify_bundle(chain, chain.work / "empty-sig.json").code == 1


# ---------------------------------------------------------------- verify: passing


def test_three_step_chain_passes(chain: Chain) -> None:
    result = verify(chain)
    assert result.code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("PASS  dist/model.bin")
    for step in ("prepare", "train", "package"):
        assert any(line.strip().startswith(f"step {step}") and "signed by builder" in line
                   for line in lines), result.stdout


def test_verify_model_executable_passes_and_matches_verify(chain: Chain) -> None:
    result = run_executable(["dist/model.bin", "--policy", "model-policy.yaml",
                             "--attestations", "attestations"], cwd=chain.work,
                            program="verify-model")
    assert result.code == 0, result.output
    assert result.stdout == verify(chain).stdout


def test_verify_model_in_process_entry(chain: Chain) -> None:
    result = verify(chain, program="verify-model")
    assert result.code == 0, result.output


def test_a_directory_artifact_passes(chain: Chain) -> None:
    result = run(["verify", "dist"], cwd=chain.work)
    assert result.code == 0, result.output


def test_json_report_shape(chain: Chain) -> None:
    result = verify(chain, "--json")
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    assert report["verdict"] == "PASS"
    assert report["problems"] == []
    assert report["artifact"] == "dist/model.bin"
    assert report["digest"] == {"sha256": hashlib.sha256(chain.artifact.read_bytes()).hexdigest()}
    assert [s["step"] for s in report["steps"]] == ["prepare", "train", "package"]
    for step in report["steps"]:
        assert step["signed_by"] == ["builder"]
        bundle = read_json(chain.work / step["attestation"])
        payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
        assert step["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    pinned = {s["name"]: s["pinned"] for s in report["sources"]}
    assert pinned == {"raw.txt": True, "prep.py": False}


def test_json_report_shape_on_failure(chain: Chain) -> None:
    chain.attestation("prepare").unlink()
    result = verify(chain, "--json")
    assert result.code == 1
    report = json.loads(result.stdout)
    assert report["verdict"] == "FAIL"
    assert report["problems"]
    assert all(set(p) == {"file", "message", "kind"} for p in report["problems"])
    assert isinstance(report["steps"], list)


def test_default_policy_and_attestations_are_found_in_the_working_directory(
    chain: Chain,
) -> None:
    explicit = verify(chain, "--policy", "model-policy.yaml", "--attestations", "attestations")
    default = verify(chain)
    assert default.code == explicit.code == 0
    assert default.stdout == explicit.stdout
    # the default policy really is model-policy.yaml: a broken one breaks the default run
    chain.policy.write_text("version: [", encoding="utf-8")
    assert_error(verify(chain), 2, "model-policy.yaml")


def test_absent_default_policy_says_how_to_pass_one(chain: Chain) -> None:
    chain.policy.unlink()
    assert_error(verify(chain), 2, "model-policy.yaml", "--policy")


def test_default_attestations_directory_is_attestations(chain: Chain) -> None:
    shutil.move(chain.attestations, chain.work / "elsewhere")
    assert_error(verify(chain), 2, "attestations")
    assert verify(chain, "--attestations", "elsewhere").code == 0


def test_attestations_may_be_spread_over_several_directories(chain: Chain) -> None:
    (chain.work / "more").mkdir()
    shutil.move(chain.attestation("train"), chain.work / "more" / "train.intoto.json")
    assert verify(chain).code == 1
    result = verify(chain, "--attestations", "attestations", "--attestations", "more")
    assert result.code == 0, result.output


# ---------------------------------------------------------------- verify: one failure each


def test_step_signed_by_an_unknown_key_fails(chain: Chain) -> None:
    assert chain.record("train", signer="outsider").code == 0
    result = verify(chain)
    assert result.code == 1
    assert result.stdout.startswith("FAIL  dist/model.bin")
    found = problems(chain)
    assert any("attestations/train.intoto.json" in p and "no key the policy names" in p
               for p in found), found
    assert any("required step 'train' is missing" in p for p in found), found


def test_unknown_signer_is_not_rescued_by_a_hint_naming_the_builder(chain: Chain) -> None:
    assert chain.record("train", signer="outsider").code == 0
    bundle = read_json(chain.attestation("train"))
    bundle["verificationMaterial"]["publicKey"]["hint"] = chain.keys("builder").hint
    bundle["dsseEnvelope"]["signatures"][0]["keyid"] = chain.keys("builder").hint
    write_json(chain.attestation("train"), bundle)
    assert any("required step 'train' is missing" in p for p in problems(chain))


def test_step_signed_by_a_policy_signer_not_allowed_for_it_fails(chain: Chain) -> None:
    assert chain.record("train", signer="auditor").code == 0
    message = only_problem(chain)
    assert "attestations/train.intoto.json" in message
    assert "signed by auditor" in message and "requires builder" in message


def test_tampered_attestation_payload_fails(chain: Chain) -> None:
    bundle = read_json(chain.attestation("train"))
    payload = bytearray(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    payload[len(payload) // 2] ^= 0x01
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(bytes(payload)).decode()
    write_json(chain.attestation("train"), bundle)
    assert not dsse_verifies(bundle, chain.keys("builder").public_pem)
    result = verify(chain)
    assert result.code == 1
    assert "attestations/train.intoto.json" in result.stdout
    assert any("required step 'train' is missing" in p for p in problems(chain))


def test_subject_digest_rewritten_and_resigned_by_an_outsider_fails(chain: Chain) -> None:
    # An attacker who cannot sign as the builder rewrites what package attests.
    chain.artifact.write_bytes(b"backdoored weights")
    statement = payload_of(read_json(chain.attestation("package")))
    for subject in statement["subject"]:
        if subject["name"] == "dist/model.bin":
            subject["digest"] = {"sha256": hashlib.sha256(b"backdoored weights").hexdigest()}
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    write_json(chain.attestation("package"),
               sign_bundle(payload, "application/vnd.in-toto+json",
                           chain.keys("outsider").private))
    message = only_problem(chain)
    assert "dist/model.bin" in message and "attestations/package.intoto.json" in message


def test_modified_artifact_is_not_a_subject(chain: Chain) -> None:
    chain.artifact.write_bytes(chain.artifact.read_bytes() + b"\x00")
    result = verify(chain)
    assert result.code == 1
    message = only_problem(chain)
    assert message.startswith("dist/model.bin:")
    assert "attestations/package.intoto.json" in message


def test_modified_file_in_a_directory_artifact_is_named(chain: Chain) -> None:
    (chain.work / "dist" / "config.json").write_text('{"layers": 2}')
    result = run(["verify", "dist", "--json"], cwd=chain.work)
    assert result.code == 1
    [problem] = json.loads(result.stdout)["problems"]
    assert problem["message"].startswith("dist:") and "config.json" in problem["message"]


def test_missing_required_step_fails(chain: Chain) -> None:
    chain.attestation("prepare").unlink()
    found = problems(chain)
    assert any("required step 'prepare' is missing" in p for p in found), found
    assert any("data/clean.txt" in p and "neither a product" in p for p in found), found


def test_material_neither_product_nor_source_fails(chain: Chain) -> None:
    (chain.work / "notes.md").write_text("undeclared input\n")
    assert chain.record("train", materials=["data/clean.txt", "notes.md"]).code == 0
    message = only_problem(chain)
    assert "material notes.md" in message and "'train'" in message
    assert "attestations/train.intoto.json" in message and "neither a product" in message


def test_pinned_source_with_another_sha256_fails(chain: Chain) -> None:
    policy = chain.policy_data()
    policy["sources"][0]["sha256"] = hashlib.sha256(b"some other data").hexdigest()
    write_policy(chain.policy, policy)
    message = only_problem(chain)
    assert "material raw.txt" in message and "pins" in message
    assert "attestations/prepare.intoto.json" in message


def test_expired_policy_fails(chain: Chain) -> None:
    policy = chain.policy_data()
    policy["expires"] = "2001-02-03"
    write_policy(chain.policy, policy)
    message = only_problem(chain)
    assert "model-policy.yaml" in message and "expired" in message and "2001-02-03" in message


def test_policy_expiring_in_the_future_passes(chain: Chain) -> None:
    policy = chain.policy_data()
    policy["expires"] = "2999-12-31"
    write_policy(chain.policy, policy)
    assert problems(chain) == []


def test_after_violated_fails(chain: Chain) -> None:
    # prepare stays in the chain (package uses its output), but train no longer derives from it.
    assert chain.record("train", materials=["raw.txt"]).code == 0
    assert chain.record("package", materials=["model/weights.bin", "data/clean.txt"]).code == 0
    message = only_problem(chain)
    assert "attestations/train.intoto.json" in message
    assert "'train' must come after 'prepare'" in message


def test_several_problems_are_all_listed(chain: Chain) -> None:
    policy = chain.policy_data()
    policy["expires"] = "2001-02-03"
    policy["sources"][0]["sha256"] = "0" * 64
    write_policy(chain.policy, policy)
    assert chain.record("train", signer="auditor").code == 0
    found = problems(chain)
    assert len(found) == 3, found
    assert any("expired" in p for p in found)
    assert any("raw.txt" in p and "pins" in p for p in found)
    assert any("signed by auditor" in p for p in found)
    text = verify(chain).stdout
    for message in found:
        assert message in text


def test_attestation_file_names_are_not_trusted(chain: Chain) -> None:
    # Swapped and meaningless names change nothing: steps are found by signed content alone.
    renames = {"prepare": "package.intoto.json", "train": "x.json", "package": "prepare.json"}
    for step, name in renames.items():
        chain.attestation(step).rename(chain.attestations / f"tmp-{name}")
    for name in renames.values():
        (chain.attestations / f"tmp-{name}").rename(chain.attestations / name)
    report = json.loads(verify(chain, "--json").stdout)
    assert report["verdict"] == "PASS", report["problems"]
    assert {s["step"]: s["attestation"] for s in report["steps"]} == {
        step: f"attestations/{name}" for step, name in renames.items()}
