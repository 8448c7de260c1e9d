"""OpenSSF Model Signing interop: signatures made by the real `model-signing` tool verify with
ours (and stop verifying after a change or a rename), ours verify with the real tool and hold to
the OMS v1.0 schemas, and verify-model reports a model.sig as evidence. Bad input: a sentence."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    BIN,
    INTOTO,
    Chain,
    assert_error,
    assert_no_traceback,
    dsse_verifies,
    make_keys,
    payload_of,
    read_json,
    run,
    sign_bundle,
    write_json,
)

from verifier.errors import InputError, SignatureError, VerificationFailure
from verifier.formats.signing import bundle_signed_by, load_public_key
from verifier.neighbours.oms import read_oms, verify_directory

MODEL_SIGNING = BIN / "model_signing"
pytestmark = pytest.mark.skipif(not MODEL_SIGNING.exists(),
                                reason="the model-signing tool (dev extra) is not installed")
FIXTURES = Path(__file__).parent / "fixtures" / "oms"


def real_sign(model: Path, private_key: Path, signature: Path | None = None) -> Path:
    """Sign with the OpenSSF tool's library, called as its `sign key` command calls it (in
    process: the command costs two seconds of imports a run)."""
    import model_signing

    target = signature or model / "model.sig"
    ignored = [target.resolve().relative_to(model.resolve())] if target.parent == model else []
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key
    ).set_hashing_config(
        model_signing.hashing.Config().set_ignored_paths(paths=ignored, ignore_git_paths=True)
    ).sign(model, target)
    return target


def real_sign_command(model: Path, private_key: Path) -> Path:
    """Sign with the OpenSSF tool's own command line."""
    completed = subprocess.run(
        [str(MODEL_SIGNING), "sign", "key", str(model), "--private_key", str(private_key),
         "--signature", str(model / "model.sig")],
        capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return model / "model.sig"


def real_verify(model: Path, public_key: Path, signature: Path | None = None
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MODEL_SIGNING), "verify", "key", str(model), "--signature",
         str(signature or model / "model.sig"), "--public_key", str(public_key)],
        capture_output=True, text=True, timeout=120, check=False)


def make_model(directory: Path) -> Path:
    (directory / "shards").mkdir(parents=True)
    (directory / "config.json").write_text('{"layers": 2}\n', encoding="utf-8")
    (directory / "shards" / "part-1.bin").write_bytes(bytes(range(256)) * 64)
    (directory / "shards" / "part-2.bin").write_bytes(b"\x00" * 4096)
    return directory


def trusting(public_key: Path, name: str = "builder") -> Any:
    key = load_public_key(public_key)
    return lambda bundle: (name,) if bundle_signed_by(bundle, key) else ()


def statement_of(signature: Path) -> dict[str, Any]:
    return payload_of(read_json(signature))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    make_keys(directory, "builder")
    make_keys(directory, "outsider")
    make_keys(directory, "edwards", algorithm="ed25519")
    return directory


# --- OMS in: the real tool signs, we verify ------------------------------------------------------


def test_a_real_model_signing_signature_verifies_with_ours(keys: Path, tmp_path: Path) -> None:
    model = make_model(tmp_path / "model")
    real_sign_command(model, keys / "builder.key")
    check = verify_directory(model, trusting(keys / "builder.pub"))
    assert check.signed_by == ("builder",) and check.files == 3
    # Independently of our code: the signature is the builder's.
    assert dsse_verifies(read_json(model / "model.sig"), (keys / "builder.pub").read_bytes())
    with pytest.raises(SignatureError, match="not signed by any trusted key"):
        verify_directory(model, trusting(keys / "outsider.pub"))


def test_a_changed_file_fails_ours(keys: Path, tmp_path: Path) -> None:
    model = make_model(tmp_path / "model")
    real_sign(model, keys / "builder.key")
    (model / "shards" / "part-2.bin").write_bytes(b"\x01" * 4096)
    with pytest.raises(VerificationFailure, match=r"changed: shards/part-2\.bin"):
        verify_directory(model, trusting(keys / "builder.pub"))


