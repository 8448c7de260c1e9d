"""One rule for whether a `model.sig` is part of a directory, in record, verify-model, the VSA and
verify-vsa: an OMS signature at the top of a directory is about it, never one of its files; and
the ignore patterns that shape a directory's digest shape its OMS check too.

Signatures are made by the real OpenSSF `model_signing` library, Hub download files by
huggingface_hub's own local-folder code, and the digests compared here are computed with hashlib.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    PACKAGE,
    Chain,
    assert_no_traceback,
    payload_of,
    read_json,
    record_step,
    run,
    write_policy,
)

from verifier.formats.digest import Hasher

model_signing = pytest.importorskip("model_signing")


def real_sign(model: Path, private_key: Path) -> Path:
    """Sign as `model_signing sign key MODEL` does: model.sig inside, git paths ignored."""
    target = model / "model.sig"
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key
    ).set_hashing_config(model_signing.hashing.Config().set_ignored_paths(
        paths=[Path("model.sig")], ignore_git_paths=True)).sign(model, target)
    return target


def real_verify(model: Path, public_key: Path, ignored: list[str]) -> None:
    """The OpenSSF library's verdict on the same directory (raises when it fails)."""
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key
    ).set_hashing_config(model_signing.hashing.Config().set_ignored_paths(
        paths=[Path(p) for p in ignored], ignore_git_paths=True)
    ).verify(model, model / "model.sig")


def hub_download_files(directory: Path, filename: str) -> list[str]:
    """What `hf_hub_download(..., local_dir=directory)` leaves beside a file, written by
    huggingface_hub's own code: .cache/huggingface/.gitignore and the file's metadata."""
    from huggingface_hub._local_folder import write_download_metadata

    write_download_metadata(directory, filename, "0" * 40, "etag-of-" + filename)
    return sorted(p.relative_to(directory).as_posix()
                  for p in (directory / ".cache").rglob("*") if p.is_file())


