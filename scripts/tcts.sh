#!/usr/bin/env bash
# The main job: set up .venv on first use, then run the tcts CLI (python -m tcts ...).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bash "$here/scripts/setup_env.sh"
cd "$here"
exec "${TCTS_VENV:-.venv}/bin/python" -m tcts "$@"