def test_a_renamed_file_fails_ours_although_the_root_digest_is_unchanged(
        keys: Path, tmp_path: Path) -> None:
    model = make_model(tmp_path / "model")
    real_sign(model, keys / "builder.key")
    renamed = make_model(tmp_path / "renamed")
    (renamed / "shards" / "part-1.bin").rename(renamed / "shards" / "part-0.bin")
    real_sign(renamed, keys / "builder.key")
    # Why per-file resources must be compared: the subject digest carries no file names.
    assert (statement_of(model / "model.sig")["subject"][0]["digest"]
            == statement_of(renamed / "model.sig")["subject"][0]["digest"])
    (model / "shards" / "part-1.bin").rename(model / "shards" / "part-0.bin")
    with pytest.raises(VerificationFailure) as failure:
        verify_directory(model, trusting(keys / "builder.pub"))
    assert "missing: shards/part-1.bin" in str(failure.value)
    assert "not signed: shards/part-0.bin" in str(failure.value)


def test_an_added_file_fails_ours(keys: Path, tmp_path: Path) -> None:
    model = make_model(tmp_path / "model")
    real_sign(model, keys / "builder.key")
    (model / "extra.py").write_text("print('hello')\n", encoding="utf-8")
    with pytest.raises(VerificationFailure, match=r"not signed: extra\.py"):
        verify_directory(model, trusting(keys / "builder.pub"))


# --- verify-model reports a model.sig -----------------------------------------------------------




def verify_dist(chain: Chain) -> tuple[int, dict[str, Any]]:
    result = run(["dist", "--json"], cwd=chain.work, program="verify-model")
    assert_no_traceback(result)
    return result.code, json.loads(result.stdout)


def test_verify_model_counts_a_real_oms_signature_of_the_attested_directory(
        chain: Chain) -> None:
    real_sign(chain.work / "dist", chain.keys("builder").private)
    code, report = verify_dist(chain)
    assert code == 0, report
    [evidence] = report["oms"]
    assert evidence["verdict"] == "verified" and evidence["signed_by"] == ["builder"]
    assert evidence["files"] == 2
    # The directory digest compared with the attestation leaves the signature out.
    attested = {s["name"]: s["digest"] for s in payload_of(read_json(
        chain.attestation("package")))["subject"]}
    assert report["digest"] == attested["dist"]
    text = run(["dist"], cwd=chain.work, program="verify-model").stdout
    assert "OMS signature dist/model.sig signed by builder: all 2 signed files match" in text


def test_verify_model_fails_when_the_files_no_longer_match_the_oms_signature(
        chain: Chain) -> None:
    real_sign(chain.work / "dist", chain.keys("builder").private)
    (chain.work / "dist" / "config.json").write_text('{"layers": 3}', encoding="utf-8")
    code, report = verify_dist(chain)
    assert code == 1
    assert report["oms"][0]["verdict"] == "mismatch"
    assert any("no longer match the OMS signature" in p["message"] and "config.json"
               in p["message"] for p in report["problems"]), report["problems"]


def test_an_oms_signature_by_no_policy_signer_is_noted_not_counted(chain: Chain) -> None:
    real_sign(chain.work / "dist", chain.keys("outsider").private)
    code, report = verify_dist(chain)
    assert code == 0, report
    assert report["oms"][0]["verdict"] == "unattributed"
    assert any("signed by no signer the policy names" in n for n in report["notes"])


def test_a_model_sig_that_is_no_signature_fails_with_a_sentence(chain: Chain) -> None:
    (chain.work / "dist" / "model.sig").write_text("not a bundle", encoding="utf-8")
    code, report = verify_dist(chain)
    assert code == 1
    assert any(p["message"].startswith("dist/model.sig: is not valid JSON")
               for p in report["problems"]), report["problems"]


# --- OMS out: we sign, the real tool verifies ---------------------------------------------------


def sign_model(model: Path, key: Path, *extra: str) -> Any:
    result = run(["sign-model", model, "--key", key, "--json", *extra])
    assert_no_traceback(result)
    return result


def test_sign_model_output_verifies_with_the_real_tool(keys: Path, tmp_path: Path) -> None:
    model = make_model(tmp_path / "model")
    result = sign_model(model, keys / "builder.key")
    assert result.code == 0, result.output
    verified = real_verify(model, keys / "builder.pub")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert dsse_verifies(read_json(model / "model.sig"), (keys / "builder.pub").read_bytes())
    (model / "config.json").write_text('{"layers": 3}\n', encoding="utf-8")
    rejected = real_verify(model, keys / "builder.pub")
    assert rejected.returncode != 0
    assert "config.json" in rejected.stdout + rejected.stderr


