#!/usr/bin/env bash
# Create or refresh the project virtualenv (.venv): the CPU build of torch 2.13.0 and the requirements.
# Usage: bash scripts/setup_env.sh [--dev]
#   --dev adds the test requirements, a real ComfyUI 0.3.75 tree in .cache/ with its requirements, and
#   Debian's chromium for the browser tests (installed with apt-get when running as root).
# torch is always installed under a constraint: letting pip resolve another torch would pull several GB of
# CUDA wheels. A stamp in the venv records what was installed: when the requirement files, the torch spec
# and the mode are unchanged, a later run does not call pip at all.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TCTS_VENV:-.venv}
TORCH_SPEC=${TCTS_TORCH:-torch==2.13.0}
MODE=${1:-}
STAMP="$VENV/.tcts-setup-stamp"

files=(requirements.txt)
[ "$MODE" = "--dev" ] && files+=(requirements-dev.txt tests/support/comfyui_tree.py)
want=$( { echo "$TORCH_SPEC $MODE"; cat "${files[@]}"; } | sha256sum | cut -d' ' -f1)

have_chromium() { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }

ensure_chromium() {
  have_chromium && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "tcts set-up: installing Debian's chromium for the browser tests (apt-get, about 300 MB)" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "tcts set-up: chromium is missing and cannot be installed here (needs root and apt-get);" \
         "the browser tests will be skipped (CI=true makes them fail)" >&2
  fi
}

tree_ready() { [ -n "${COMFYUI_PATH:-}" ] || [ -f .cache/comfyui/ComfyUI-0.3.75/.tcts-comfyui.json ]; }

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
   && { [ "$MODE" != "--dev" ] || tree_ready; }; then
  [ "$MODE" = "--dev" ] && ensure_chromium
  exit 0
fi

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "$TORCH_SPEC" > "$constraints"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
if [ ! -x "$VENV/bin/python" ]; then
  echo "tcts set-up: first run, creating $VENV: $TORCH_SPEC (CPU build, about 750 MB) and the requirements" \
       "(about 250 MB)$( [ "$MODE" = "--dev" ] && echo ", plus the test tools and ComfyUI 0.3.75 with its" \
       "frontend (about 1 GB)"). This takes a few minutes once; later runs skip it." >&2
  python3 -m venv "$VENV"
else
  echo "tcts set-up: the requirements changed; updating $VENV" >&2
fi
"$VENV/bin/python" -c "import torch" 2>/dev/null || "${PIP[@]}" "$TORCH_SPEC"
"${PIP[@]}" -c "$constraints" -r requirements.txt
if [ "$MODE" = "--dev" ]; then
  "${PIP[@]}" -c "$constraints" -r requirements-dev.txt
  "$VENV/bin/python" -m tests.support.comfyui_tree setup >/dev/null  # ComfyUI 0.3.75 into .cache/ + its requirements
  ensure_chromium
fi
echo "$want" > "$STAMP"
echo "tcts set-up: done ($(du -sh "$VENV" | cut -f1) in $VENV)" >&2
