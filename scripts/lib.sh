# shellcheck shell=bash
# Helpers shared by scripts/broker.sh, scripts/test.sh and scripts/up.sh. Source it; do not run it.
#
# Everything here is a function or a constant; sourcing it has no side effects besides defining
# them, setting ASYNCRON_ROOT and making sure cargo's bin directory is on PATH.

# The repository root, resolved from this file's location so that the scripts work from any
# working directory.
ASYNCRON_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The local broker's version is pinned: the crates.io `tansu 0.6.0` release (nisshi's former name)
# loses messages on resume, and nisshi >= 0.7 needs rustc 1.96.
NISSHI_VERSION="0.6.0"
LOCAL_BROKER_HOST="127.0.0.1"
LOCAL_BROKER_PORT="9092"
LOCAL_BROKER_ADDR="${LOCAL_BROKER_HOST}:${LOCAL_BROKER_PORT}"

# `cargo install` puts binaries into $CARGO_HOME/bin, which is not on PATH in every shell (e.g.
# CI runners, sudo). Add it so a freshly installed broker is found.
_cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in
  *":$_cargo_bin:"*) ;;
  *) PATH="$_cargo_bin:$PATH" ;;
esac
export PATH
unset _cargo_bin

# --- messages -------------------------------------------------------------------------------------
# All script messages go to stderr with the script's name, so they stand out from tool output and
# never mix into anything a caller might capture from stdout.

