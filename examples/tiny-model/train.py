"""Step 2 of 3: train a small MLP (4 -> 16 -> 3, ReLU, softmax) on Iris.

Reads (materials):
    build/data/train.csv       standardised features + class index
Writes (products):
    build/weights.safetensors  w0 (4x16), b0 (16), w1 (16x3), b1 (3), float32
    build/train-log.json       epochs, worker count, final loss, accuracy

Mini-batch gradient descent with a fixed seed, float32 throughout. Matrix
products are written as broadcast multiply + sum instead of BLAS calls, so the
order of every float32 addition is fixed by this file and not by the CPU's
BLAS kernel; exp runs in float64 and is rounded to float32, which hides the
last-bit differences between numpy's CPU-specific exp kernels.

Why OMP_NUM_THREADS matters: the gradient is reduced the way data-parallel
training reduces it. Each batch is split into N shards (N = OMP_NUM_THREADS,
default 1), each "worker" sums the gradient over its shard in float32, and the
shard sums are added up. Float32 addition is not associative, so N changes the
order of summation and therefore the bits of the weights -- slightly (a
relative L2 difference around 1e-7, same accuracy), but enough to change every
hash, just as changing the thread or worker count does in real training. The
pipeline declares OMP_NUM_THREADS=1 when it is recorded; a rebuilder who runs
it with another value from 2 to 23 gets different weights. (From 24, the batch
size, up, every shard holds one example and the sum order is N=1's again.)
With the same N, two runs are bit-identical.

The checkpoint is safetensors without metadata, whose bytes are deterministic.
Run from examples/tiny-model/: ``OMP_NUM_THREADS=1 python train.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

TRAIN = Path("build/data/train.csv")
WEIGHTS = Path("build/weights.safetensors")
LOG = Path("build/train-log.json")
F32 = np.float32
SEED, EPOCHS, BATCH, LR, HIDDEN, CLASSES = 7, 300, 24, 0.05, 16, 3


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b with a fixed, CPU-independent summation order (no BLAS)."""
    return (a[:, :, None] * b[None, :, :]).sum(axis=1, dtype=F32)


def forward(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return hidden activations and class probabilities for the rows x."""
    h = np.maximum(matmul(x, p["w0"]) + p["b0"], F32(0))
    logits = matmul(h, p["w1"]) + p["b1"]
    e = np.exp((logits - logits.max(axis=1, keepdims=True)).astype(np.float64))
    return h, (e / e.sum(axis=1, keepdims=True)).astype(F32)


def shard_grad_sum(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Gradient of the summed cross-entropy over one shard, in float32."""
    h, prob = forward(p, x)
    d1 = prob - np.eye(CLASSES, dtype=F32)[y]
    d0 = matmul(d1, p["w1"].T) * (h > 0)
    return {
        "w0": matmul(x.T, d0),
        "b0": d0.sum(axis=0, dtype=F32),
        "w1": matmul(h.T, d1),
        "b1": d1.sum(axis=0, dtype=F32),
    }


def main() -> None:
    workers = int(os.environ.get("OMP_NUM_THREADS", "1"))
    data = np.loadtxt(TRAIN, delimiter=",", skiprows=1)
    x, y = data[:, :4].astype(F32), data[:, 4].astype(int)
    rng = np.random.default_rng(SEED)
    p = {
        "w0": rng.standard_normal((4, HIDDEN), dtype=F32) * F32(np.sqrt(2 / 4)),
        "b0": np.zeros(HIDDEN, F32),
        "w1": rng.standard_normal((HIDDEN, CLASSES), dtype=F32) * F32(np.sqrt(2 / HIDDEN)),
        "b1": np.zeros(CLASSES, F32),
    }

    for _ in range(EPOCHS):
        order = rng.permutation(len(x))
        for start in range(0, len(x), BATCH):
            batch = order[start : start + BATCH]
            grad = {k: np.zeros_like(v) for k, v in p.items()}
            for shard in np.array_split(batch, workers):  # one shard per worker
                for k, g in shard_grad_sum(p, x[shard], y[shard]).items():
                    grad[k] += g
            for k in p:
                p[k] -= F32(LR) * grad[k] / F32(len(batch))

    _, prob = forward(p, x)
    loss = float(-np.log(prob[np.arange(len(y)), y].astype(np.float64)).mean())
    accuracy = float((prob.argmax(axis=1) == y).mean())
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in p.items()}, str(WEIGHTS))
    log = {
        "epochs": EPOCHS,
        "batch_size": BATCH,
        "learning_rate": LR,
        "seed": SEED,
        "workers": workers,
        "final_loss": round(loss, 6),
        "train_accuracy": round(accuracy, 6),
    }
    LOG.write_text(json.dumps(log, sort_keys=True, indent=2) + "\n")
    print(f"train: workers={workers} loss={loss:.4f} train_accuracy={accuracy:.4f}")


if __name__ == "__main__":
    main()
