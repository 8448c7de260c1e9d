"""Optional check: the packaged model's accuracy on the held-out test split.

Reads build/model/model.safetensors and build/data/test.csv; writes nothing,
prints the accuracy. Not a pipeline step. Run from examples/tiny-model/.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def accuracy(model_dir: Path, test_csv: Path) -> float:
    """Fraction of test rows whose predicted class matches the label."""
    t = load_file(str(model_dir / "model.safetensors"))
    data = np.loadtxt(test_csv, delimiter=",", skiprows=1)
    x, y = data[:, :4].astype(np.float32), data[:, 4].astype(int)
    h = np.maximum(x @ t["layers.0.weight"].T + t["layers.0.bias"], 0)
    logits = h @ t["layers.1.weight"].T + t["layers.1.bias"]
    return float((logits.argmax(axis=1) == y).mean())


if __name__ == "__main__":
    print(f"test accuracy: {accuracy(Path('build/model'), Path('build/data/test.csv')):.4f}")
