"""examples/torch-mlp: a PyTorch training step recorded, rebuilt twice and verified.

Runs the README's commands (with this interpreter for `python`) in a copy of the example.
PyTorch is optional: without it the test says so and skips.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
from helpers import dsse_verifies, make_keys, payload_of, read_json, run

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="PyTorch is not installed (it is optional; pip install torch to run this example)",
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "torch-mlp"
TRAIN_ENV = ["--env", "OMP_NUM_THREADS=1", "--env", "CUBLAS_WORKSPACE_CONFIG=:4096:8"]


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("torch-mlp") / "torch-mlp"
    work.mkdir()
    for name in ("make_data.py", "train.py", "policy.yaml"):
        shutil.copy(EXAMPLE / name, work / name)
    for who in ("builder", "rebuilder-a", "rebuilder-b"):
        make_keys(work / "keys", who)
    steps = [
        ["--step", "make-data", "--material", "make_data.py", "--product", "build/data",
         "--", sys.executable, "make_data.py"],
        ["--step", "train", "--material", "build/data/train.csv",
         "--material", "build/data/test.csv", "--material", "train.py",
         "--product", "build/model.safetensors", "--product", "build/metrics.json",
         *TRAIN_ENV, "--", sys.executable, "train.py"],
    ]
    for step in steps:
        options, command = step[:step.index("--")], step[step.index("--"):]
        result = run(["record", *options, "--key", "keys/builder.key", *command], cwd=work)
        assert result.code == 0, result.output
    return work


def test_training_learns_the_spirals(example: Path) -> None:
    metrics = json.loads((example / "build" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["test_accuracy"] >= 0.9
    from safetensors.numpy import load_file

    tensors = load_file(str(example / "build" / "model.safetensors"))
    assert {k: v.shape for k, v in tensors.items()} == {
        "0.weight": (64, 2), "0.bias": (64,), "2.weight": (64, 64), "2.bias": (64,),
        "4.weight": (3, 64), "4.bias": (3,)}


def test_two_rebuilders_reproduce_it_and_the_policy_holds(example: Path) -> None:
    full = run(["rebuild", "attestations", "--trust-key", "keys/builder.pub",
                "--key", "keys/rebuilder-a.key", "--out", "rebuilds", "--json"],
               cwd=example)
    assert full.code == 0, full.output
    assert [(o["step"], o["status"]) for o in json.loads(full.stdout)] == [
        ("make-data", "reproduced"), ("train", "reproduced")]
    one_step = run(["rebuild", "attestations/train.intoto.json", "--step", "train",
                    "--materials-from", "build", "--trust-key", "keys/builder.pub",
                    "--key", "keys/rebuilder-b.key", "--out", "rebuilds"],
                   cwd=example)
    assert one_step.code == 0, one_step.output
    bundle = read_json(example / "rebuilds" / "rebuilder-b" / "train.rebuild.intoto.json")
    assert dsse_verifies(bundle, (example / "keys" / "rebuilder-b.pub").read_bytes())
    predicate = payload_of(bundle)["predicate"]
    assert predicate["reproduced"] is True
    assert predicate["env"] == {"CUBLAS_WORKSPACE_CONFIG": ":4096:8", "OMP_NUM_THREADS": "1"}
    assert predicate["environment"]["torch"]["version"]  # the rebuilder's torch, recorded
    # rebuilder-b rebuilt train only, so make-data has one matching rebuild of the two needed.
    verified = run(["build/model.safetensors", "--policy", "policy.yaml",
                    "--attestations", "attestations", "--attestations", "rebuilds", "--json"],
                   cwd=example, program="verify-model")
    report = json.loads(verified.stdout)
    quorum = {q["step"]: q["matched"] for q in report["rebuilds"]}
    assert quorum == {"make-data": ["rebuilder-a"], "train": ["rebuilder-a", "rebuilder-b"]}
    assert verified.code == 1
    full_b = run(["rebuild", "attestations", "--trust-key", "keys/builder.pub", "--force",
                  "--key", "keys/rebuilder-b.key", "--out", "rebuilds"],
                 cwd=example)
    assert full_b.code == 0, full_b.output
    verified = run(["build/model.safetensors", "--policy", "policy.yaml",
                    "--attestations", "attestations", "--attestations", "rebuilds"],
                   cwd=example, program="verify-model")
    assert verified.code == 0, verified.output
    assert "rebuilds of train: 2/2 matching (rebuilder-a, rebuilder-b)" in verified.stdout
