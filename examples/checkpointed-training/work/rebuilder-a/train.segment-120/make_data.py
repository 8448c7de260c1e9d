"""Step 1 of the checkpointed-training example: the data set and its data order, fixed up front.

Writes `data/train.safetensors` (features `x`, float64, and labels `y`, int64: four Gaussian
blobs in 8 dimensions) and `data/order.safetensors` (`order`, int64: the index of every example
every step will read, one shuffled epoch after another). Both come from fixed seeds, so the same
bytes appear on every machine; the order is committed *before* training, as OLMo's
`global_indices.npy` is, so that a trainer cannot pick its batches after the fact (the
Proof-of-Learning attacks do exactly that). The training step declares both files as materials.
Needs numpy and safetensors only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

FEATURES = 8
CLASSES = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data"))
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--order-seed", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=32, help="epochs of data order to commit")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    centres = rng.normal(0.0, 1.5, (CLASSES, FEATURES))
    labels = np.arange(args.examples, dtype=np.int64) % CLASSES
    features = centres[labels] + rng.normal(0.0, 1.0, (args.examples, FEATURES))

    shuffle = np.random.default_rng(args.order_seed)
    order = np.concatenate([shuffle.permutation(args.examples) for _ in range(args.epochs)])

    args.out.mkdir(parents=True, exist_ok=True)
    # No metadata: the bytes depend on the arrays alone.
    save_file({"x": features, "y": labels}, str(args.out / "train.safetensors"))
    save_file({"order": order.astype(np.int64)}, str(args.out / "order.safetensors"))
    print(f"make_data: {args.examples} examples, {len(order)} positions of data order "
          f"in {args.out}")


if __name__ == "__main__":
    main()
