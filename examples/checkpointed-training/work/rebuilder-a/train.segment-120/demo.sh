#!/usr/bin/env bash
# The checkpointed-training demo (docs/replay.md): record a training step that signs its
# checkpoint log, let two independent rebuilders each replay 3 segments chosen at random
# (a seed drawn after the log was signed), and verify the model against a replay quorum. Then a
# forged run (weights perturbed once mid-run, honest training after) is caught when its forged
# segment is replayed, and `diff` shows how far the replay lands from the logged checkpoint.
# Only the public CLI is used.
set -euo pipefail
cd "$(dirname "$0")"
policy=../../policies/checkpointed-training.yaml
say() { printf '\n== %s\n' "$*"; }
resume='python train.py --data data --from {checkpoint} --until {step} --out {out}'

rm -rf data ckpt model attestations rebuilds keys work forged
say "Keys: one builder, two independent rebuilders"
for who in builder rebuilder-a rebuilder-b; do
  model-verifier keygen "keys/$who" >/dev/null
done

say "Record the data step and the training step with its checkpoint log"
model-verifier record --step make-data --material make_data.py --product data \
  --key keys/builder.key -- python make_data.py
model-verifier record --step train --material data --material train.py --product model \
  --checkpoints ckpt --resume "$resume" --key keys/builder.key \
  -- python train.py --data data --steps 200 --every 20 --out ckpt

say "Two rebuilders each replay 3 segments chosen at random (10 in the log)"
for who in rebuilder-a rebuilder-b; do
  model-verifier rebuild attestations/train.intoto.json --source ../.. \
    --checkpoints-from ckpt --key "keys/$who.key" --trust-key keys/builder.pub \
    --out rebuilds --segments 3
done

say "verify-model: the chain, and the replay quorum of two"
verify-model model/weights.safetensors --policy "$policy" \
  --attestations attestations --attestations rebuilds

say "A forged run: the weights perturbed once after update 110, honest training after"
mkdir -p forged
FORGE_PERTURB_AT=110 model-verifier record --step train --material data --material train.py \
  --product forged/model --checkpoints forged/ckpt --out forged/attestations \
  --resume "$resume" --key keys/builder.key \
  -- python train.py --data data --steps 200 --every 20 --out forged/ckpt --model forged/model

say "Both rebuilders replay the segment ending at step 120"
# A demo cannot wait for a random draw to land on the forged segment (3 of 10 segments find
# it with probability 0.3 per rebuilder), so --segment names it; the rebuild exits 1.
for who in rebuilder-a rebuilder-b; do
  if model-verifier rebuild forged/attestations/train.intoto.json --source ../.. \
      --checkpoints-from forged/ckpt --key "keys/$who.key" --trust-key keys/builder.pub \
      --out forged/rebuilds --segment 120 --keep-workspace --workspace "work/$who"; then
    echo "demo: the forged segment was not caught" >&2; exit 1
  fi
done

say "verify-model fails the forged model, naming the segment"
if verify-model forged/model/weights.safetensors --policy "$policy" \
    --attestations attestations/make-data.intoto.json --attestations forged/attestations \
    --attestations forged/rebuilds; then
  echo "demo: the forged model passed" >&2; exit 1
fi

say "diff: the replayed checkpoint against the logged one"
replayed=$(ls -d work/rebuilder-a/train.segment-120/replay-out-*/step-000120)
model-verifier diff "$replayed" forged/ckpt/step-000120 || true
