"""The hf-sharded example: a Hub-shaped build, recorded, rebuilt by two rebuilders, verified.

The example and its policies are copied into a git repository under tmp_path (rebuild takes
the recorded commit's files), the four steps are recorded with the real CLI (sandboxed and
traced where bubblewrap and strace are installed, as for a user), both rebuilders rebuild
everything, and the model directory is verified as built and as downloaded.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helpers import (
    BIN,
    CliResult,
    assert_no_traceback,
    dsse_verifies,
    make_keys,
    read_json,
    run,
    write_policy,
)
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hf-sharded"
HUB_FILES = {
    "config.json", "generation_config.json", "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors", "model.safetensors.index.json",
    "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
}
STEPS = ["prepare", "train", "package", "convert"]
# The example's steps run `python`: the interpreter running the tests, with its packages.
ENV = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
gguf = pytest.importorskip("gguf", reason="the convert step needs the gguf package")


@dataclass(frozen=True)
class Built:
    root: Path  # the repository: examples/hf-sharded and policies
    example: Path

    def cli(self, *args: Any, program: str = "model-verifier") -> CliResult:
        return run([str(a) for a in args], cwd=self.example, env=ENV, program=program)

    def verify(self, artifact: str, *extra: str, policy: str = "hf-sharded") -> CliResult:
        return self.cli(artifact, "--policy", f"../../policies/{policy}.yaml",
                        "--attestations", "attestations", "--attestations", "rebuilds", *extra,
                        program="verify-model")


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org",
                    "-c", "commit.gpgsign=false", *args], cwd=cwd, check=True,
                   capture_output=True)


def record(built: Built, step: str, materials: list[str], products: list[str],
           *extra: str) -> None:
    args = ["record", "--step", step, "--key", "keys/builder.key"]
    for material in materials:
        args += ["--material", material]
    for product in products:
        args += ["--product", product]
    result = built.cli(*args, *extra, "--", "python", f"{step}.py")
    assert result.code == 0, result.output


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("hub")
    example = root / "examples" / "hf-sharded"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns(
        "build", "attestations", "keys", "rebuilds", "downloaded"))
    (root / "policies").mkdir()
    for policy in ("hf-sharded.yaml", "hf-sharded-gguf.yaml", "hf-sharded-hub.yaml"):
        shutil.copy(ROOT / "policies" / policy, root / "policies" / policy)
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "example")
    built = Built(root, example)
    for who in ("builder", "rebuilder-a", "rebuilder-b"):
        make_keys(example / "keys", who)
    record(built, "prepare", ["data/corpus.txt", "prepare.py"], ["build/tokenizer", "build/data"])
    record(built, "train", ["build/tokenizer", "build/data", "train.py"],
           ["build/weights.safetensors", "build/metrics.json"], "--env", "OMP_NUM_THREADS=1")
    record(built, "package", ["build/weights.safetensors", "build/tokenizer", "package.py"],
           ["build/model"])
    record(built, "convert", ["build/model", "convert.py"], ["build/gguf"])
    for who in ("rebuilder-a", "rebuilder-b"):
        result = built.cli("rebuild", "attestations", "--trust-key", "keys/builder.pub",
                           "--source", ".", "--key", f"keys/{who}.key", "--out",
                           "rebuilds")
        assert result.code == 0, result.output
    return built


def statement(path: Path) -> dict[str, Any]:
    return json.loads(base64.b64decode(read_json(path)["dsseEnvelope"]["payload"]))


def test_the_model_directory_is_hub_shaped(built: Built) -> None:
    model = built.example / "build" / "model"
    assert {p.name for p in model.iterdir()} == HUB_FILES
    index = read_json(model / "model.safetensors.index.json")
    shards = {name: load_file(model / name) for name in set(index["weight_map"].values())}
    assert len(shards) == 2
    for tensor, shard in index["weight_map"].items():
        assert tensor in shards[shard]
    assert sum(len(s) for s in shards.values()) == len(index["weight_map"])
    assert index["metadata"]["total_size"] == sum(
        t.nbytes for s in shards.values() for t in s.values())
    config = read_json(model / "config.json")
    weights = load_file(built.example / "build" / "weights.safetensors")
    assert config["vocab_size"] == weights["model.embed_tokens.weight"].shape[0]
    metrics = read_json(built.example / "build" / "metrics.json")
    assert metrics["last_loss"] < metrics["first_loss"] - 1  # it learned


def test_the_tokenizer_is_a_real_one(built: Built) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer.from_file(
        str(built.example / "build" / "model" / "tokenizer.json"))
    line = (EXAMPLE / "data" / "corpus.txt").read_text(encoding="utf-8").splitlines()[0]
    ids = tokenizer.encode(line).ids
    assert tokenizer.decode(ids) == line
    assert len(ids) < len(line.encode()) * 0.8  # trained merges, not one token per byte
    tokens = np.load(built.example / "build" / "data" / "tokens.npy")
    assert tokens[:len(ids)].tolist() == ids


def test_two_rebuilders_reproduce_every_step_bit_for_bit(built: Built) -> None:
    for who in ("rebuilder-a", "rebuilder-b"):
        for step in STEPS:
            rebuilt = statement(built.example / "rebuilds" / who / f"{step}.rebuild.intoto.json")
            assert rebuilt["predicate"]["reproduced"] is True, (who, step)
            assert {r["verdict"] for r in rebuilt["predicate"]["results"]} == {"IDENTICAL"}
    convert = statement(built.example / "attestations" / "convert.intoto.json")
    names = {s["name"] for s in convert["subject"]}
    assert {"build/gguf/model-f16.gguf", "build/gguf/model-q8_0.gguf"} <= names


def test_the_gguf_files_are_the_conversion_of_the_shards(built: Built) -> None:
    from verifier.diff import gguf as reader

    model = built.example / "build" / "model"
    shards = {}
    for shard in sorted(model.glob("*.safetensors")):
        shards.update(load_file(shard))
    f16 = reader.read(built.example / "build" / "gguf" / "model-f16.gguf")
    q8 = reader.read(built.example / "build" / "gguf" / "model-q8_0.gguf")
    data = (built.example / "build" / "gguf" / "model-f16.gguf").read_bytes()
    embedding = f16.tensors["token_embd.weight"]
    assert embedding.type == "F16"
    values = np.frombuffer(data[embedding.begin:embedding.end], np.float16).reshape(
        embedding.shape)
    assert np.array_equal(values, shards["model.embed_tokens.weight"].astype(np.float16))
    assert q8.tensors["token_embd.weight"].type == "Q8_0"
    assert q8.tensors["output_norm.weight"].type == "F32"
    assert json.loads(q8.metadata["general.file_type"].text) == 7


def test_diff_of_the_two_conversions_names_the_quantized_tensors(built: Built) -> None:
    result = built.cli("diff", "build/gguf/model-f16.gguf", "build/gguf/model-q8_0.gguf",
                       "--json")
    assert result.code == 1, result.output
    report = json.loads(result.stdout)
    assert report["kind"] == "gguf" and report["metadata_changed"] == ["general.file_type"]
    statuses = {t["name"]: (t["status"], t["dtype_a"], t["dtype_b"]) for t in report["tensors"]}
    assert statuses["token_embd.weight"] == ("dtype-differs", "F16", "Q8_0")
    assert statuses["output_norm.weight"] == ("equal", "F32", "F32")


def test_verify_the_directory_and_the_gguf_with_two_rebuilders(built: Built) -> None:
    result = built.verify("build/model")
    assert result.code == 0, result.output
    assert "rebuilds of package: 2/2 matching" in result.stdout
    result = built.verify("build/gguf/model-q8_0.gguf", policy="hf-sharded-gguf")
    assert result.code == 0, result.output
    assert "rebuilds of convert: 2/2 matching" in result.stdout


def download(built: Built, name: str, clutter: bool) -> str:
    """A copy of the model directory as the Hub client leaves it (with clutter: .gitattributes,
    the model card and .cache/huggingface/download/*.metadata)."""
    target = built.example / "downloaded" / name
    shutil.copytree(built.example / "build" / "model", target)
    if clutter:
        (target / ".gitattributes").write_text(
            "*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
        (target / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny-mlp\n")
        cache = target / ".cache" / "huggingface" / "download"
        cache.mkdir(parents=True)
        for file in sorted(target.glob("*.*")):
            if file.is_file() and file.name not in {".gitattributes", "README.md"}:
                digest = hashlib.sha256(file.read_bytes()).hexdigest()
                (cache / f"{file.name}.metadata").write_text(
                    f"0123456789abcdef\n{digest}\n1700000000.0\n")
    return f"downloaded/{name}"


def test_verify_a_clean_download(built: Built) -> None:
    result = built.verify(download(built, "clean", clutter=False))
    assert result.code == 0, result.output
    assert result.stdout.startswith("PASS")


def test_a_download_with_hub_clutter_is_never_accepted_silently(built: Built) -> None:
    result = built.verify(download(built, "cluttered", clutter=True))
    assert_no_traceback(result)
    assert result.code == 1, result.output
    assert ".gitattributes" in result.stdout and "README.md" in result.stdout


def test_a_download_with_hub_clutter_verifies_with_the_ignores_listed(built: Built) -> None:
    artifact = download(built, "ignored", clutter=True)
    result = built.verify(artifact, "--ignore", ".gitattributes", "--ignore", "README.md",
                          "--ignore", ".cache/**")
    assert result.code == 0, result.output
    # Ignoring is explicit and visible: every ignored file present is listed.
    for name in (".gitattributes", "README.md",
                 ".cache/huggingface/download/config.json.metadata"):
        assert name in result.stdout
    # The tensors themselves are never ignorable: a changed shard still fails.
    shard = built.example / artifact / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-4] + b"\0\0\0\0")
    result = built.verify(artifact, "--ignore", ".gitattributes", "--ignore", "README.md",
                          "--ignore", ".cache/**")
    assert result.code == 1, result.output


def test_a_summary_of_a_download_gates_the_same_download(built: Built) -> None:
    """The VSA of a cluttered download records how its digest was made; verify-vsa hashes the
    download the same way, and a pattern given only to that run must be accepted by name."""
    artifact = download(built, "gated", clutter=True)
    policy = yaml.safe_load((built.root / "policies" / "hf-sharded.yaml").read_text())
    policy["ignore"] = [".gitattributes", ".cache/**"]
    write_policy(built.root / "policies" / "gate-policy.yaml", policy)
    if not (built.example / "keys" / "verifier.key").exists():
        make_keys(built.example / "keys", "verifier")
    result = built.cli(artifact, "--policy", "../../policies/gate-policy.yaml", "--attestations",
                       "attestations", "--attestations", "rebuilds", "--ignore", "README.md",
                       "--vsa", "gated.vsa.json", "--key", "keys/verifier.key",
                       program="verify-model")
    assert result.code == 0, result.output
    bundle = read_json(built.example / "gated.vsa.json")
    assert dsse_verifies(bundle, (built.example / "keys" / "verifier.pub").read_bytes())
    record = statement(built.example / "gated.vsa.json")["predicate"][
        "https://model-verifier.dev/vsa/ignored/v1"]
    cached = sorted(f".cache/huggingface/download/{name}.metadata" for name in HUB_FILES)
    assert record == {"policyPatterns": [".cache/**", ".gitattributes"],
                      "runPatterns": ["README.md"],
                      "files": sorted([*cached, ".gitattributes", "README.md"])}
    gate = ["verify-vsa", "gated.vsa.json", "--artifact", artifact, "--key", "keys/verifier.pub",
            "--policy", "../../policies/gate-policy.yaml"]
    # README.md was left out by the run alone, not by the policy: not accepted unnamed.
    unaccepted = built.cli(*gate)
    assert unaccepted.code == 1, unaccepted.output
    assert "--ignore 'README.md'" in unaccepted.stdout
    accepted = built.cli(*gate, "--ignore", "README.md", "--json")
    assert accepted.code == 0, accepted.output
    report = json.loads(accepted.stdout)
    assert report["verdict"] == "PASS" and report["ignored"] == record["files"]
    # A file no recorded pattern matches changes the digest: the summary is not about it.
    (built.example / artifact / "notes.txt").write_text("added after the gate\n")
    added = built.cli(*gate, "--ignore", "README.md")
    assert added.code == 1 and "no subject has its digest" in added.stdout, added.output


def test_a_tampered_shard_fails(built: Built) -> None:
    artifact = download(built, "tampered", clutter=False)
    shard = built.example / artifact / "model-00001-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    result = built.verify(artifact)
    assert_no_traceback(result)
    assert result.code == 1, result.output
    assert "model-00001-of-00002.safetensors" in result.stdout


def test_without_the_tokenizers_library_the_byte_tokenizer_is_used(tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(EXAMPLE / "data", work / "data")
    shutil.copy(EXAMPLE / "prepare.py", work)
    subprocess.run([sys.executable, "prepare.py"], cwd=work, check=True, capture_output=True,
                   env={**os.environ, "HF_SHARDED_TOKENIZER": "bytes"})
    corpus = (EXAMPLE / "data" / "corpus.txt").read_text(encoding="utf-8").splitlines()
    tokens = np.load(work / "build" / "data" / "tokens.npy").tolist()
    expected = [t for line in corpus for t in [*line.encode(), 256]]
    assert tokens == expected
    document = read_json(work / "build" / "tokenizer" / "tokenizer.json")
    assert len(document["model"]["vocab"]) == 256 and document["model"]["merges"] == []
    try:
        import tokenizers
    except ImportError:
        return
    # The same file format: the real library loads it and encodes byte by byte.
    tokenizer = tokenizers.Tokenizer.from_file(str(work / "build" / "tokenizer" /
                                                   "tokenizer.json"))
    assert tokenizer.encode(corpus[0]).ids == list(corpus[0].encode())


def test_each_step_records_its_own_interpreter_and_packages(built: Built) -> None:
    for step in STEPS:
        recorded = statement(built.example / "attestations" / f"{step}.intoto.json")
        environment = recorded["predicate"]["buildDefinition"]["internalParameters"][
            "environment"]
        assert environment["python"]["source"] == "argv"
        assert environment["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
        assert {"numpy", "safetensors", "gguf"} <= environment["packages"].keys()
        if importlib.util.find_spec("torch") is None:
            assert environment["torch"] is None


def test_published_on_the_hub_and_verified_from_the_cache_by_reference(
        built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's "Publishing on the Hub": the model with an OMS model.sig, a model card and
    the attestations and rebuilds under .attestations/, downloaded into the Hugging Face cache
    and verified offline as hf://ORG/NAME@REV with policies/hf-sharded-hub.yaml."""
    hub = pytest.importorskip("huggingface_hub")
    from hub_cache import COMMIT, files_under, lay_out_cache

    model = tmp_path / "model"
    shutil.copytree(built.example / "build" / "model", model)
    assert built.cli("sign-model", model, "--key", "keys/builder.key").code == 0
    files = {**files_under(model), "README.md": b"---\nlicense: mit\n---\n# tiny-gpt\n",
             ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
             **files_under(built.example / "attestations", ".attestations/"),
             **files_under(built.example / "rebuilds", ".attestations/rebuilds/")}
    cache = tmp_path / "hf-cache"
    lay_out_cache(cache, "acme/tiny-gpt", files)
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(cache))
    # Run from elsewhere: the attestations can only come from the snapshot.
    result = run([f"hf://acme/tiny-gpt@{COMMIT}", "--policy",
                  built.root / "policies" / "hf-sharded-hub.yaml", "--json"], cwd=tmp_path,
                 env=ENV, program="verify-model")
    assert_no_traceback(result)
    report = json.loads(result.stdout)
    assert result.code == 0, report["problems"]
    assert report["oms"][0]["verdict"] == "verified"
    assert all(len(q["counted"]) == 2 for q in report["rebuilds"]), report["rebuilds"]
    attested = statement(built.example / "attestations" / "package.intoto.json")
    assert report["digest"] == {s["name"]: s["digest"] for s in attested["subject"]}[
        "build/model"]
