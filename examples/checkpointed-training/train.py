"""Step 2 of the checkpointed-training example: a small MLP trained with SGD and momentum, with
a checkpoint every C steps and a resume path that reproduces any checkpoint from the one before.

Full run (the recorded step):

    python train.py --data data --steps 200 --every 20 --out ckpt

writes `ckpt/step-000000/` (the seeded initial weights, before any update), `ckpt/step-000020/`,
... `ckpt/step-000200/`, and the product `model/weights.safetensors`. `--steps 0` writes the
initial weights alone (an initialisation step of its own, rebuilt whole in a second).
Resume (the signed template a replayer runs for one segment):

    python train.py --data data --from ckpt/step-000040 --until 60 --out OUT

writes exactly `OUT/step-000060/`, byte for byte the full run's `ckpt/step-000060/`.

A checkpoint directory holds `weights.safetensors` (w1, b1, w2, b2), `optimizer.safetensors`
(the momentum buffers under the same names) and `trainer_state.json` (step, data position,
the RNG state of the input noise as plain JSON, hyperparameters). Everything is float64 numpy
on one BLAS thread, safetensors without metadata and JSON with sorted keys, so the bytes are a
function of the computation alone. The hyperparameters live in this script (a material); a
checkpoint made with others is refused on resume rather than silently continued.

Update k (1-based) reads the examples at positions (k-1)*B .. k*B-1 of the committed data order
(`data/order.safetensors`), with Gaussian input noise drawn from a seeded generator whose state
travels in the trainer state.

For tests and the docs, three switches forge a run that is honest except for one segment. A
forger sets them while producing the checkpoints; they are no part of the signed command or
template, and an honest replay never sets them:

    FORGE_PERTURB_AT=S      after update S, add noise (FORGE_PERTURB_SCALE, default 1e-3) to
                            the weights once; training continues honestly from there
    FORGE_LR_AT=S           the updates of the segment ending at checkpoint S use the learning
                            rate times FORGE_LR_FACTOR (default 2)
    FORGE_SWAP_BATCH_AT=K   update K reads another batch (the positions of update K+1 reversed)

If MODEL_VERIFIER_REPORT names a file, the script reports its determinism settings there (its
thread settings: numpy has no other switch), which `model-verifier record` signs.
"""

from __future__ import annotations

import os

# One BLAS thread: float64 sums then come out the same on every run. Set before numpy loads.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

HYPERPARAMETERS: dict[str, Any] = {
    "batch_size": 32, "hidden": 32, "init_seed": 1, "lr": 0.05, "momentum": 0.9,
    "noise": 0.1, "noise_seed": 2,
}
NAMES = ("w1", "b1", "w2", "b2")
Params = dict[str, np.ndarray]


def fail(message: str) -> None:
    sys.stderr.write(f"train.py: {message}\n")
    raise SystemExit(2)


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def initial_weights(features: int, classes: int) -> Params:
    rng = np.random.default_rng(HYPERPARAMETERS["init_seed"])
    hidden = HYPERPARAMETERS["hidden"]
    return {
        "w1": rng.normal(0.0, 1.0 / np.sqrt(features), (features, hidden)),
        "b1": np.zeros(hidden),
        "w2": rng.normal(0.0, 1.0 / np.sqrt(hidden), (hidden, classes)),
        "b2": np.zeros(classes),
    }


