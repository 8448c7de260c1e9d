"""examples/checkpointed-training: the training script segment replay is built on.

A full run writes a checkpoint every 20 steps from step 0; a resume from any checkpoint writes
the next one byte for byte; a forged run (weights perturbed once, the learning rate changed for
one segment, one batch swapped) is honest everywhere but on the segment it forged, which is
what makes a random replay of segments catch it.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "checkpointed-training"
STEPS, EVERY = 200, 20


def python(args: list[str], cwd: Path, **forge: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_")}
    subprocess.run([sys.executable, *args], cwd=cwd, env={**env, **forge}, check=True,
                   capture_output=True)


def full_run(work: Path, out: str, **forge: str) -> Path:
    python(["train.py", "--data", "data", "--steps", str(STEPS), "--every", str(EVERY),
            "--out", f"{out}/ckpt", "--model", f"{out}/model"], work, **forge)
    return work / out / "ckpt"


def replay(work: Path, checkpoints: Path, end: int, out: Path) -> Path:
    start = checkpoints / f"step-{end - EVERY:06d}"
    python(["train.py", "--data", "data", "--from", str(start), "--until", str(end),
            "--out", str(out)], work)
    return out / f"step-{end:06d}"


def same_directory(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    return all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("checkpointed")
    for name in ("make_data.py", "train.py"):
        shutil.copy(EXAMPLE / name, root / name)
    python(["make_data.py"], root)
    full_run(root, "honest")
    return root


def test_a_full_run_checkpoints_every_interval_from_the_initial_weights(work: Path) -> None:
    checkpoints = work / "honest" / "ckpt"
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        f"step-{s:06d}" for s in range(0, STEPS + 1, EVERY)]
    for directory in checkpoints.iterdir():
        assert sorted(p.name for p in directory.iterdir()) == [
            "optimizer.safetensors", "trainer_state.json", "weights.safetensors"]
        state = json.loads((directory / "trainer_state.json").read_text(encoding="utf-8"))
        assert state["step"] == int(directory.name[-6:])
        assert state["data_position"] == state["step"] * 32
    assert (work / "honest" / "model" / "weights.safetensors").read_bytes() == (
        checkpoints / f"step-{STEPS:06d}" / "weights.safetensors").read_bytes()


def test_two_full_runs_are_byte_identical(work: Path) -> None:
    again = full_run(work, "again")
    assert all(same_directory(d, again / d.name) for d in (work / "honest" / "ckpt").iterdir())


@pytest.mark.parametrize("end", [EVERY, 60, STEPS])
def test_a_resume_writes_exactly_the_next_checkpoint_byte_for_byte(work: Path, end: int,
                                                                   tmp_path: Path) -> None:
    checkpoints = work / "honest" / "ckpt"
    replayed = replay(work, checkpoints, end, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == [replayed.name]
    assert same_directory(replayed, checkpoints / replayed.name)


@pytest.mark.parametrize("forge", [
    {"FORGE_PERTURB_AT": "100"},
    {"FORGE_LR_AT": "100"},
    {"FORGE_SWAP_BATCH_AT": "90"},
], ids=["weights-perturbed", "learning-rate", "batch-swapped"])
def test_a_forged_run_differs_only_on_the_forged_segment(work: Path, forge: dict[str, str],
                                                         tmp_path: Path) -> None:
    checkpoints = full_run(work, "forged-" + "-".join(forge), **forge)
    honest = work / "honest" / "ckpt"
    # Before the forgery the run is the honest one; from it on, every checkpoint differs.
    assert same_directory(checkpoints / "step-000080", honest / "step-000080")
    assert not same_directory(checkpoints / "step-000100", honest / "step-000100")
    for end, reproduced in ((80, True), (100, False), (120, True), (STEPS, True)):
        replayed = replay(work, checkpoints, end, tmp_path / str(end))
        assert same_directory(replayed, checkpoints / replayed.name) is reproduced, end
