"""Data step: train a byte-level BPE tokenizer on data/corpus.txt and encode the corpus.

With the `tokenizers` library (Hugging Face's, `pip install 'model-verifier[hf-example]'`) the
tokenizer is a trained byte-level BPE; without it (or with HF_SHARDED_TOKENIZER=bytes) it is the
same byte-level model with no merges, one token per byte, written in the same tokenizer.json
format. Either way: build/tokenizer/tokenizer.json and build/data/tokens.npy (one line per
sequence, each ending in <|endoftext|>).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

VOCAB_SIZE = 320
END = "<|endoftext|>"
CORPUS = Path("data/corpus.txt")
TOKENIZER = Path("build/tokenizer/tokenizer.json")
TOKENS = Path("build/data/tokens.npy")


def byte_symbols() -> list[str]:
    """The printable character GPT-2's byte-level BPE uses for each byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for value in range(256):
        if value in printable:
            symbols[value] = chr(value)
        else:
            symbols[value] = chr(256 + extra)
            extra += 1
    return [symbols[value] for value in range(256)]


def bytes_tokenizer() -> tuple[dict, list[list[int]]]:
    """The byte-level model without merges, and the corpus encoded with it."""
    vocab = {symbol: value for value, symbol in enumerate(byte_symbols())}
    document = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 256, "content": END, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                          "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    return document, [[*line.encode("utf-8"), 256] for line in lines]


def bpe_tokenizer() -> tuple[dict, list[list[int]]]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    tokenizer.train_from_iterator(lines, trainer)
    end = tokenizer.token_to_id(END)
    encoded = [[*tokenizer.encode(line).ids, end] for line in lines]
    return json.loads(tokenizer.to_str()), encoded


def main() -> None:
    use_library = os.environ.get("HF_SHARDED_TOKENIZER", "bpe") != "bytes"
    try:
        document, encoded = bpe_tokenizer() if use_library else bytes_tokenizer()
        kind = "bpe (tokenizers)" if use_library else "bytes"
    except ImportError:
        document, encoded = bytes_tokenizer()
        kind = "bytes (tokenizers is not installed)"
    TOKENIZER.parent.mkdir(parents=True, exist_ok=True)
    TOKENS.parent.mkdir(parents=True, exist_ok=True)
    TOKENIZER.write_text(json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True)
                         + "\n", encoding="utf-8")
    tokens = np.array([token for line in encoded for token in line], dtype=np.uint16)
    np.save(TOKENS, tokens)
    vocabulary = len(document["model"]["vocab"]) + sum(
        1 for t in document["added_tokens"] if t["content"] not in document["model"]["vocab"])
    print(f"prepare: tokenizer {kind}, vocabulary {vocabulary}, {tokens.size} tokens")


if __name__ == "__main__":
    main()