def test_sign_model_writes_the_oms_v1_format(keys: Path, tmp_path: Path) -> None:
    import jsonschema

    model = make_model(tmp_path / "model")
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")
    sign_model(model, keys / "builder.key")
    bundle = read_json(model / "model.sig")
    statement = payload_of(bundle)
    jsonschema.Draft202012Validator(read_json(FIXTURES / "oms-bundle.schema.json")).validate(
        bundle)
    jsonschema.Draft202012Validator(read_json(FIXTURES / "oms-statement.schema.json")).validate(
        statement)
    expected = {name: hashlib.sha256((model / name).read_bytes()).hexdigest()
                for name in ("config.json", "shards/part-1.bin", "shards/part-2.bin")}
    resources = statement["predicate"]["resources"]
    assert [r["name"] for r in resources] == sorted(expected)  # .git and model.sig left out
    assert {r["name"]: r["digest"] for r in resources} == expected
    assert all(r["algorithm"] == "sha256" for r in resources)
    root = hashlib.sha256(b"".join(bytes.fromhex(expected[n]) for n in sorted(expected)))
    assert statement["subject"] == [{"name": "model", "digest": {"sha256": root.hexdigest()}}]
    assert statement["predicate"]["serialization"] == {
        "method": "files", "hash_type": "sha256", "allow_symlinks": False,
        "ignore_paths": [".git", ".gitattributes", ".github", ".gitignore", "model.sig"]}
    assert bundle["verificationMaterial"] == {
        "publicKey": {"hint": hashlib.sha256((keys / "builder.pub").read_bytes()).hexdigest()},
        "tlogEntries": []}
    assert bundle["dsseEnvelope"]["payloadType"] == INTOTO


def test_a_real_tool_signature_also_fits_the_schemas(keys: Path, tmp_path: Path) -> None:
    import jsonschema

    model = make_model(tmp_path / "model")
    real_sign(model, keys / "builder.key")
    bundle = read_json(model / "model.sig")
    jsonschema.Draft202012Validator(read_json(FIXTURES / "oms-bundle.schema.json")).validate(
        bundle)
    jsonschema.Draft202012Validator(read_json(FIXTURES / "oms-statement.schema.json")).validate(
        payload_of(bundle))


def test_sign_model_is_byte_stable(keys: Path, tmp_path: Path) -> None:
    model = make_model(tmp_path / "model")
    sign_model(model, keys / "builder.key")
    first = (model / "model.sig").read_bytes()
    assert sign_model(model, keys / "builder.key", "--force").code == 0
    assert (model / "model.sig").read_bytes() == first
    copy = make_model(tmp_path / "elsewhere" / "model")
    sign_model(copy, keys / "builder.key")
    assert (copy / "model.sig").read_bytes() == first


def test_sign_model_with_ed25519_verifies_with_ours(keys: Path, tmp_path: Path) -> None:
    model = make_model(tmp_path / "model")
    assert sign_model(model, keys / "edwards.key").code == 0
    assert dsse_verifies(read_json(model / "model.sig"), (keys / "edwards.pub").read_bytes())
    assert verify_directory(model, trusting(keys / "edwards.pub")).files == 3


def test_record_oms_signs_the_packaging_products(chain: Chain) -> None:
    (chain.work / "dist" / "model.sig").unlink(missing_ok=True)
    from helpers import PACKAGE, record_step

    result = record_step(chain.work, "package", chain.keys("builder").private,
                         ["model/weights.bin"], ["dist"], PACKAGE, extra=["--force", "--oms"])
    assert result.code == 0, result.output
    assert "dist/model.sig" in result.stdout
    verified = real_verify(chain.work / "dist", chain.keys("builder").public)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    code, report = verify_dist(chain)
    assert code == 0, report
    assert report["oms"][0]["verdict"] == "verified"
    # A second run would attest the first run's signature as a product: refused up front.
    again = record_step(chain.work, "package", chain.keys("builder").private,
                        ["model/weights.bin"], ["dist"], PACKAGE, extra=["--force", "--oms"])
    assert_error(again, 2, "dist/model.sig", "earlier run")


# --- bad input ---------------------------------------------------------------------------------


def resign(signature: Path, key: Path, change: Any) -> None:
    """Rewrite a signature's statement with `change` and sign it again (a well-signed bad one)."""
    statement = payload_of(read_json(signature))
    change(statement)
    payload = json.dumps(statement).encode()
    write_json(signature, sign_bundle(payload, INTOTO, key))


