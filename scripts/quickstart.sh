#!/usr/bin/env bash
# Set up .venv and run the quick start: register a real scikit-learn model on
# a sqlite registry with a local artifact store, load it verified, change one
# byte in the store, and watch the next load refuse it.
#
# Usage: ./scripts/quickstart.sh [FOLDER]   (default ./quickstart-demo; a folder
# made by an earlier run is replaced, any other existing folder is refused)
set -euo pipefail

# FOLDER is taken relative to where the script was started from.
folder=${1:-quickstart-demo}
[[ $folder == /* ]] || folder=$PWD/$folder

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
# Keep the install log only when there was one.
rmdir "$log_dir" 2>/dev/null || true

exec "$python_bin" examples/quickstart.py "$folder"
