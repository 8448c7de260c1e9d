"""The tiny-model demo's openness report, against its golden copy (examples/tiny-model/
openness.txt, shown in the README).

The demo's three steps are recorded here with the same declarations as demo.sh, rebuilt by two
independent rebuilders, and `openness` under the demo's quorum policy must print the golden
text byte for byte.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

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


def test_tiny_model_openness_matches_the_golden_copy(tmp_path: Path) -> None:
    work = tmp_path / "tiny-model"
    work.mkdir()
    shutil.copytree(EXAMPLE / "data", work / "data")
    for script in EXAMPLE.glob("*.py"):
        shutil.copy2(script, work / script.name)
    for who in ("builder", "rebuilder-a", "rebuilder-b", "rebuilder-c"):
        make_keys(work / "keys", who)
    for step, materials, products, extra, script in STEPS:
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
                      f"rebuilds/{who}"], cwd=work)
        assert result.code == 0, result.output
    policy = yaml.safe_load((REPO / "policies" / "tiny-model-rebuilt.yaml").read_text())
    policy["signers"] = {name: {"key": f"keys/{name}.pub"} for name in policy["signers"]}
    write_policy(work / "policy.yaml", policy)
    result = run(["openness", "build/model/model.safetensors", "--policy", "policy.yaml",
                  "--attestations", "attestations", "--attestations", "rebuilds"], cwd=work)
    assert result.code == 0, result.output
    assert result.stdout == (EXAMPLE / "openness.txt").read_text(encoding="utf-8")
