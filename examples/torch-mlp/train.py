"""Step 2 of the torch-mlp example: train a small MLP with PyTorch, reproducibly.

Everything that decides the result is fixed: the seeds, deterministic algorithms, no TF32, no
cuDNN autotuning, the thread count (OMP_NUM_THREADS, declared when the step is recorded) and
CUBLAS_WORKSPACE_CONFIG, which cuBLAS needs for deterministic results on a GPU. The same script
runs on a CUDA GPU when one is available and on the CPU otherwise; a GPU and a CPU give
different weights, so a rebuild reproduces bit for bit only on the same kind of device.

Writes build/model.safetensors (no metadata, so the bytes are a function of the weights alone)
and build/metrics.json, and reports the settings it chose to the file MODEL_VERIFIER_REPORT
names, which `record` signs into the step's environment (attestations/step-buildtype.md).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

# Set before torch initialises CUDA; `record --env` declares the same value.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np
import torch
from safetensors.torch import save_file

SEED = 7
EPOCHS = 60
BATCH = 32
DATA = Path("build/data")
OUT = Path("build")


def deterministic(seed: int) -> torch.device:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def report_settings() -> None:
    """Tell the recorder what this process chose: only the step itself knows."""
    path = os.environ.get("MODEL_VERIFIER_REPORT")
    if not path:
        return
    settings = {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "threads": torch.get_num_threads(),
        "seed": torch.initial_seed(),
        "cuda_available": torch.cuda.is_available(),
    }
    Path(path).write_text(json.dumps({"torch": settings}), encoding="utf-8")


def load(path: Path, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    features = torch.tensor(table[:, :2], dtype=torch.float32, device=device)
    labels = torch.tensor(table[:, 2], dtype=torch.int64, device=device)
    return features, labels


def main() -> None:
    device = deterministic(SEED)
    x_train, y_train = load(DATA / "train.csv", device)
    x_test, y_test = load(DATA / "test.csv", device)
    model = torch.nn.Sequential(
        torch.nn.Linear(2, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 3),
    ).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    shuffle = torch.Generator(device="cpu").manual_seed(SEED)
    loss = torch.tensor(0.0)
    for _ in range(EPOCHS):
        order = torch.randperm(len(y_train), generator=shuffle).to(device)
        for start in range(0, len(order), BATCH):
            batch = order[start:start + BATCH]
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(dim=1) == y_test).float().mean().item()
    OUT.mkdir(parents=True, exist_ok=True)
    weights = {name: tensor.detach().cpu().contiguous()
               for name, tensor in model.state_dict().items()}
    save_file(weights, str(OUT / "model.safetensors"))
    metrics = {"device": device.type, "epochs": EPOCHS, "final_loss": round(loss.item(), 6),
               "test_accuracy": round(accuracy, 4), "torch": torch.__version__}
    (OUT / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n",
                                      encoding="utf-8")
    report_settings()
    print(f"train: {device.type}, loss {loss.item():.4f}, test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
