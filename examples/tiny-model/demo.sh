#!/usr/bin/env bash
# The tiny-model demo: record a three-step model build, verify it, catch a tampered copy and a
# step that reads a file it did not declare, rebuild it independently twice, require a quorum
# of two rebuilders, and show what a rebuild under a drifted environment looks like. Steps run
# in the bubblewrap sandbox (no network, read-only system, workspace the only writable place)
# and are traced with strace when those are installed. Only the public CLI is used.
set -euo pipefail
cd "$(dirname "$0")"
policies=../../policies
say() { printf '\n== %s\n' "$*"; }

rm -rf build attestations rebuilds keys work tampered
say "Keys: one builder, three independent rebuilders"
for who in builder rebuilder-a rebuilder-b rebuilder-c; do
  model-verifier keygen "keys/$who" >/dev/null
done
ls keys

# The sandbox the steps run in: bubblewrap where it can start here, else none. rebuild never
# falls back on its own (a stranger's step on the host), so the demo says which it chose.
if bwrap --unshare-user --cap-drop ALL --ro-bind / / true >/dev/null 2>&1; then sandbox=bwrap; else sandbox=none; fi
say "Record the three build steps (signed by the builder; sandbox: $sandbox)"
# Each step also declares which of its files are openness components and under which licence
# (signed; see docs/openness.md), and the data step signs digests of its training records.
model-verifier record --step prepare-data --material data/iris.csv --material prepare.py \
  --product build/data --key keys/builder.key \
  --component training-data=data/iris.csv --component data-processing-code=prepare.py \
  --material-license data/iris.csv=CC-BY-4.0 --material-license prepare.py=Apache-2.0 \
  --record-digests build/data/train.csv -- python prepare.py
model-verifier record --step train --material build/data/train.csv --material train.py \
  --product build/weights.safetensors --product build/train-log.json \
  --env OMP_NUM_THREADS=1 --key keys/builder.key \
  --component training-code=train.py --component weights=build/weights.safetensors \
  --material-license train.py=Apache-2.0 \
  --material-license build/weights.safetensors=Apache-2.0 -- python train.py
model-verifier record --step package --material build/weights.safetensors \
  --material build/data/stats.json --material package.py --product build/model \
  --key keys/builder.key --component model-architecture=build/model/config.json \
  --material-license build/model/config.json=Apache-2.0 -- python package.py

say "verify-model: the signed chain of build/model/model.safetensors"
verify-model build/model/model.safetensors --policy "$policies/tiny-model.yaml"

say "A step that reads a file it did not declare is caught"
# evaluate declares the model and predict.py, but predict.py also reads the test split.
if command -v strace >/dev/null 2>&1; then
  if model-verifier record --step evaluate --strict --material predict.py \
      --material build/model --product build/accuracy.txt --key keys/builder.key \
      --out build/refused -- sh -c 'python predict.py > build/accuracy.txt'; then
    echo "demo: the undeclared input was not caught" >&2; exit 1
  fi
  echo "(exit 2: refused with --strict; without it, the list is signed into the attestation)"
else
  echo "(strace is not installed: skipped; record then only warns about files named in argv)"
fi

say "A copy of the model with one weight changed must fail"
mkdir -p tampered && cp build/model/* tampered/
python - <<'PY'
from safetensors.numpy import load_file, save_file
tensors = load_file("tampered/model.safetensors")
tensors["layers.1.bias"][0] += 0.001
save_file(tensors, "tampered/model.safetensors")
PY
if verify-model tampered/model.safetensors --policy "$policies/tiny-model.yaml"; then
  echo "demo: the tampered model was accepted" >&2; exit 1
fi
echo "(exit 1: rejected, as it must be)"

say "Two independent rebuilders re-run every step, sandboxed, in workspaces from the recorded commit"
for who in rebuilder-a rebuilder-b; do
  model-verifier rebuild attestations --trust-key keys/builder.pub --source . \
    --sandbox "$sandbox" --key "keys/$who.key" --out rebuilds
done

say "verify-model with a quorum of 2 rebuilders"
verify-model build/model/model.safetensors --policy "$policies/tiny-model-rebuilt.yaml" \
  --attestations attestations --attestations rebuilds

say "rebuilder-c rebuilds the train step alone, with OMP_NUM_THREADS=2"
if model-verifier rebuild attestations/train.intoto.json --trust-key keys/builder.pub \
    --step train --materials-from build --sandbox "$sandbox" \
    --env OMP_NUM_THREADS=2 --key keys/rebuilder-c.key --out rebuilds \
    --workspace work/rebuilder-c --keep-workspace; then
  echo "demo: the drifted rebuild was expected to differ" >&2; exit 1
fi

say "diff: which tensors moved, and by how much"
model-verifier diff work/rebuilder-c/train/build/weights.safetensors build/weights.safetensors \
  --limit 4 || true

say "verify-model again: the quorum still holds; rebuilder-c's --env run is reported as a probe, never as dissent"
verify-model build/model/model.safetensors --policy "$policies/tiny-model-rebuilt.yaml" \
  --attestations attestations --attestations rebuilds

say "openness: which components the chain attests, pinned and rebuilt (golden copy: openness.txt)"
model-verifier openness build/model/model.safetensors \
  --policy "$policies/tiny-model-rebuilt.yaml" --attestations attestations \
  --attestations rebuilds | tee build/openness.txt

say "contamination: were the held-out test rows in the training data? (from signed digests only)"
if model-verifier contamination build/model/model.safetensors \
    --policy "$policies/tiny-model-rebuilt.yaml" --attestations attestations \
    --attestations rebuilds --digests-from attestations --benchmark build/data/test.csv; then
  echo "(no test row is in the training data)"
else
  echo "(exit 1: overlap above the policy's max_benchmark_overlap, 0 when it sets none)"
fi

say "audit: the whole attestation graph, with every gap and risk named"
model-verifier audit attestations rebuilds --policy "$policies/tiny-model-rebuilt.yaml"
model-verifier audit attestations rebuilds --policy "$policies/tiny-model-rebuilt.yaml" \
  --format html --output build/audit.html >/dev/null
echo "HTML report (open it in a browser): $PWD/build/audit.html"
