# Sourced by test.sh and quickstart.sh: make sure $venv holds the package.
#
# ensure_venv EXTRA LOG_DIR creates $venv with Python 3.11 if it is missing and
# installs the package editable with the extra EXTRA, again only when setup.cfg
# or pyproject.toml changed since the last install of that extra. The caller
# sets venv, python_bin, and the functions log and die.

find_python() {
  local candidate
  for candidate in python3.11 python3; do
    # A pyenv shim can exist for a version that is not installed, so ask the
    # interpreter itself instead of trusting the name.
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' \
        >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

install_hash() {
  cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1
}

ensure_venv() {
  local extra=$1 log_dir=$2 started base_python
  local stamp=$venv/.mlflow-integrity-install-stamp-$extra

  if [[ ! -x $python_bin ]]; then
    base_python=$(find_python) ||
      die "Python 3.11 or newer is needed (python3.11 or python3 on PATH)"
    log "creating $venv with $($base_python --version)"
    "$base_python" -m venv "$venv"
  fi

  # -I keeps the working directory off sys.path, so this import only succeeds
  # when the editable install itself is in place.
  if [[ $(cat "$stamp" 2>/dev/null) == "$(install_hash)" ]] &&
    "$python_bin" -I -c 'import mlflow_integrity' >/dev/null 2>&1; then
    return 0
  fi

  log "installing mlflow-integrity[$extra] into $venv (the first time takes a few minutes)"
  started=$SECONDS
  # pip's output goes to a file: the package indexes configured on some
  # machines make it print a warning per package even with --quiet.
  if ! "$python_bin" -m pip install --disable-pip-version-check -e ".[$extra]" \
    >"$log_dir/pip.log" 2>&1; then
    tail -n 30 "$log_dir/pip.log" >&2
    die "pip install failed; see $log_dir/pip.log"
  fi
  install_hash >"$stamp"
  log "installed in $((SECONDS - started))s"
}
