"""Training step: a tiny next-token model in numpy, trained for a few hundred steps.

The model (a Hugging Face-style tensor layout): token embedding, one residual MLP block, an
RMSNorm and the output head. float32 throughout, a fixed seed and full-batch Adam, so that with
one BLAS thread (OMP_NUM_THREADS=1, recorded) a rerun gives the same bits. Reads
build/tokenizer/tokenizer.json (for the vocabulary size) and build/data/tokens.npy; writes
build/weights.safetensors and build/metrics.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

HIDDEN, INTERMEDIATE, STEPS, LEARNING_RATE, EPS, SEED = 64, 128, 100, 0.02, 1e-5, 20261129
f32 = np.float32


def vocabulary_size() -> int:
    document = json.loads(Path("build/tokenizer/tokenizer.json").read_text(encoding="utf-8"))
    ids = [*document["model"]["vocab"].values(), *(t["id"] for t in document["added_tokens"])]
    return max(ids) + 1


def init(vocab: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(f32)

    return {
        "model.embed_tokens.weight": normal(vocab, HIDDEN),
        "model.layers.0.mlp.up_proj.weight": normal(INTERMEDIATE, HIDDEN),
        "model.layers.0.mlp.down_proj.weight": normal(HIDDEN, INTERMEDIATE),
        "model.norm.weight": np.ones(HIDDEN, f32),
        "lm_head.weight": normal(vocab, HIDDEN),
    }


def loss_and_grads(p: dict[str, np.ndarray], inputs: np.ndarray, targets: np.ndarray
                   ) -> tuple[float, dict[str, np.ndarray]]:
    embed, up = p["model.embed_tokens.weight"], p["model.layers.0.mlp.up_proj.weight"]
    down, gain, head = (p["model.layers.0.mlp.down_proj.weight"], p["model.norm.weight"],
                        p["lm_head.weight"])
    x = embed[inputs]
    hidden = np.tanh(x @ up.T)
    y = x + hidden @ down.T
    rms = np.sqrt((y * y).mean(axis=1, keepdims=True) + f32(EPS))
    normed = y / rms
    logits = (normed * gain) @ head.T
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    count = f32(len(targets))
    loss = float(-np.log(probs[np.arange(len(targets)), targets]).mean())
    d_logits = probs
    d_logits[np.arange(len(targets)), targets] -= 1
    d_logits /= count
    grads = {"lm_head.weight": d_logits.T @ (normed * gain)}
    d_scaled = d_logits @ head
    grads["model.norm.weight"] = (d_scaled * normed).sum(axis=0)
    d_normed = d_scaled * gain
    d_y = (d_normed - normed * (d_normed * normed).mean(axis=1, keepdims=True)) / rms
    grads["model.layers.0.mlp.down_proj.weight"] = d_y.T @ hidden
    d_hidden = (d_y @ down) * (1 - hidden * hidden)
    grads["model.layers.0.mlp.up_proj.weight"] = d_hidden.T @ x
    d_x = d_y + d_hidden @ up
    d_embed = np.zeros_like(embed)
    np.add.at(d_embed, inputs, d_x)
    grads["model.embed_tokens.weight"] = d_embed
    return loss, {name: grad.astype(f32) for name, grad in grads.items()}


def main() -> None:
    tokens = np.load("build/data/tokens.npy").astype(np.int64)
    inputs, targets = tokens[:-1], tokens[1:]
    params = init(vocabulary_size())
    moment = {name: np.zeros_like(value) for name, value in params.items()}
    velocity = {name: np.zeros_like(value) for name, value in params.items()}
    beta1, beta2 = f32(0.9), f32(0.999)
    losses = []
    for step in range(1, STEPS + 1):
        loss, grads = loss_and_grads(params, inputs, targets)
        losses.append(loss)
        for name, grad in grads.items():
            moment[name] = beta1 * moment[name] + (1 - beta1) * grad
            velocity[name] = beta2 * velocity[name] + (1 - beta2) * grad * grad
            corrected = moment[name] / (1 - beta1 ** step)
            scale = np.sqrt(velocity[name] / (1 - beta2 ** step)) + f32(1e-8)
            params[name] = (params[name] - f32(LEARNING_RATE) * corrected / scale).astype(f32)
    save_file(params, "build/weights.safetensors")
    metrics = {"steps": STEPS, "first_loss": round(losses[0], 6), "last_loss": round(losses[-1], 6),
               "tokens": int(tokens.size)}
    Path("build/metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(f"train: loss {losses[0]:.3f} -> {losses[-1]:.3f} over {STEPS} steps")


if __name__ == "__main__":
    main()
