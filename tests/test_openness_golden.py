"""The examples' openness reports, against their golden copies (examples/tiny-model/
openness.txt and examples/hf-sharded/openness.txt, shown in the README).

Each example's steps are recorded here with their declarations (for the tiny model the same as
demo.sh), rebuilt by two independent rebuilders, and `openness` under the example's quorum
policy must print the golden text byte for byte. The Hub-shaped example's corpus carries no
declared licence, as a Hub model's training data often does not: the report names the gap.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml
from helpers import make_keys, run, write_policy

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "tiny-model"
FAST = ["--sandbox", "none", "--no-trace"]
STEPS = [
    ("prepare-data", ["data/iris.csv", "prepare.py"], ["build/data"],
     ["--component", "training-data=data/iris.csv",
      "--component", "data-processing-code=prepare.py",
      "--material-license", "data/iris.csv=CC-BY-4.0",
      "--material-license", "prepare.py=Apache-2.0",
      "--record-digests", "build/data/train.csv"], "prepare.py"),
    ("train", ["build/data/train.csv", "train.py"],
     ["build/weights.safetensors", "build/train-log.json"],
     ["--env", "OMP_NUM_THREADS=1", "--component", "training-code=train.py",
      "--component", "weights=build/weights.safetensors",
      "--material-license", "train.py=Apache-2.0",
      "--material-license", "build/weights.safetensors=Apache-2.0"], "train.py"),
    ("package", ["build/weights.safetensors", "build/data/stats.json", "package.py"],
     ["build/model"],
     ["--component", "model-architecture=build/model/config.json",
      "--material-license", "build/model/config.json=Apache-2.0"], "package.py"),
]


HF_STEPS = [
    ("prepare", ["data/corpus.txt", "prepare.py"], ["build/tokenizer", "build/data"],
     ["--component", "training-data=data/corpus.txt",
      "--component", "data-processing-code=prepare.py",
      "--component", "tokenizer=build/tokenizer/tokenizer.json",
      "--material-license", "prepare.py=Apache-2.0",
      "--material-license", "build/tokenizer/tokenizer.json=Apache-2.0",
      "--record-digests", "data/corpus.txt"], "prepare.py"),
    ("train", ["build/tokenizer", "build/data", "train.py"],
     ["build/weights.safetensors", "build/metrics.json"],
     ["--env", "OMP_NUM_THREADS=1", "--component", "training-code=train.py",
      "--material-license", "train.py=Apache-2.0"], "train.py"),
    ("package", ["build/weights.safetensors", "build/tokenizer", "package.py"], ["build/model"],
     ["--component", "weights=build/model",
      "--component", "model-architecture=build/model/config.json",
      "--material-license", "build/model=Apache-2.0",
      "--material-license", "build/model/config.json=Apache-2.0"], "package.py"),
]


def openness_of(example: Path, policy_file: Path, steps: list, artifact: str,
                work: Path) -> str:
    """Record the example's steps with their declarations, rebuild them twice, and return
    `openness` under the example's policy (its keys made here)."""
    work.mkdir()
    shutil.copytree(example / "data", work / "data")
    for script in example.glob("*.py"):
        shutil.copy2(script, work / script.name)
    policy = yaml.safe_load(policy_file.read_text())
    for who in policy["signers"]:
        make_keys(work / "keys", who)
    for step, materials, products, extra, script in steps:
        args = ["record", "--step", step, "--key", "keys/builder.key", *FAST, *extra]
        for material in materials:
            args += ["--material", material]
        for product in products:
            args += ["--product", product]
        result = run([*args, "--", sys.executable, script], cwd=work)
        assert result.code == 0, result.output
    for who in ("rebuilder-a", "rebuilder-b"):
        result = run(["rebuild", "attestations", "--trust-key", "keys/builder.pub", "--source",
                      ".", "--sandbox", "none", "--key", f"keys/{who}.key", "--out",
                      "rebuilds"], cwd=work)
        assert result.code == 0, result.output
    policy["signers"] = {name: {"key": f"keys/{name}.pub"} for name in policy["signers"]}
    write_policy(work / "policy.yaml", policy)
    result = run(["openness", artifact, "--policy", "policy.yaml", "--attestations",
                  "attestations", "--attestations", "rebuilds"], cwd=work)
    assert result.code == 0, result.output
    return result.stdout


def test_tiny_model_openness_matches_the_golden_copy(tmp_path: Path) -> None:
    report = openness_of(EXAMPLE, REPO / "policies" / "tiny-model-rebuilt.yaml", STEPS,
                         "build/model/model.safetensors", tmp_path / "tiny-model")
    assert report == (EXAMPLE / "openness.txt").read_text(encoding="utf-8")


def test_hub_shaped_example_openness_matches_the_golden_copy(tmp_path: Path) -> None:
    example = REPO / "examples" / "hf-sharded"
    if not (example / "demo.sh").is_file() or not (REPO / "policies" / "hf-sharded.yaml").is_file():
        pytest.skip("examples/hf-sharded (the Hub-shaped example) is not in this tree")
    report = openness_of(example, REPO / "policies" / "hf-sharded.yaml", HF_STEPS,
                         "build/model", tmp_path / "hf-sharded")
    assert report == (example / "openness.txt").read_text(encoding="utf-8")
