"""Hugging Face cache snapshots and `verify-model hf://ORG/NAME@REV`.

The cache is laid out by huggingface_hub's own code (its repository folder name, pointer paths,
relative links and refs) and read back by it (`try_to_load_from_cache`) before anything of ours
looks at it; blobs are named as the library names them from the Hub's ETag: the sha256 of an LFS
file, the git blob sha1 of a small one. The publisher's attestations travel in the repository's
`.attestations/` folder. Digests compared here are computed with hashlib.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import Chain, assert_no_traceback, payload_of, read_json, run, run_executable
from hub_cache import COMMIT, blob_name, git_blob_sha1, lay_out_cache

hub = pytest.importorskip("huggingface_hub")

REPO = "acme/tiny-model"
LFS = {"model.bin"}  # stored in LFS, so its blob is named by sha256


def lay_out(cache: Path, files: dict[str, bytes]) -> Path:
    return lay_out_cache(cache, REPO, files)


@pytest.fixture
def published(chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return publish(chain, tmp_path, monkeypatch)


def publish(chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            names: tuple[str, ...] = ("model.bin", "config.json")) -> Path:
    """The chain's dist/ published on the Hub with its attestations, then downloaded."""
    files = {name: (chain.work / "dist" / name).read_bytes() for name in names}
    files[".gitattributes"] = b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    for attestation in sorted(chain.attestations.glob("*.json")):
        files[f".attestations/{attestation.name}"] = attestation.read_bytes()
    cache = tmp_path / "hf-cache"
    snapshot = lay_out(cache, files)
    assert hub.try_to_load_from_cache(REPO, "config.json", cache_dir=cache) == str(
        snapshot / "config.json")
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    data = chain.policy_data()
    data["ignore"] = [".gitattributes"]  # the Hub adds it to every repository
    chain.policy.write_text(json.dumps(data), encoding="utf-8")
    shutil.rmtree(chain.attestations)  # nothing but the download: found in the snapshot
    return snapshot


def verify(chain: Chain, artifact: str | Path, *extra: str | Path) -> tuple[int, Any]:
    result = run([artifact, "--json", *extra], cwd=chain.work, program="verify-model")
    assert_no_traceback(result)
    return result.code, json.loads(result.stdout)


def attested_dist(chain: Chain, snapshot: Path) -> dict[str, str]:
    bundle = read_json(snapshot / ".attestations" / "package.intoto.json")
    return {s["name"]: s["digest"] for s in payload_of(bundle)["subject"]}["dist"]


def test_hf_reference_verifies_the_cached_snapshot_with_the_attestations_it_carries(
        chain: Chain, published: Path) -> None:
    code, report = verify(chain, f"hf://{REPO}@main")
    assert code == 0, report["problems"]
    assert report["artifact"] == str(published)
    assert report["digest"] == attested_dist(chain, published)
    by = {item["file"]: item["by"] for item in report["ignored"]}
    assert by == {".gitattributes": "policy", ".attestations/package.intoto.json": "hub",
                  ".attestations/prepare.intoto.json": "hub",
                  ".attestations/train.intoto.json": "hub"}
    assert verify(chain, f"hf://{REPO}@{COMMIT}")[0] == 0


def test_the_snapshot_folder_given_as_a_path_verifies_and_its_vsa_gates_it(
        chain: Chain, published: Path) -> None:
    vsa = chain.work / "model.vsa.json"
    code, report = verify(chain, published, "--vsa", vsa, "--key", chain.keys("auditor").private)
    assert code == 0, report["problems"]
    result = run(["verify-vsa", vsa, "--artifact", published, "--key",
                  chain.keys("auditor").public], cwd=chain.work)
    assert result.code == 0, result.output


