"""The tiny-model example pipeline: it runs, it is reproducible, it learns.

Runs prepare.py, train.py and package.py from examples/tiny-model/ in copies
under tmp_path, the way a builder and a rebuilder would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny-model"
STEPS = ["prepare.py", "train.py", "package.py"]
PRODUCTS = [
    "build/data/train.csv",
    "build/data/test.csv",
    "build/data/stats.json",
    "build/weights.safetensors",
    "build/train-log.json",
    "build/model/model.safetensors",
    "build/model/config.json",
]
EXPECTED_TENSORS = {
    "layers.0.weight": (16, 4),
    "layers.0.bias": (16,),
    "layers.1.weight": (3, 16),
    "layers.1.bias": (3,),
}


def copy_example(dest: Path) -> Path:
    """Copy the data and scripts (not build/, keys or attestations) to dest."""
    dest.mkdir(parents=True)
    shutil.copytree(EXAMPLE / "data", dest / "data")
    for script in EXAMPLE.glob("*.py"):
        shutil.copy2(script, dest / script.name)
    return dest


def run_pipeline(workdir: Path, threads: str = "1") -> dict[str, str]:
    """Run the three steps in workdir; return the sha256 of every product."""
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    for step in STEPS:
        subprocess.run(
            [sys.executable, step], cwd=workdir, env=env, check=True, capture_output=True
        )
    return {p: hashlib.sha256((workdir / p).read_bytes()).hexdigest() for p in PRODUCTS}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    workdir = copy_example(tmp_path_factory.mktemp("tiny") / "build-1")
    return workdir, run_pipeline(workdir)


def test_steps_write_their_products(reference: tuple[Path, dict[str, str]]) -> None:
    workdir, _ = reference
    for product in PRODUCTS:
        assert (workdir / product).is_file(), product
    written = {p.relative_to(workdir).as_posix() for p in workdir.rglob("*") if p.is_file()}
    inputs = {"data/iris.csv", "data/README.md"} | {s.name for s in EXAMPLE.glob("*.py")}
    assert written - inputs == set(PRODUCTS), "a step wrote something it does not declare"


def test_rebuild_in_another_copy_is_byte_identical(
    reference: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    _, first = reference
    assert run_pipeline(copy_example(tmp_path / "build-2")) == first


def test_other_thread_count_changes_the_model_bits_only_slightly(
    reference: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    workdir, first = reference
    other_dir = copy_example(tmp_path / "build-threads-2")
    other = run_pipeline(other_dir, threads="2")
    # Data preparation does not depend on the thread count; the weights do.
    for product in ["build/data/train.csv", "build/data/test.csv", "build/data/stats.json"]:
        assert other[product] == first[product]
    assert other["build/model/model.safetensors"] != first["build/model/model.safetensors"]

    a = load_file(str(workdir / "build/model/model.safetensors"))
    b = load_file(str(other_dir / "build/model/model.safetensors"))
    diff = sum(float(np.sum((a[k].astype(np.float64) - b[k]) ** 2)) for k in a)
    norm = sum(float(np.sum(a[k].astype(np.float64) ** 2)) for k in a)
    assert 0 < (diff / norm) ** 0.5 < 1e-3


def test_model_tensors_and_config(reference: tuple[Path, dict[str, str]]) -> None:
    workdir, _ = reference
    tensors = load_file(str(workdir / "build/model/model.safetensors"))
    assert {k: v.shape for k, v in tensors.items()} == EXPECTED_TENSORS
    assert all(v.dtype == np.float32 for v in tensors.values())
    config = json.loads((workdir / "build/model/config.json").read_text())
    assert config["classes"] == ["setosa", "versicolor", "virginica"]
    assert len(config["normalisation"]["mean"]) == 4


def test_trained_model_is_accurate_on_held_out_data(
    reference: tuple[Path, dict[str, str]],
) -> None:
    workdir, _ = reference
    tensors = load_file(str(workdir / "build/model/model.safetensors"))
    data = np.loadtxt(workdir / "build/data/test.csv", delimiter=",", skiprows=1)
    x, y = data[:, :4].astype(np.float32), data[:, 4].astype(int)
    assert len(y) == 30 and sorted(np.bincount(y)) == [10, 10, 10]
    h = np.maximum(x @ tensors["layers.0.weight"].T + tensors["layers.0.bias"], 0)
    logits = h @ tensors["layers.1.weight"].T + tensors["layers.1.bias"]
    assert float(np.mean(logits.argmax(axis=1) == y)) > 0.85
