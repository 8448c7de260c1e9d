"""Conversion step: the Hub directory to GGUF, the format llama.cpp runs, with llama.cpp's own
Python library (`gguf`, `pip install 'model-verifier[gguf]'`).

Reads build/model/ (the index, the shards, config.json and tokenizer.json) and writes
build/gguf/model-f16.gguf (matrices in F16, vectors in F32, as llama.cpp's converter does) and
build/gguf/model-q8_0.gguf (matrices quantized to Q8_0). Tensors get llama.cpp's names; the
tokenizer goes into the metadata. Nothing in the files depends on the time or the machine, so
a rebuild gives the same bits.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

try:
    import gguf
    from gguf.quants import quantize
except ImportError:
    sys.exit("convert: the gguf package is not installed (pip install gguf).")

MODEL = Path("build/model")
OUT = Path("build/gguf")
ARCH = "tiny-mlp"
NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.layers.0.mlp.up_proj.weight": "blk.0.ffn_up.weight",
    "model.layers.0.mlp.down_proj.weight": "blk.0.ffn_down.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def load_sharded() -> dict[str, np.ndarray]:
    index = json.loads((MODEL / "model.safetensors.index.json").read_text(encoding="utf-8"))
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors.update(load_file(MODEL / shard))
    return {name: tensors[name] for name in index["weight_map"]}


def write(path: Path, kind: str, tensors: dict[str, np.ndarray], config: dict,
          tokenizer: dict) -> None:
    writer = gguf.GGUFWriter(path, ARCH)
    writer.add_name("tiny-mlp hf-sharded example")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if kind == "f16"
                         else gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    vocab = tokenizer["model"]["vocab"]
    by_id = {index: token for token, index in vocab.items()}
    by_id.update({t["id"]: t["content"] for t in tokenizer["added_tokens"]})
    special = {t["id"] for t in tokenizer["added_tokens"] if t["special"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([by_id[i] for i in range(len(by_id))])
    writer.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                            for i in range(len(by_id))])
    merges = tokenizer["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_bos_token_id(config["bos_token_id"])
    for name, data in tensors.items():
        if data.ndim < 2:
            writer.add_tensor(NAMES[name], data.astype(np.float32))
        elif kind == "f16":
            writer.add_tensor(NAMES[name], data.astype(np.float16))
        else:
            blocks = quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(NAMES[name], blocks, raw_shape=blocks.shape,
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    tensors = load_sharded()
    config = json.loads((MODEL / "config.json").read_text(encoding="utf-8"))
    tokenizer = json.loads((MODEL / "tokenizer.json").read_text(encoding="utf-8"))
    OUT.mkdir(parents=True, exist_ok=True)
    for kind in ("f16", "q8_0"):
        write(OUT / f"model-{kind}.gguf", kind, tensors, config, tokenizer)
    print(f"convert: {len(tensors)} tensors to GGUF f16 and q8_0")


if __name__ == "__main__":
    main()
