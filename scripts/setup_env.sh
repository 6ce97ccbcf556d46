#!/usr/bin/env bash
# Create/refresh the project virtualenv (.venv) with the CPU torch 2.13.0 wheel and the requirements.
# Usage: bash scripts/setup_env.sh [--dev]   (--dev adds test requirements and the real ComfyUI)
# torch is always installed under a constraint: letting pip resolve another torch would pull several
# GB of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TCTS_VENV:-.venv}
TORCH_SPEC=${TCTS_TORCH:-torch==2.13.0}
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "$TORCH_SPEC" > "$constraints"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"$VENV/bin/python" -c "import torch" 2>/dev/null || "${PIP[@]}" "$TORCH_SPEC"
"${PIP[@]}" -c "$constraints" -r requirements.txt
if [ "${1:-}" = "--dev" ]; then
  "${PIP[@]}" -c "$constraints" -r requirements-dev.txt
  "$VENV/bin/python" -m tests.support.comfyui setup   # ComfyUI 0.3.75 into .cache/ + its requirements
fi
