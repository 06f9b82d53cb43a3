#!/usr/bin/env bash
# Set up the development environment and run the test suite.
#
# Usage: ./scripts/test.sh [pytest args]
#
# Creates .venv with Python 3.11 if it is missing, installs the package with its
# test extras (again only when setup.cfg or pyproject.toml changed), starts a
# throwaway PostgreSQL and a moto S3 server on free ports of 127.0.0.1, runs
# pytest with their addresses in the environment and stops both on exit. The
# exit code is pytest's.
#
# Environment:
#   MLFLOW_INTEGRITY_VENV                where the virtualenv lives (default .venv)
#   MLFLOW_INTEGRITY_TEST_POSTGRES_URI   if already set, that database is used
#                                        and no PostgreSQL is started
#   MLFLOW_INTEGRITY_TEST_S3_ENDPOINT    if already set, that endpoint is used
#                                        and no moto server is started
set -euo pipefail

cd "$(dirname "$0")/.."
repo_root=$PWD
venv=${MLFLOW_INTEGRITY_VENV:-$repo_root/.venv}
python_bin=$venv/bin/python
service_timeout=60

log() { printf 'test.sh: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# Logs of the install and of the services; kept after the run.
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/mlflow-integrity-test.XXXXXX")
# The PostgreSQL user must be able to reach its data directory inside.
chmod 755 "$run_dir"
log "logs in $run_dir"

# --- virtualenv -------------------------------------------------------------

# shellcheck source=scripts/venv.sh
source "$repo_root/scripts/venv.sh"
ensure_venv test "$run_dir"

# --- services ---------------------------------------------------------------

moto_pid=
pg_running=
pg_data=$run_dir/pgdata
as_pg=()

# shellcheck disable=SC2317  # invoked through the trap below
cleanup() {
  local status=$?
  trap - EXIT INT TERM

  if [[ -n $moto_pid ]]; then
    kill "$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
  fi
  if [[ -n $pg_running ]]; then
    (cd "$run_dir" &&
      "${as_pg[@]}" "$pg_bindir/pg_ctl" -D "$pg_data" -m immediate -w stop) \
      >/dev/null 2>&1 || true
  fi
  rm -rf "$pg_data"

  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  "$python_bin" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

find_pg_bindir() {
  local dir
  if command -v initdb >/dev/null 2>&1; then
    dir=$(dirname "$(readlink -f "$(command -v initdb)")")
    if [[ -x $dir/pg_ctl && -x $dir/createdb ]]; then
      echo "$dir"
      return 0
    fi
  fi
  for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    if [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/createdb ]]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

install_postgres() {
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    return 1
  fi
  log "PostgreSQL not found; trying apt-get install postgresql (log: $run_dir/apt.log)"
  {
    apt-get update &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
  } >"$run_dir/apt.log" 2>&1
}

start_postgres() {
  local pg_user port sock_dir pg_log="$run_dir/postgres.log"

  # initdb refuses to run as root, so root hands the server to an
  # unprivileged system user.
  if [[ $(id -u) -eq 0 ]]; then
    pg_user=postgres
    if ! id "$pg_user" >/dev/null 2>&1; then
      useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$pg_user"
    fi
    as_pg=(runuser -u "$pg_user" --)
  else
    pg_user=$(id -un)
  fi

  sock_dir=$run_dir/pgsocket
  mkdir -p "$pg_data" "$sock_dir"
  touch "$pg_log"
  if [[ $(id -u) -eq 0 ]]; then
    chown "$pg_user:" "$pg_data" "$sock_dir" "$pg_log"
  fi

  port=$(free_port)
  (cd "$run_dir" &&
    "${as_pg[@]}" "$pg_bindir/initdb" -D "$pg_data" -U postgres --auth=trust \
      --encoding=UTF8 --no-locale --no-sync) >"$run_dir/initdb.log" 2>&1 ||
    die "initdb failed; see $run_dir/initdb.log"

  # Durability is pointless for a database deleted at exit.
  (cd "$run_dir" &&
    "${as_pg[@]}" "$pg_bindir/pg_ctl" -D "$pg_data" -l "$pg_log" -w \
      -t "$service_timeout" start -o "-h 127.0.0.1 -p $port -k '$sock_dir' \
        -c fsync=off -c synchronous_commit=off -c full_page_writes=off") \
    >>"$run_dir/initdb.log" 2>&1 ||
    die "PostgreSQL did not start within ${service_timeout}s; see $pg_log"
  pg_running=1

  "$pg_bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres mlflow_integrity_test ||
    die "could not create the test database; see $pg_log"

  export MLFLOW_INTEGRITY_TEST_POSTGRES_URI="postgresql://postgres@127.0.0.1:$port/mlflow_integrity_test"
  log "PostgreSQL on 127.0.0.1:$port (log: $pg_log)"
}

start_moto() {
  local port url moto_log="$run_dir/moto.log" deadline

  port=$(free_port)
  url=http://127.0.0.1:$port
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$moto_log" 2>&1 &
  moto_pid=$!

  deadline=$((SECONDS + service_timeout))
  until "$python_bin" -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)' "$url" >/dev/null 2>&1; do
    if ! kill -0 "$moto_pid" 2>/dev/null; then
      die "the moto S3 server exited during startup; see $moto_log"
    fi
    if ((SECONDS >= deadline)); then
      die "the moto S3 server did not answer within ${service_timeout}s; see $moto_log"
    fi
    sleep 0.2
  done

  export MLFLOW_INTEGRITY_TEST_S3_ENDPOINT=$url
  log "moto S3 server on $url (log: $moto_log)"

  # Dummy credentials for moto, whatever the caller had: a test that forgets
  # the endpoint must not reach a real account, and boto3 must not fall back
  # to an instance metadata service.
  unset AWS_PROFILE AWS_SESSION_TOKEN
  export AWS_ACCESS_KEY_ID=testing
  export AWS_SECRET_ACCESS_KEY=testing
  export AWS_DEFAULT_REGION=us-east-1
  export AWS_EC2_METADATA_DISABLED=true
}

if [[ -n ${MLFLOW_INTEGRITY_TEST_POSTGRES_URI:-} ]]; then
  log "using PostgreSQL from MLFLOW_INTEGRITY_TEST_POSTGRES_URI"
elif pg_bindir=$(find_pg_bindir) || { install_postgres && pg_bindir=$(find_pg_bindir); }; then
  start_postgres
else
  log "PostgreSQL server binaries not found and could not be installed;" \
    "the PostgreSQL tests will be skipped"
fi

if [[ -n ${MLFLOW_INTEGRITY_TEST_S3_ENDPOINT:-} ]]; then
  log "using the S3 endpoint from MLFLOW_INTEGRITY_TEST_S3_ENDPOINT"
else
  start_moto
fi

# --- tests ------------------------------------------------------------------

status=0
"$python_bin" -m pytest "$@" || status=$?
exit "$status"