def test_a_link_leaving_the_repository_blobs_is_refused_naming_it(
        chain: Chain, published: Path, tmp_path: Path) -> None:
    # Same bytes as the attested file, so only the link rule can stop it.
    outside = tmp_path / "config.json"
    outside.write_bytes((published / "config.json").read_bytes())
    (published / "config.json").unlink()
    (published / "config.json").symlink_to(outside)
    result = run([published], cwd=chain.work, program="verify-model")
    assert result.code == 2, result.output
    assert "config.json: links to" in result.stderr and "outside" in result.stderr
    assert "Traceback" not in result.output
    # A link into another repository's blobs is refused alike.
    other = published.parents[2] / "models--evil--model" / "blobs"
    other.mkdir(parents=True)
    shutil.copy(outside, other / git_blob_sha1(outside.read_bytes()))
    (published / "config.json").unlink()
    (published / "config.json").symlink_to(other / git_blob_sha1(outside.read_bytes()))
    result = run([published], cwd=chain.work, program="verify-model")
    assert result.code == 2 and "outside" in result.stderr, result.output


@pytest.mark.parametrize("name", ["model.bin", "config.json"])
def test_a_blob_stored_under_a_digest_it_does_not_have_fails_naming_it(
        chain: Chain, published: Path, name: str) -> None:
    content = (published / name).read_bytes()
    misnamed = published.parents[1] / "blobs" / blob_name(name, content + b"x")
    misnamed.write_bytes(content)  # the attested bytes, under another digest's name
    (published / name).unlink()
    (published / name).symlink_to(os.path.relpath(misnamed, published))
    code, report = verify(chain, published)
    assert code == 1
    kind = "sha256" if name in LFS else "git blob sha1"
    assert any(f"{name}: its blob" in p["message"] and kind in p["message"]
               and "altered" in p["message"] for p in report["problems"]), report["problems"]


def test_an_uncached_reference_is_one_sentence(chain: Chain, published: Path) -> None:
    for reference in (f"hf://{REPO}@v9", "hf://acme/absent@main", "hf://not a repo"):
        result = run([reference], cwd=chain.work, program="verify-model")
        assert result.code == 2, result.output
        assert "Traceback" not in result.output and reference in result.stderr


def test_the_installed_command_resolves_offline_from_the_cache_in_the_environment(
        chain: Chain, published: Path) -> None:
    env = {**os.environ, "HF_HUB_CACHE": str(published.parents[2]), "HF_HUB_OFFLINE": "1",
           "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens: any request would fail
    result = run_executable([f"hf://{REPO}@main"], cwd=chain.work, env=env,
                            program="verify-model")
    assert result.code == 0, result.output


def test_a_downloaded_snapshot_carrying_an_oms_signature_verifies_with_it(
        chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_signing = pytest.importorskip("model_signing")
    dist = chain.work / "dist"
    model_signing.signing.Config().use_elliptic_key_signer(
        private_key=chain.keys("builder").private).set_hashing_config(
        model_signing.hashing.Config().set_ignored_paths(
            paths=[Path("model.sig")], ignore_git_paths=True)).sign(dist, dist / "model.sig")
    snapshot = publish(chain, tmp_path, monkeypatch, ("model.bin", "config.json", "model.sig"))
    code, report = verify(chain, f"hf://{REPO}@main")
    assert code == 0, report["problems"]
    [evidence] = report["oms"]
    assert evidence["verdict"] == "verified" and evidence["signed_by"] == ["builder"]
    assert report["digest"] == attested_dist(chain, snapshot)


def test_an_attestation_link_leaving_the_blobs_is_refused_before_it_is_read(
        chain: Chain, published: Path, tmp_path: Path) -> None:
    planted = published / ".attestations" / "package.intoto.json"
    outside = tmp_path / "package.intoto.json"
    outside.write_bytes(planted.read_bytes())
    planted.unlink()
    planted.symlink_to(outside)
    result = run([f"hf://{REPO}@main"], cwd=chain.work, program="verify-model")
    assert result.code == 2, result.output
    assert "package.intoto.json: links to" in result.stderr and "outside" in result.stderr
