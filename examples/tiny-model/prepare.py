"""Step 1 of 3: split and standardise the Iris data.

Reads (materials):
    data/iris.csv              150 rows: four measurements and a species name

Writes (products):
    build/data/train.csv       120 rows, standardised features + class index
    build/data/test.csv        30 rows, standardised with the *training* stats
    build/data/stats.json      per-feature mean and std, class names, seed

The split is stratified (8 of every 10 flowers of each species go to
training) and driven by a fixed seed, and every number is written with a
fixed format, so the products are byte-for-byte the same on every run.
Run from examples/tiny-model/: ``python prepare.py``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

SOURCE = Path("data/iris.csv")
OUT_DIR = Path("build/data")
SEED = 20240601
TEST_FRACTION = 0.2
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def read_iris(path: Path) -> tuple[np.ndarray, list[str]]:
    """Return the feature matrix (float64) and the species name of each row."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    x = np.array([[float(r[name]) for name in FEATURES] for r in rows])
    return x, [r["species"] for r in rows]


def stratified_split(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted row indices for training and test, stratified by class."""
    train: list[int] = []
    test: list[int] = []
    for cls in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        n_test = round(len(rows) * TEST_FRACTION)
        test.extend(rows[:n_test].tolist())
        train.extend(rows[n_test:].tolist())
    return np.array(sorted(train)), np.array(sorted(test))


def write_split(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write standardised features with %.8f and the class index as an int."""
    lines = [",".join([*FEATURES, "label"])]
    for features, label in zip(x, y, strict=True):
        lines.append(",".join([*(f"{v:.8f}" for v in features), str(label)]))
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    x, species = read_iris(SOURCE)
    classes = sorted(set(species))
    y = np.array([classes.index(s) for s in species])

    train_idx, test_idx = stratified_split(y, np.random.default_rng(SEED))
    mean = x[train_idx].mean(axis=0)
    std = x[train_idx].std(axis=0)
    z = (x - mean) / std

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    write_split(OUT_DIR / "train.csv", z[train_idx], y[train_idx])
    write_split(OUT_DIR / "test.csv", z[test_idx], y[test_idx])
    stats = {
        "classes": classes,
        "features": FEATURES,
        "mean": [round(float(v), 8) for v in mean],
        "std": [round(float(v), 8) for v in std],
        "seed": SEED,
        "n_train": len(train_idx),
        "n_test": len(test_idx),
    }
    (OUT_DIR / "stats.json").write_text(json.dumps(stats, sort_keys=True, indent=2) + "\n")
    print(f"prepare: {len(train_idx)} train rows, {len(test_idx)} test rows")


if __name__ == "__main__":
    main()