def dir_hash_by_hand(directory: Path, leave_out: tuple[str, ...] = ()) -> str:
    lines = sorted(
        (p.relative_to(directory).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in directory.rglob("*") if p.is_file()
        and p.relative_to(directory).as_posix() not in leave_out)
    return hashlib.sha256("".join(f"{d}  {n}\n" for n, d in lines).encode()).hexdigest()


def verify_dist(chain: Chain, *extra: str | Path) -> tuple[int, dict[str, Any]]:
    result = run(["dist", "--json", *extra], cwd=chain.work, program="verify-model")
    assert_no_traceback(result)
    return result.code, json.loads(result.stdout)


def verify_vsa(chain: Chain, vsa: Path, *extra: str) -> Any:
    result = run(["verify-vsa", vsa, "--artifact", "dist", "--key",
                  chain.keys("auditor").public, "--json", *extra], cwd=chain.work)
    assert_no_traceback(result)
    return result


# --- item 1a: the ignore patterns apply to the OMS check --------------------------------------


def test_a_hub_download_with_a_model_sig_passes_under_the_policy_ignore_list(
        chain: Chain) -> None:
    dist = chain.work / "dist"
    real_sign(dist, chain.keys("builder").private)
    added = hub_download_files(dist, "model.bin")
    assert ".cache/huggingface/.gitignore" in added
    real_verify(dist, chain.keys("builder").public, [".cache"])  # the OpenSSF tool passes it
    data = chain.policy_data()
    data["ignore"] = [".cache/huggingface/**"]
    write_policy(chain.policy, data)
    code, report = verify_dist(chain)
    assert code == 0, report["problems"]
    [evidence] = report["oms"]
    assert evidence["verdict"] == "verified" and evidence["signed_by"] == ["builder"]
    assert evidence["extra"] == [] and evidence["files"] == 2
    assert sorted(i["file"] for i in report["ignored"]) == added


def test_run_ignores_apply_to_the_oms_check_and_a_file_they_miss_still_fails(
        chain: Chain) -> None:
    dist = chain.work / "dist"
    real_sign(dist, chain.keys("builder").private)
    hub_download_files(dist, "model.bin")
    code, report = verify_dist(chain, "--ignore", ".cache/**")
    assert code == 0, report["problems"]
    assert report["oms"][0]["verdict"] == "verified"
    # A file the patterns do not cover is still one the signer never signed.
    (dist / "loader.py").write_text("import os\n", encoding="utf-8")
    code, report = verify_dist(chain, "--ignore", ".cache/**")
    assert code == 1
    assert report["oms"][0]["extra"] == ["loader.py"]


# --- item 1b: a product directory that already holds a model.sig records and verifies -------


def test_a_packaging_step_whose_product_holds_a_model_sig_records_and_verifies(
        chain: Chain, tmp_path: Path) -> None:
    dist = chain.work / "dist"
    shutil.rmtree(dist)
    # The model as a registry that signs with OMS ships it, signed by someone the policy does
    # not name; the packaging step writes its files beside that model.sig.
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    (upstream / "model.bin").write_bytes((chain.work / "model" / "weights.bin").read_bytes())
    (upstream / "config.json").write_text('{"layers": 1}', encoding="utf-8")
    real_sign(upstream, chain.keys("outsider").private)
    dist.mkdir()
    shutil.copy(upstream / "model.sig", dist / "model.sig")
    result = record_step(chain.work, "package", chain.keys("builder").private,
                         ["model/weights.bin"], ["dist"], PACKAGE, extra=["--force"])
    assert result.code == 0, result.output
    subjects = {s["name"]: s["digest"] for s in payload_of(read_json(
        chain.attestation("package")))["subject"]}
    assert "dist/model.sig" not in subjects
    assert subjects["dist"] == {"dirHash": dir_hash_by_hand(dist, ("model.sig",))}

    vsa = tmp_path / "dist.vsa.json"
    code, report = verify_dist(chain, "--vsa", vsa, "--key", chain.keys("auditor").private)
    assert code == 0, report["problems"]
    assert report["oms"][0]["verdict"] == "unattributed"
    assert verify_vsa(chain, vsa).code == 0


# --- issue 20 (low): verify-vsa agrees with verify-model about a model.sig --------------------


@pytest.fixture
def signed_and_summarised(chain: Chain, tmp_path: Path) -> Path:
    real_sign(chain.work / "dist", chain.keys("builder").private)
    vsa = tmp_path / "dist.vsa.json"
    code, report = verify_dist(chain, "--vsa", vsa, "--key", chain.keys("auditor").private)
    assert code == 0, report["problems"]
    assert report["digest"] == {"dirHash": dir_hash_by_hand(chain.work / "dist",
                                                            ("model.sig",))}
    return vsa


def test_verify_vsa_passes_the_directory_with_a_model_sig_that_verify_model_passed(
        chain: Chain, signed_and_summarised: Path) -> None:
    result = verify_vsa(chain, signed_and_summarised)
    assert result.code == 0, result.output


def test_verify_vsa_still_sees_a_changed_file_or_a_model_sig_that_is_no_signature(
        chain: Chain, signed_and_summarised: Path) -> None:
    dist = chain.work / "dist"
    (dist / "model.sig").write_text("a pickle could hide here\n", encoding="utf-8")
    assert verify_vsa(chain, signed_and_summarised).code == 1
    real_sign(dist, chain.keys("outsider").private)  # any OMS signature is left out...
    assert verify_vsa(chain, signed_and_summarised).code == 0
    (dist / "config.json").write_text('{"layers": 2}', encoding="utf-8")  # ...the files never
    assert verify_vsa(chain, signed_and_summarised).code == 1


def test_the_rule_is_decided_by_the_bytes_in_every_hash_of_a_directory(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\x00" * 64)
    (model / "model.sig").write_text("{}", encoding="utf-8")
    kept = Hasher().digest_paths([model])[0]
    assert kept.signature is None and "model.sig" in kept.files
    assert kept.dir_hash == dir_hash_by_hand(model)


def sign_by_shards(model: Path, private_key: Path) -> None:
    """model_signing's shard serialization, which this tool cannot check."""
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key
    ).set_hashing_config(model_signing.hashing.Config().use_shard_serialization(
    ).set_ignored_paths(paths=[Path("model.sig")], ignore_git_paths=True)
    ).sign(model, model / "model.sig")


def test_a_signature_this_tool_cannot_check_counts_against_the_model_only_from_a_trusted_signer(
        chain: Chain) -> None:
    dist = chain.work / "dist"
    sign_by_shards(dist, chain.keys("outsider").private)
    code, report = verify_dist(chain)
    assert code == 0, report["problems"]
    assert any("signed by no signer the policy names" in n and "'shards'" in n
               for n in report["notes"]), report["notes"]
    text = run(["dist"], cwd=chain.work, program="verify-model")
    assert text.code == 0 and "signed by no signer the policy names" in text.stdout, text.output
    sign_by_shards(dist, chain.keys("builder").private)
    code, report = verify_dist(chain)
    assert code == 1
    assert any("'shards'" in p["message"] for p in report["problems"]), report["problems"]
