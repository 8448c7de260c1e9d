#!/usr/bin/env bash
# The segment-replay demo (docs/replay.md): record a checkpointed training run, let two
# independent rebuilders each replay 3 of its 10 segments chosen at random, and pass
# verify-model on the replay quorum; then forge a run (weights perturbed once after update 110,
# honest training after), catch it when its forged segment is replayed, and let `diff` show how
# far the replay lands from the logged checkpoint. Runs in a fresh temporary directory, outside
# any git repository, with the public CLI only.
set -euo pipefail
example="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
cp "$example/make_data.py" "$example/train.py" "$example/policy.yaml" .
say() { printf '\n== %s\n' "$*"; }
# The sandbox rebuilds run in: bubblewrap where it can start here, else none. rebuild never
# falls back on its own (a stranger's step on the host), so the demo chooses, and says so.
if bwrap --unshare-user --cap-drop ALL --ro-bind / / true >/dev/null 2>&1; then sandbox=bwrap; else sandbox=none; fi
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

quiet() { grep -v '^plan:\|^    \|^  train segment\|^train.py:' || true; }

say "Keys: one builder, two independent rebuilders"
for who in builder rebuilder-a rebuilder-b; do model-verifier keygen "keys/$who" >/dev/null; done

say "Record an honest run: a checkpoint every 20 steps, the log signed with the step"
record_run honest

say "Two rebuilders replay 3 segments each, chosen by a seed each draws now, after signing"
(cd honest
 for who in a b; do
   model-verifier rebuild attestations/train.intoto.json --source . --segments 3 --sandbox "$sandbox" \
     --trust-key keys/builder.pub --key "keys/rebuilder-$who.key" --out rebuilds | quiet
 done)

say "verify-model: both replays matched bit for bit"
(cd honest && verify-model model --policy policy.yaml \
   --attestations attestations --attestations rebuilds)

say "Forge a run: the weights perturbed once after update 110, honest training after"
record_run forged FORGE_PERTURB_AT=110

say "Both rebuilders replay the forged segment, 100->120, named with --segment"
# A random choice of 3 of 10 segments finds the one forged segment with probability 0.3 per
# rebuilder; a demo cannot wait for that draw, so it names the segment (the rebuild exits 1).
(cd forged
 for who in a b; do
   if model-verifier rebuild attestations/train.intoto.json --source . --segment 120 --sandbox "$sandbox" \
       --trust-key keys/builder.pub --key "keys/rebuilder-$who.key" --out rebuilds \
       --keep-workspace --workspace "$work/replay-$who" | quiet; then :; fi
 done)

say "verify-model: the segment 100->120 DIFFERS, so the forged run fails"
if (cd forged && verify-model model --policy policy.yaml \
      --attestations attestations --attestations rebuilds); then
  echo "demo: the forged run passed" >&2; exit 1
fi

say "diff: what the replay wrote against the logged checkpoint 120"
(cd forged && model-verifier diff "$work"/replay-a/train.segment-120/replay-out-*/step-000120 \
   ckpt/step-000120 || true)
echo
echo "demo: the honest run passed, the forged segment was caught"
