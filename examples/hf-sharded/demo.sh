#!/usr/bin/env bash
# The hf-sharded demo: a Hub-shaped model build (tokenizer, training, a sharded Hugging Face
# directory, GGUF conversions) recorded by a builder, rebuilt bit for bit by two rebuilders,
# and verified as a downloaded copy. Only the public CLI is used.
set -euo pipefail
cd "$(dirname "$0")"
policies=../../policies
say() { printf '\n== %s\n' "$*"; }

rm -rf build attestations rebuilds keys downloaded
say "Keys: one builder, two independent rebuilders"
for who in builder rebuilder-a rebuilder-b; do
  model-verifier keygen "keys/$who" >/dev/null
done

say "Record the steps (signed by the builder)"
model-verifier record --step prepare --material data/corpus.txt --material prepare.py \
  --product build/tokenizer --product build/data --key keys/builder.key -- python prepare.py
model-verifier record --step train --material build/tokenizer --material build/data \
  --material train.py --product build/weights.safetensors --product build/metrics.json \
  --env OMP_NUM_THREADS=1 --key keys/builder.key -- python train.py
model-verifier record --step package --material build/weights.safetensors \
  --material build/tokenizer --material package.py --product build/model \
  --key keys/builder.key -- python package.py
if python -c 'import gguf' 2>/dev/null; then
  model-verifier record --step convert --material build/model --material convert.py \
    --product build/gguf --key keys/builder.key -- python convert.py
  gguf=yes
else
  echo "(the gguf package is not installed: the convert step is left out)"
  gguf=no
fi
ls build/model

# The sandbox rebuilds run in: bubblewrap where it can start here, else none. rebuild never
# falls back on its own (a stranger's step on the host), so the demo chooses, and says so.
if bwrap --unshare-user --cap-drop ALL --ro-bind / / true >/dev/null 2>&1; then sandbox=bwrap; else sandbox=none; fi
say "Two independent rebuilders re-run every step from the recorded commit (sandbox: $sandbox)"
for who in rebuilder-a rebuilder-b; do
  model-verifier rebuild attestations --trust-key keys/builder.pub --source . --sandbox "$sandbox" \
    --key "keys/$who.key" --out rebuilds
done

say "verify-model: the model directory, with a quorum of two rebuilders"
verify-model build/model --policy "$policies/hf-sharded.yaml" \
  --attestations attestations --attestations rebuilds
if [ "$gguf" = yes ]; then
  say "verify-model: the Q8_0 GGUF conversion, rebuilt bit for bit by both"
  verify-model build/gguf/model-q8_0.gguf --policy "$policies/hf-sharded-gguf.yaml" \
    --attestations attestations --attestations rebuilds
  say "diff: the F16 and Q8_0 conversions, tensor by tensor"
  model-verifier diff build/gguf/model-f16.gguf build/gguf/model-q8_0.gguf || true
fi

say "Verifying a downloaded model: the clean directory"
mkdir -p downloaded && cp -r build/model downloaded/tiny-mlp
verify-model downloaded/tiny-mlp --policy "$policies/hf-sharded.yaml" \
  --attestations attestations --attestations rebuilds

say "What the Hub adds on download: .gitattributes, a model card, .cache/huggingface"
printf '*.safetensors filter=lfs diff=lfs merge=lfs -text\n' > downloaded/tiny-mlp/.gitattributes
printf -- '---\nlicense: apache-2.0\n---\n# tiny-mlp\n' > downloaded/tiny-mlp/README.md
mkdir -p downloaded/tiny-mlp/.cache/huggingface/download
for file in downloaded/tiny-mlp/*.json downloaded/tiny-mlp/*.safetensors; do
  printf '0123456789abcdef\n%s\n1700000000.0\n' "$(sha256sum "$file" | cut -c1-64)" \
    > "downloaded/tiny-mlp/.cache/huggingface/download/$(basename "$file").metadata"
done
if verify-model downloaded/tiny-mlp --policy "$policies/hf-sharded.yaml" \
    --attestations attestations --attestations rebuilds; then
  echo "demo: the directory with files nobody attested was accepted" >&2; exit 1
fi
echo "(exit 1: files nobody attested are never accepted silently)"
