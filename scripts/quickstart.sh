#!/usr/bin/env bash
# Set up .venv and run the quick start: register a real scikit-learn model on
# a sqlite registry with a local artifact store, load it verified, change one
# byte in the store, and watch the next load refuse it.
#
# Usage: ./scripts/quickstart.sh [FOLDER]   (default ./quickstart-demo, made afresh)
set -euo pipefail

cd "$(dirname "$0")/.."
repo_root=$PWD
venv=${MLFLOW_INTEGRITY_VENV:-$repo_root/.venv}
python_bin=$venv/bin/python

log() { printf 'quickstart.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

log_dir=$(mktemp -d "${TMPDIR:-/tmp}/mlflow-integrity-quickstart.XXXXXX")

# shellcheck source=scripts/venv.sh
source "$repo_root/scripts/venv.sh"
ensure_venv examples "$log_dir"

exec "$python_bin" examples/quickstart.py "${1:-quickstart-demo}"
