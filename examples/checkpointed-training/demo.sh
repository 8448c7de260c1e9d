#!/usr/bin/env bash
# The segment-replay demo (docs/replay.md): record a checkpointed training run, let two
# rebuilders each replay 3 of its 10 segments, pass verify-model; then forge a run (weights
# perturbed once at step 100, honest training after) and watch the replay catch the segment.
# Runs in a fresh temporary directory, outside any git repository, with the public CLI only.
set -euo pipefail
example="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
cp "$example/make_data.py" "$example/train.py" "$example/policy.yaml" .
say() { printf '\n== %s\n' "$*"; }
# The seeds are fixed so that the demo prints the same every time; a real rebuilder leaves
# --seed out and a fresh one is drawn after the log was signed.
SEED_A=$(printf '02%.0s' {1..32})
SEED_B=$(printf '01%.0s' {1..32})
RESUME="python train.py --data data --from {checkpoint} --until {step} --out {out}"

record_run() {  # record_run DIR [VAR=VALUE...]: the two steps, signed by the builder
  local dir=$1; shift
  mkdir -p "$dir" && cp make_data.py train.py policy.yaml "$dir/" && cp -r keys "$dir/"
  (cd "$dir"
   model-verifier record --step make-data --material make_data.py --product data \
     --key keys/builder.key -- python make_data.py
   env "$@" model-verifier record --step train --material data --material train.py \
     --product model --env OPENBLAS_NUM_THREADS=1 --checkpoints ckpt --resume "$RESUME" \
     --key keys/builder.key -- python train.py --data data --steps 200 --every 20 --out ckpt)
}

replay_both() {  # replay_both DIR: each rebuilder replays 3 segments of its own choosing
  (cd "$1"
   for who in a:$SEED_A b:$SEED_B; do
     model-verifier rebuild attestations/train.intoto.json --source . --segments 3 \
       --seed "${who#*:}" --trust-key keys/builder.pub --key "keys/rebuilder-${who%%:*}.key" \
       --out rebuilds | grep -v '^plan:\|^    \|^  train segment\|^train.py:' || true
   done)
}

say "Keys: one builder, two independent rebuilders"
for who in builder rebuilder-a rebuilder-b; do model-verifier keygen "keys/$who" >/dev/null; done

say "Record an honest run: a checkpoint every 20 steps, the log signed with the step"
record_run honest

say "Two rebuilders replay 3 segments each, chosen by a seed drawn after signing"
replay_both honest

say "verify-model: both replays matched bit for bit"
(cd honest && verify-model model/weights.safetensors --policy policy.yaml \
   --attestations attestations --attestations rebuilds)

say "Forge a run: the weights perturbed once at step 100, honest training after"
record_run forged FORGE_PERTURB_AT=100
replay_both forged

say "verify-model: the segment ending at 100 DIFFERS, so the run fails"
if (cd forged && verify-model model/weights.safetensors --policy policy.yaml \
      --attestations attestations --attestations rebuilds); then
  echo "demo: the forged run passed" >&2; exit 1
fi

say "diff: the replayed checkpoint 100 against the logged one"
(cd forged
 model-verifier rebuild attestations/train.intoto.json --source . --segment 100 \
   --trust-key keys/builder.pub --key keys/rebuilder-a.key --out rebuilds-100 \
   --keep-workspace -q > rebuild.txt 2>&1 || true
 kept=$(sed -n 's/^ *in: *//p' rebuild.txt)  # the kept workspace of the segment
 ln -s "$kept" replayed
 model-verifier diff ckpt/step-000100 replayed/replay-out-*/step-000100 || true
 rm -rf "$(dirname "$kept")")
echo
echo "demo: the honest run passed, the forged segment was caught"