def gradients(p: Params, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
    """Cross-entropy of a tanh MLP and its gradients, written out by hand."""
    h = np.tanh(x @ p["w1"] + p["b1"])
    logits = h @ p["w2"] + p["b2"]
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(-np.log(probs[np.arange(n), y]).mean())
    d_logits = probs
    d_logits[np.arange(n), y] -= 1.0
    d_logits /= n
    d_h = (d_logits @ p["w2"].T) * (1.0 - h * h)
    return loss, {"w1": x.T @ d_h, "b1": d_h.sum(axis=0),
                  "w2": h.T @ d_logits, "b2": d_logits.sum(axis=0)}


def save_checkpoint(directory: Path, step: int, weights: Params, momentum: Params,
                    rng: np.random.Generator) -> None:
    directory.mkdir(parents=True, exist_ok=False)
    save_file({k: weights[k] for k in NAMES}, str(directory / "weights.safetensors"))
    save_file({k: momentum[k] for k in NAMES}, str(directory / "optimizer.safetensors"))
    state = {"step": step, "data_position": step * HYPERPARAMETERS["batch_size"],
             "rng": rng.bit_generator.state, "hyperparameters": HYPERPARAMETERS}
    (directory / "trainer_state.json").write_text(
        json.dumps(state, sort_keys=True, indent=1) + "\n", encoding="utf-8")


def load_checkpoint(directory: Path) -> tuple[int, Params, Params, np.random.Generator]:
    try:
        state = json.loads((directory / "trainer_state.json").read_text(encoding="utf-8"))
        weights = load_file(str(directory / "weights.safetensors"))
        momentum = load_file(str(directory / "optimizer.safetensors"))
    except (OSError, ValueError) as error:
        fail(f"{directory}: not a checkpoint of this script ({error}).")
    if state.get("hyperparameters") != HYPERPARAMETERS:
        fail(f"{directory}: was made with other hyperparameters than this script's.")
    step = state.get("step")
    if not isinstance(step, int) or state.get("data_position") != step * \
            HYPERPARAMETERS["batch_size"]:
        fail(f"{directory}: its step and data position disagree.")
    generator = np.random.PCG64()
    generator.state = state["rng"]
    return step, weights, momentum, np.random.Generator(generator)


def forged(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def train(weights: Params, momentum: Params, rng: np.random.Generator, start: int, until: int,
          every: int | None, data: Path, out: Path) -> Params:
    """Updates start+1 .. until; a checkpoint after every multiple of `every` (None: at `until`
    alone)."""
    tensors = load_file(str(data / "train.safetensors"))
    x_all, y_all = tensors["x"], tensors["y"]
    order = load_file(str(data / "order.safetensors"))["order"]
    batch = HYPERPARAMETERS["batch_size"]
    if until * batch > len(order):
        fail(f"{data}: its data order covers {len(order) // batch} steps, not {until}.")
    perturb_at, lr_at = forged("FORGE_PERTURB_AT"), forged("FORGE_LR_AT")
    swap_at = forged("FORGE_SWAP_BATCH_AT")
    lr_factor = float(os.environ.get("FORGE_LR_FACTOR", "2"))
    for k in range(start + 1, until + 1):
        positions = order[(k - 1) * batch:k * batch]
        if k == swap_at:
            positions = order[k * batch:(k + 1) * batch][::-1]
        noise = rng.normal(0.0, HYPERPARAMETERS["noise"], (batch, x_all.shape[1]))
        _, grads = gradients(weights, x_all[positions] + noise, y_all[positions])
        lr = HYPERPARAMETERS["lr"]
        if lr_at is not None and every is not None and lr_at - every < k <= lr_at:
            lr *= lr_factor
        for name in NAMES:
            momentum[name] = HYPERPARAMETERS["momentum"] * momentum[name] + grads[name]
            weights[name] = weights[name] - lr * momentum[name]
        if k == perturb_at:
            scale = float(os.environ.get("FORGE_PERTURB_SCALE", "1e-3"))
            bump = np.random.default_rng(k)
            weights = {n: w + bump.normal(0.0, scale, w.shape) for n, w in weights.items()}
        if (every is not None and k % every == 0) or (every is None and k == until):
            save_checkpoint(out / checkpoint_name(k), k, weights, momentum, rng)
    return weights


def accuracy(weights: Params, data: Path) -> float:
    tensors = load_file(str(data / "train.safetensors"))
    h = np.tanh(tensors["x"] @ weights["w1"] + weights["b1"])
    return float(((h @ weights["w2"] + weights["b2"]).argmax(axis=1) == tensors["y"]).mean())


def report_settings() -> None:
    """Tell the recorder what this process ran with: numpy's only switch is its thread count."""
    path = os.environ.get("MODEL_VERIFIER_REPORT")
    if not path:
        return
    threads = os.environ["OPENBLAS_NUM_THREADS"]
    settings = {"threads": int(threads)} if re.fullmatch(r"[1-9]\d{0,5}", threads) else {}
    Path(path).write_text(json.dumps({"determinism": settings}), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="where checkpoints go")
    parser.add_argument("--steps", type=int, help="full run: train this many steps")
    parser.add_argument("--every", type=int, default=20, help="full run: checkpoint interval")
    parser.add_argument("--model", type=Path, default=Path("model"),
                        help="full run: where the final weights.safetensors goes")
    parser.add_argument("--from", dest="start", type=Path, help="resume from this checkpoint")
    parser.add_argument("--until", type=int, help="resume: the step to stop and checkpoint at")
    args = parser.parse_args()

    if (args.start is None) == (args.steps is None):
        fail("give either --steps (a full run) or --from and --until (a resume).")
    if args.start is not None:
        if args.until is None:
            fail("--from needs --until.")
        step, weights, momentum, rng = load_checkpoint(args.start)
        if args.until <= step:
            fail(f"--until {args.until} is not after the checkpoint's step {step}.")
        train(weights, momentum, rng, step, args.until, None, args.data, args.out)
        report_settings()
        print(f"train.py: resumed at step {step}, wrote "
              f"{args.out / checkpoint_name(args.until)}")
        return
    if args.steps < 0 or args.every <= 0:
        fail("--steps must not be negative, --every must be positive.")
    tensors = load_file(str(args.data / "train.safetensors"))
    weights = initial_weights(tensors["x"].shape[1], int(tensors["y"].max()) + 1)
    momentum = {name: np.zeros_like(w) for name, w in weights.items()}
    rng = np.random.Generator(np.random.PCG64(HYPERPARAMETERS["noise_seed"]))
    save_checkpoint(args.out / checkpoint_name(0), 0, weights, momentum, rng)
    weights = train(weights, momentum, rng, 0, args.steps, args.every, args.data, args.out)
    args.model.mkdir(parents=True, exist_ok=True)
    save_file({k: weights[k] for k in NAMES}, str(args.model / "weights.safetensors"))
    report_settings()
    print(f"train.py: {args.steps} steps, {args.steps // args.every + 1} checkpoints in "
          f"{args.out}, training accuracy {accuracy(weights, args.data):.3f}")


if __name__ == "__main__":
    main()
