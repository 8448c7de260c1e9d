"""Step 1 of the torch-mlp example: a small synthetic data set, the same bytes on every machine.

Three interleaved spirals in the plane (300 points, 100 a class), split 240/60 with a fixed
seed, written as CSV with a fixed number of decimals so that the text never depends on how a
platform prints floats. Needs numpy only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SEED = 20240607
POINTS_PER_CLASS = 100
CLASSES = 3
OUT = Path("build/data")


def spirals(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    features, labels = [], []
    for label in range(CLASSES):
        radius = np.linspace(0.05, 1.0, POINTS_PER_CLASS)
        angle = (np.linspace(label * 4.0, (label + 1) * 4.0, POINTS_PER_CLASS)
                 + rng.normal(0.0, 0.2, POINTS_PER_CLASS))
        features.append(np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1))
        labels.append(np.full(POINTS_PER_CLASS, label))
    return np.concatenate(features), np.concatenate(labels)


def write_csv(path: Path, features: np.ndarray, labels: np.ndarray) -> None:
    lines = ["x,y,label"]
    lines += [f"{x:.6f},{y:.6f},{label}" for (x, y), label in zip(features, labels, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    rng = np.random.default_rng(SEED)
    features, labels = spirals(rng)
    order = rng.permutation(len(labels))
    test, train = order[:60], order[60:]
    OUT.mkdir(parents=True, exist_ok=True)
    write_csv(OUT / "train.csv", features[train], labels[train])
    write_csv(OUT / "test.csv", features[test], labels[test])
    print(f"make_data: {len(train)} training and {len(test)} test points in {OUT}")


if __name__ == "__main__":
    main()
