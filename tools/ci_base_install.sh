#!/usr/bin/env bash
# CI job: `pip install .` with NO extras into a fresh venv (versions pinned by the test lock, used as constraints),
# then, offline, the metric's language fidelity, the loader and an export read back by plain `datasets`
# (tools/check_base_install.py). Run from the repository root: bash tools/ci_base_install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PY:-python3}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
start=$SECONDS
"$PY" -m venv "$TMP/venv"
"$TMP/venv/bin/python" -m pip install -q -U pip -c requirements/test.lock
# A copy of the tree, so that the build leaves nothing in the checkout (build/, *.egg-info).
git ls-files -z | tar --null -T - -cf - | (mkdir "$TMP/src" && tar -xf - -C "$TMP/src")
"$TMP/venv/bin/python" -m pip install -q -c requirements/test.lock "$TMP/src"
size=$(du -sm "$TMP/venv/lib" | cut -f1)
echo "base install: $size MB installed in $((SECONDS - start)) s"
cd "$TMP"
env -u PYTHONPATH HF_HUB_OFFLINE=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1 HF_DATASETS_OFFLINE=1 HF_HOME="$TMP/hf" XL_SUITE_CACHE="$TMP/xl" \
    "$TMP/venv/bin/python" "$REPO/tools/check_base_install.py"
