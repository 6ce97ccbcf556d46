#!/usr/bin/env bash
# The test command: set up .venv with test requirements and ComfyUI 0.3.75, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh --dev
exec "${TCTS_VENV:-.venv}/bin/python" -m pytest -q tests "$@"
