#!/usr/bin/env bash
# How both actions get model-verifier (their `install` input), shared so that they install the
# same thing the same way. Reads INPUT_INSTALL, ACTION_PATH (the calling action's folder), TOOL
# (the command it needs: model-verifier or verify-model) and TITLE (for its error lines); writes
# TOOL=PATH to GITHUB_OUTPUT.
#   action  this repository, into a private virtual environment, its dependencies from
#           requirements.txt beside this script with `pip install --require-hashes`
#   skip    TOOL is already on PATH
#   FILE    a requirements file of your own (relative to the working directory), every line
#           pinned with its hashes, model-verifier included; installed with --require-hashes
set -euo pipefail
fail() { echo "::error title=$TITLE::$1"; exit 2; }

if [ "$INPUT_INSTALL" = skip ]; then
  found="$(command -v "$TOOL")" || fail "install: skip, but $TOOL is not on PATH."
  echo "$TOOL=$found" >> "$GITHUB_OUTPUT"
  exit 0
fi
# A private environment: the step's own `python` keeps its packages and PATH. An earlier use of
# either action in the same job has already filled it.
venv="${RUNNER_TEMP:-/tmp}/model-verifier-venv"
if [ -x "$venv/bin/$TOOL" ]; then
  echo "$TOOL=$venv/bin/$TOOL" >> "$GITHUB_OUTPUT"
  exit 0
fi
pip_install() {
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$@"
}
if [ "$INPUT_INSTALL" = action ]; then
  root="$(cd "$ACTION_PATH/../../.." && pwd)"
  pinned="$(cd "$ACTION_PATH/.." && pwd)/requirements.txt"
  # The hashes are those of the wheels for one interpreter and machine: say so, rather than
  # let pip call every wheel a hash mismatch.
  here="$(python3 -c 'import platform, sys; print(f"CPython {sys.version_info[0]}.{sys.version_info[1]} on {sys.platform} {platform.machine()}")')" \
    || fail "install: action needs python3 on PATH (actions/setup-python, python-version 3.11)."
  wanted="$(sed -n 's/^# with CPython \([0-9]*\.[0-9]*\)[.0-9]* on \([a-z]*\) \([A-Za-z0-9_]*\);.*/CPython \1 on \2 \3/p' "$pinned")"
  if [ "$here" != "$wanted" ]; then
    fail "install: action installs from .github/actions/requirements.txt, pinned for $wanted, but python3 here is $here: use actions/setup-python with that version, or install: with a hash-pinned requirements file of your own (.github/actions/refresh-requirements.py writes one)."
  fi
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  pip_install --require-hashes --only-binary=:all: -r "$pinned"
  # Its dependencies are all in place: build the project alone, offline, with the pinned
  # setuptools, so nothing unpinned is fetched.
  pip_install --no-deps --no-index --no-build-isolation "$root"
else
  [ -f "$INPUT_INSTALL" ] \
    || fail "install: '$INPUT_INSTALL' is not action, skip or a requirements file (pinned with --hash, installed with --require-hashes)."
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  pip_install --require-hashes -r "$INPUT_INSTALL"
fi
[ -x "$venv/bin/$TOOL" ] || fail "install: $INPUT_INSTALL installed no $TOOL command."
echo "$TOOL=$venv/bin/$TOOL" >> "$GITHUB_OUTPUT"