def test_shard_serialization_from_the_real_tool_is_refused_with_a_sentence(
        keys: Path, tmp_path: Path) -> None:
    import model_signing

    model = make_model(tmp_path / "model")
    model_signing.signing.Config().use_elliptic_key_signer(
        private_key=keys / "builder.key").set_hashing_config(
        model_signing.hashing.Config().use_shard_serialization(shard_size=1024)).sign(
        model, tmp_path / "sharded.sig")
    with pytest.raises(InputError, match="serialization method 'shards'"):
        read_oms(tmp_path / "sharded.sig")


def test_unknown_serialization_and_hash_are_refused(keys: Path, tmp_path: Path) -> None:
    model = make_model(tmp_path / "model")
    signature = real_sign(model, keys / "builder.key")
    resign(signature, keys / "builder.key",
           lambda s: s["predicate"]["serialization"].update(method="chunks"))
    with pytest.raises(InputError, match="serialization method 'chunks'"):
        read_oms(signature)
    resign(signature, keys / "builder.key",
           lambda s: s["predicate"]["serialization"].update(method="files", hash_type="md5"))
    with pytest.raises(InputError, match="only sha256"):
        read_oms(signature)


def test_an_inconsistent_root_digest_is_refused(keys: Path, tmp_path: Path) -> None:
    model = make_model(tmp_path / "model")
    signature = real_sign(model, keys / "builder.key")
    resign(signature, keys / "builder.key",
           lambda s: s["predicate"]["resources"].pop())
    with pytest.raises(InputError, match="manifest is inconsistent"):
        read_oms(signature)


def test_an_empty_model_signed_by_the_real_tool_is_refused(keys: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    signature = real_sign(tmp_path / "empty", keys / "builder.key", tmp_path / "empty.sig")
    with pytest.raises(InputError, match="empty model"):
        read_oms(signature)
    assert_error(run(["sign-model", tmp_path / "empty", "--key", keys / "builder.key"]),
                 2, "empty", "no file to sign")


def test_names_with_a_colon_are_refused(keys: Path, tmp_path: Path) -> None:
    model = make_model(tmp_path / "model")
    (model / "weights.bin:0:8").write_bytes(b"12345678")
    assert_error(run(["sign-model", model, "--key", keys / "builder.key"]), 2,
                 "weights.bin:0:8", "':'")
    assert not (model / "model.sig").exists()
    signature = real_sign(model, keys / "builder.key")  # the real tool accepts the name
    with pytest.raises(InputError, match="contains ':'"):
        read_oms(signature)


def test_symlinks_are_refused(keys: Path, tmp_path: Path) -> None:
    model = make_model(tmp_path / "model")
    os.symlink("config.json", model / "alias.json")
    assert_error(run(["sign-model", model, "--key", keys / "builder.key"]), 2,
                 "alias.json", "symbolic link")


def test_a_withdrawn_predicate_and_a_foreign_statement_are_refused(
        keys: Path, tmp_path: Path) -> None:
    model = make_model(tmp_path / "model")
    signature = real_sign(model, keys / "builder.key")
    resign(signature, keys / "builder.key",
           lambda s: s.update(predicateType="https://model_signing/Digests/v0.1"))
    with pytest.raises(InputError, match=r"withdrawn OMS v0\.2 predicate"):
        read_oms(signature)
    resign(signature, keys / "builder.key",
           lambda s: s.update(predicateType="https://slsa.dev/provenance/v1"))
    with pytest.raises(InputError, match="is not an OMS signature"):
        read_oms(signature)


def test_a_tampered_payload_does_not_verify(keys: Path, tmp_path: Path) -> None:
    model = make_model(tmp_path / "model")
    signature = real_sign(model, keys / "builder.key")
    bundle = read_json(signature)
    statement = payload_of(bundle)
    statement["subject"][0]["name"] = "another-model"
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    write_json(signature, bundle)
    with pytest.raises(SignatureError):
        verify_directory(model, trusting(keys / "builder.pub"))


def test_sign_model_bad_input_is_one_sentence(keys: Path, tmp_path: Path) -> None:
    model = make_model(tmp_path / "model")
    assert_error(run(["sign-model", model]), 2, "--key")
    assert_error(run(["sign-model", tmp_path / "missing", "--key", keys / "builder.key"]), 2,
                 "missing")
    assert_error(run(["sign-model", model, "--key", keys / "builder.pub"]), 2,
                 "builder.pub", "not a PEM private key")
    assert sign_model(model, keys / "builder.key").code == 0
    assert_error(run(["sign-model", model, "--key", keys / "builder.key"]), 2,
                 "model.sig", "already exists")