log() { printf '[%s] %s\n' "${LOG_TAG:-$(basename "$0" .sh)}" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# --- small checks ---------------------------------------------------------------------------------

# is_port_open HOST PORT: does something accept TCP connections there? Uses bash's /dev/tcp so no
# extra tool (nc, ss) is needed; `timeout` keeps an unroutable host from hanging the check.
is_port_open() {
  # shellcheck disable=SC2016 # $1/$2 are expanded by the inner bash, from its arguments
  timeout 2 bash -c ': <>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# wait_for_port HOST PORT TIMEOUT_SECONDS [PID]: poll until HOST:PORT accepts connections. With
# PID, give up early if that process has died (no point waiting for a crashed broker).
wait_for_port() {
  local host=$1 port=$2 timeout=$3 pid=${4:-}
  local deadline=$((SECONDS + timeout))
  until is_port_open "$host" "$port"; do
    if [[ -n $pid ]] && ! pid_running "$pid"; then
      return 1
    fi
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep 0.2
  done
}

# wait_for_http URL TIMEOUT_SECONDS: poll until URL answers with a 2xx status. Returns 1 on timeout.
wait_for_http() {
  local url=$1 timeout=$2
  local deadline=$((SECONDS + timeout))
  until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep 0.5
  done
}

# pid_running PID: is PID a running process? Unlike `kill -0` alone this says no for a zombie: a
# process that exited but was not reaped yet, which happens for orphans whose new parent (PID 1 in
# a container or VM) reaps late.
pid_running() {
  kill -0 "$1" 2>/dev/null || return 1
  local stat
  stat="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
  [[ -n $stat && $stat != Z* ]]
}

# is_pid_alive PID [PATTERN]: is PID a running process whose command line contains PATTERN? The
# pattern guards against pid files that outlived their process while the pid got reused.
is_pid_alive() {
  local pid=$1 pattern=${2:-}
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  pid_running "$pid" || return 1
  [[ -z $pattern ]] && return 0
  local args
  args="$(ps -o args= -p "$pid" 2>/dev/null)" || return 1
  [[ $args == *"$pattern"* ]]
}

# read_pid_file FILE: print the pid stored in FILE (empty if the file is missing).
read_pid_file() {
  [[ -f $1 ]] || return 0
  local pid
  pid="$(head -n 1 "$1" 2>/dev/null || true)"
  printf '%s' "${pid//[^0-9]/}"
}

# stop_pid PID NAME [TIMEOUT_SECONDS]: SIGTERM, wait up to TIMEOUT (default 15 s), then SIGKILL.
# Works for children and non-children alike (polls instead of relying on `wait`).
stop_pid() {
  local pid=$1 name=$2 timeout=${3:-15}
  pid_running "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  local deadline=$((SECONDS + timeout))
  while pid_running "$pid"; do
    if ((SECONDS >= deadline)); then
      log "$name (pid $pid) did not stop within ${timeout}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  # Reap it if it is our child (no-op otherwise).
  wait "$pid" 2>/dev/null || true
}

# --- the local broker (nisshi) --------------------------------------------------------------------

# ensure_broker_installed: build the pinned broker once per machine. Skips when the right version
# is on PATH. If another `cargo install nisshi` is already running (e.g. started by a setup script
# in another terminal), wait for it instead of starting a second ~10 minute build of the same thing.
ensure_broker_installed() {
  local want="nisshi ${NISSHI_VERSION}"
  if [[ "$(nisshi --version 2>/dev/null || true)" == "$want" ]]; then
    return 0
  fi
  if command -v pgrep >/dev/null && pgrep -f 'cargo install nisshi' >/dev/null; then
    log "another 'cargo install nisshi' is running; waiting for it to finish ..."
    while pgrep -f 'cargo install nisshi' >/dev/null; do
      sleep 5
    done
    if [[ "$(nisshi --version 2>/dev/null || true)" == "$want" ]]; then
      return 0
    fi
  fi
  log "installing the local Kafka-compatible broker ($want) with cargo install."
  log "this takes about 10 minutes, once per machine ..."
  # --features dynostore: a default-features build has no usable storage engine for memory://.
  # --locked: the dependency versions nisshi was released with (newer ones break the build).
  cargo install nisshi --version "$NISSHI_VERSION" --locked --no-default-features --features dynostore
  local got
  got="$(nisshi --version 2>/dev/null || true)"
  [[ $got == "$want" ]] || die "after installing, 'nisshi --version' prints '${got}', expected '${want}' (is ${CARGO_HOME:-$HOME/.cargo}/bin first on PATH?)"
}

# use_local_broker_if_needed: when KAFKA_BOOTSTRAP_SERVERS is unset, make sure the local broker runs
# and point everything at it. Sets STARTED_BROKER=1 only if this call started it, so the caller
# stops it on exit exactly when it was not running before (a broker the developer started by hand
# keeps running). With KAFKA_BOOTSTRAP_SERVERS set, the caller brings its own Kafka: do nothing.
STARTED_BROKER=0
use_local_broker_if_needed() {
  if [[ -n ${KAFKA_BOOTSTRAP_SERVERS:-} ]]; then
    log "using Kafka at KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS (not starting the local broker)"
    return 0
  fi
  if "$ASYNCRON_ROOT/scripts/broker.sh" status >/dev/null 2>&1; then
    log "using the local broker that is already running on $LOCAL_BROKER_ADDR"
  else
    "$ASYNCRON_ROOT/scripts/broker.sh" start
    STARTED_BROKER=1
  fi
  export KAFKA_BOOTSTRAP_SERVERS="$LOCAL_BROKER_ADDR"
  # The local broker has no join delay to configure: it holds every consumer's JoinGroup until
  # half of the consumer's session timeout has passed, in whole seconds (docs/local-kafka.md).
  # 2s makes that 1 s instead of the 3 s of the 6s default, which stays for Apache Kafka (whose
  # default group.min.session.timeout.ms refuses less). The cost: a member that cannot heartbeat
  # for 2 s (a stalled process) loses its partitions, which the local stack can afford.
  export KAFKA_SESSION_TIMEOUT="${KAFKA_SESSION_TIMEOUT:-2s}"
}

# stop_broker_if_started: the counterpart of use_local_broker_if_needed, for EXIT traps.
stop_broker_if_started() {
  if ((STARTED_BROKER)); then
    STARTED_BROKER=0
    "$ASYNCRON_ROOT/scripts/broker.sh" stop || true
  fi
}

# --- PostgreSQL -----------------------------------------------------------------------------------

LOCAL_PG_URL="postgres://postgres@127.0.0.1:5432/postgres"

# database_url_for DB [BASE_URL]: BASE_URL (default $DATABASE_URL, else the local server) with its
# database name replaced by DB; user, password, host, port and ?parameters are kept. Lets one
# DATABASE_URL choose the server while every service keeps its own database.
database_url_for() {
  local db=$1 base=${2:-${DATABASE_URL:-$LOCAL_PG_URL}}
  local re='^([a-zA-Z][a-zA-Z0-9+.-]*://[^/?]*)(/[^?]*)?(\?.*)?$'
  [[ $base =~ $re ]] || die "cannot parse DATABASE_URL '$base' (expected postgres://user[:password]@host[:port][/db][?params])"
  printf '%s/%s%s' "${BASH_REMATCH[1]}" "$db" "${BASH_REMATCH[3]}"
}

# pg_reachable URL: does a PostgreSQL server answer there? pg_isready only checks that the server
# accepts connections (not credentials or that the database exists), which is what we want here.
# Without pg_isready (postgresql-client not installed), fall back to a TCP check of 127.0.0.1:5432
# for the local default.
pg_reachable() {
  local url=$1
  if command -v pg_isready >/dev/null; then
    pg_isready -q -t 3 -d "$url" >/dev/null 2>&1
  elif [[ $url == "$LOCAL_PG_URL" ]]; then
    is_port_open 127.0.0.1 5432
  else
    log "pg_isready not found (apt-get install postgresql-client); assuming $url is reachable"
    return 0
  fi
}

# ensure_postgres: make sure the PostgreSQL server the services and tests use is up.
# - DATABASE_URL set: that server must answer; nothing is started (it may be remote).
# - unset: the local server on 127.0.0.1:5432. If it is down and a Debian cluster is installed
#   (/etc/postgresql/<version>/main), start it with pg_ctlcluster and wait; else explain.
ensure_postgres() {
  if [[ -n ${DATABASE_URL:-} ]]; then
    local admin_url
    admin_url="$(database_url_for postgres "$DATABASE_URL")"
    pg_reachable "$admin_url" || die "PostgreSQL at DATABASE_URL ($(redact_url "$DATABASE_URL")) does not answer. Start it, or unset DATABASE_URL to use the local server on 127.0.0.1:5432."
    check_pg_login "$admin_url"
    return 0
  fi

  if ! pg_reachable "$LOCAL_PG_URL"; then
    local version=""
    if [[ -d /etc/postgresql ]]; then
      # The newest installed version that has a `main` cluster.
      version="$(find /etc/postgresql -mindepth 2 -maxdepth 2 -type d -name main -printf '%h\n' 2>/dev/null |
        xargs -r -n1 basename | sort -V | tail -n 1)"
    fi
    if [[ -z $version ]] || ! command -v pg_ctlcluster >/dev/null; then
      die "no PostgreSQL answers on 127.0.0.1:5432 and no local cluster is installed.
  Either install one (Debian: apt-get install postgresql; the scripts expect user 'postgres' with
  trust auth on 127.0.0.1), or point DATABASE_URL at a server you have, e.g.
  DATABASE_URL=postgres://user:password@host:5432/postgres (services create their databases)."
    fi
    log "PostgreSQL is not running; starting the local cluster $version/main ..."
    # --skip-systemctl-redirect: there is no systemd in containers and CI runners.
    local sudo=()
    if ((EUID != 0)); then
      sudo=(sudo -n)
    fi
    "${sudo[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
      die "could not start PostgreSQL ($version/main); start it yourself or set DATABASE_URL"
    local deadline=$((SECONDS + 30))
    until pg_reachable "$LOCAL_PG_URL"; do
      ((SECONDS < deadline)) || die "PostgreSQL $version/main did not accept connections within 30s"
      sleep 0.5
    done
    log "PostgreSQL $version/main is up on 127.0.0.1:5432"
  fi
  check_pg_login "$LOCAL_PG_URL"
}

# check_pg_login URL: with psql available, check that we can actually log in, so a wrong password or
# pg_hba.conf rule fails here with PostgreSQL's own message instead of deep inside a test.
check_pg_login() {
  local url=$1 err
  command -v psql >/dev/null || return 0
  if ! err="$(psql "$url" -X -A -t -q -c 'select 1' 2>&1 >/dev/null)"; then
    die "PostgreSQL answers but login failed for $(redact_url "$url"): ${err}"
  fi
}

# redact_url URL: hide the password in messages.
redact_url() {
  sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#' <<<"$1"
}
