"""Packaging step: the trained weights and the tokenizer as a Hugging Face Hub model directory.

build/model/ gets what a Hub repository of a sharded model holds: config.json,
generation_config.json, tokenizer.json with tokenizer_config.json and special_tokens_map.json,
the weights in two safetensors shards (model-00001-of-00002.safetensors, ...) and
model.safetensors.index.json mapping each tensor to its shard. Every file is written with sorted
keys and no timestamps, so the directory is the same bytes each time.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.numpy import load_file, save_file

OUT = Path("build/model")
END = "<|endoftext|>"
SHARDS = (
    ("model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight",
     "model.layers.0.mlp.down_proj.weight"),
    ("model.norm.weight", "lm_head.weight"),
)


def write_json(name: str, value: object) -> None:
    (OUT / name).write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main() -> None:
    weights = load_file("build/weights.safetensors")
    tokenizer = json.loads(Path("build/tokenizer/tokenizer.json").read_text(encoding="utf-8"))
    end = next(t["id"] for t in tokenizer["added_tokens"] if t["content"] == END)
    vocab, hidden = weights["model.embed_tokens.weight"].shape
    OUT.mkdir(parents=True, exist_ok=True)
    weight_map, total = {}, 0
    for number, names in enumerate(SHARDS, start=1):
        shard = f"model-{number:05d}-of-{len(SHARDS):05d}.safetensors"
        save_file({name: weights[name] for name in names}, OUT / shard,
                  metadata={"format": "pt"})
        for name in names:
            weight_map[name] = shard
            total += weights[name].nbytes
    write_json("model.safetensors.index.json",
               {"metadata": {"total_size": total}, "weight_map": weight_map})
    write_json("config.json", {
        "architectures": ["TinyMlpForCausalLM"], "model_type": "tiny-mlp",
        "vocab_size": int(vocab), "hidden_size": int(hidden),
        "intermediate_size": int(weights["model.layers.0.mlp.up_proj.weight"].shape[0]),
        "num_hidden_layers": 1, "rms_norm_eps": 1e-5, "max_position_embeddings": 64,
        "bos_token_id": end, "eos_token_id": end, "tie_word_embeddings": False,
        "torch_dtype": "float32",
    })
    write_json("generation_config.json", {"bos_token_id": end, "eos_token_id": end,
                                          "do_sample": False, "max_new_tokens": 32})
    shutil.copyfile("build/tokenizer/tokenizer.json", OUT / "tokenizer.json")
    write_json("tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": END, "eos_token": END,
        "model_max_length": 64, "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
    })
    write_json("special_tokens_map.json", {"bos_token": END, "eos_token": END})
    print(f"package: {len(weight_map)} tensors in {len(SHARDS)} shards, {total} bytes")


if __name__ == "__main__":
    main()
