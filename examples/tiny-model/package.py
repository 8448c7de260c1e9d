"""Step 3 of 3: package the trained weights as a safetensors model.

Reads (materials):
    build/weights.safetensors      w0, b0, w1, b1 from train.py
    build/data/stats.json          normalisation stats and class names
Writes (products):
    build/model/model.safetensors  layers.{0,1}.{weight,bias}, float32
    build/model/config.json        architecture, classes, normalisation

Weights are stored the way torch.nn.Linear stores them: ``layers.i.weight``
has shape (out_features, in_features) and a layer computes
``x @ weight.T + bias``. The safetensors file carries no metadata (the header
is then a fixed function of the tensors), and config.json is written with
sorted keys, so both files are byte-for-byte reproducible.
Run from examples/tiny-model/: ``python package.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

WEIGHTS = Path("build/weights.safetensors")
STATS = Path("build/data/stats.json")
OUT_DIR = Path("build/model")


def main() -> None:
    stats = json.loads(STATS.read_text())
    w = load_file(str(WEIGHTS))
    tensors = {
        "layers.0.weight": np.ascontiguousarray(w["w0"].T, dtype=np.float32),
        "layers.0.bias": np.ascontiguousarray(w["b0"], dtype=np.float32),
        "layers.1.weight": np.ascontiguousarray(w["w1"].T, dtype=np.float32),
        "layers.1.bias": np.ascontiguousarray(w["b1"], dtype=np.float32),
    }
    hidden, n_in = tensors["layers.0.weight"].shape
    n_out = tensors["layers.1.weight"].shape[0]
    config = {
        "architecture": "mlp",
        "layers": [
            {"name": "layers.0", "in_features": n_in, "out_features": hidden},
            {"name": "layers.1", "in_features": hidden, "out_features": n_out},
        ],
        "activations": ["relu", "softmax"],
        "weight_layout": "weight is (out_features, in_features); y = x @ weight.T + bias",
        "dtype": "float32",
        "input_features": stats["features"],
        "classes": stats["classes"],
        "normalisation": {"mean": stats["mean"], "std": stats["std"]},
    }

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT_DIR / "model.safetensors"))
    (OUT_DIR / "config.json").write_text(json.dumps(config, sort_keys=True, indent=2) + "\n")
    print(f"package: wrote {OUT_DIR}/model.safetensors and {OUT_DIR}/config.json")


if __name__ == "__main__":
    main()
