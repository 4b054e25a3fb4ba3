#!/usr/bin/env bash
# Run the whole system locally without Docker: broker, PostgreSQL check, the four services.
#
#   scripts/up.sh [SERVICE...]     default: all of catalog-cache orders notifications report-exporter
#
# 1. Checks dependencies like scripts/test.sh: the local broker is started when
#    KAFKA_BOOTSTRAP_SERVERS is unset (and stopped again at the end), PostgreSQL must answer.
# 2. Builds the services (cargo build --release) and starts them from target/release; with
#    UP_PROFILE=dev, a debug build (cargo build) from target/debug instead: quicker to build once
#    the tests have built the workspace, slower to run (scripts/test-new-service.sh uses it).
# 3. Waits until every GET /health/ready answers 200 (UP_READY_TIMEOUT, default 60 s); if one does
#    not, prints its last log lines, stops everything and exits 1.
# 4. Streams all logs, prefixed with the service name, and keeps a copy in target/up/<service>.log.
# 5. Supervises like compose's `restart: unless-stopped`: a service that exits (crash, kill -9,
#    even a clean exit) is started again after 1 s.
# 6. Ctrl-C / SIGTERM: SIGTERM to every service, SIGKILL after 15 s, broker stopped if this script
#    started it; no process is left behind. (Started with `&` from another script, up.sh ignores
#    SIGINT like every background job of a non-interactive shell: stop it with SIGTERM.)
#    Pids are in target/up/<service>.pid, e.g. for crash tests: kill -9 $(cat target/up/orders.pid)
#
# Configuration: up.sh's environment is passed to the services, so any setting can be overridden,
# e.g. `PAYMENT_TIMEOUT=10s scripts/up.sh`. Two exceptions, because each service needs its own:
# HTTP_ADDR is always 127.0.0.1:<the service's port>, and DATABASE_URL selects the server only -
# each service gets its own database on it (catalog_cache, orders, notifications, report_exporter).
# Only one up.sh runs at a time (target/up/up.pid).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=up

# name → port; the database is the name with '-' replaced by '_'.
declare -A PORTS=([catalog-cache]=8081 [orders]=8082 [notifications]=8083 [report-exporter]=8084)
ALL_SERVICES=(catalog-cache orders notifications report-exporter)

UP_DIR="$ASYNCRON_ROOT/target/up"
LOCK_FILE="$UP_DIR/up.pid"
READY_TIMEOUT="${UP_READY_TIMEOUT:-60}"
STOP_TIMEOUT=15
RESTART_DELAY=1

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

# --- arguments ------------------------------------------------------------------------------------
services=()
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      usage
      exit 0
      ;;
    -*)
      usage >&2
      die "unknown option: $arg"
      ;;
    *)
      [[ -n ${PORTS[$arg]:-} ]] || die "unknown service '$arg' (known: ${ALL_SERVICES[*]})"
      services+=("$arg")
      ;;
  esac
done
((${#services[@]})) || services=("${ALL_SERVICES[@]}")
[[ $READY_TIMEOUT =~ ^[0-9]+$ ]] || die "UP_READY_TIMEOUT must be a number of seconds, got '$READY_TIMEOUT'"

command -v curl >/dev/null || die "curl is needed for the readiness checks (apt-get install curl)"
command -v setsid >/dev/null || die "setsid (util-linux) is needed to run the services"

cd "$ASYNCRON_ROOT"
mkdir -p "$UP_DIR"

# --- single instance ------------------------------------------------------------------------------
# A second up.sh would only die on "address in use" after a long build; say so up front instead.
# noclobber makes creating the lock file atomic: of two racing starts only one wins.
acquire_lock() {
  if (set -o noclobber && printf '%s\n' "$$" >"$LOCK_FILE") 2>/dev/null; then
    return 0
  fi
  local pid
  pid="$(read_pid_file "$LOCK_FILE")"
  if [[ -n $pid ]] && is_pid_alive "$pid" up.sh; then
    log "already running (pid $pid). Stop it with Ctrl-C in its terminal or: kill $pid"
    exit 1
  fi
  # Stale lock: the previous up.sh was killed with SIGKILL and could not clean up.
  reap_leftovers
  rm -f "$LOCK_FILE"
  (set -o noclobber && printf '%s\n' "$$" >"$LOCK_FILE") 2>/dev/null ||
    die "another scripts/up.sh is starting right now"
}

# After a SIGKILLed up.sh its supervisors (and so its services) live on and would keep restarting
# the services. Their pid files are still there: stop them, checking each pid is really ours.
reap_leftovers() {
  local file pid name
  for file in "$UP_DIR"/*.supervisor.pid; do
    [[ -e $file ]] || continue
    pid="$(read_pid_file "$file")"
    if [[ -n $pid ]] && is_pid_alive "$pid" up.sh; then
      log "stopping a supervisor left over from a killed up.sh (pid $pid)"
      stop_pid "$pid" supervisor "$((STOP_TIMEOUT + 5))"
    fi
    rm -f "$file"
  done
  for name in "${ALL_SERVICES[@]}"; do
    pid="$(read_pid_file "$UP_DIR/$name.pid")"
    if [[ -n $pid ]] && is_pid_alive "$pid" "$name"; then
      log "stopping $name left over from a killed up.sh (pid $pid)"
      stop_pid "$pid" "$name" "$STOP_TIMEOUT"
    fi
    rm -f "$UP_DIR/$name.pid"
  done
}
acquire_lock
LOCKED=1

# --- shutdown -------------------------------------------------------------------------------------
declare -A SUPERVISORS=() # service name → pid of its supervisor subshell
SHUTTING_DOWN=0

# Stop everything this script started. Runs once, from the INT/TERM traps or the EXIT trap.
# shellcheck disable=SC2317 # only called from traps, which shellcheck does not follow
shutdown() {
  ((SHUTTING_DOWN)) && return 0
  SHUTTING_DOWN=1
  trap '' INT TERM # a second Ctrl-C must not interrupt the cleanup half-way
  local name pid
  if ((${#SUPERVISORS[@]})); then
    log "stopping services (SIGTERM, SIGKILL after ${STOP_TIMEOUT}s) ..."
    # Each supervisor stops its own service when it gets SIGTERM (and does not restart it).
    for name in "${!SUPERVISORS[@]}"; do
      kill -TERM "${SUPERVISORS[$name]}" 2>/dev/null || true
    done
    for name in "${!SUPERVISORS[@]}"; do
      wait "${SUPERVISORS[$name]}" 2>/dev/null || true
      rm -f "$UP_DIR/$name.supervisor.pid"
    done
  fi
  # Belt and braces: a service whose supervisor died before it could stop it (e.g. killed from
  # outside) is still recorded in its pid file.
  for name in "${services[@]}"; do
    pid="$(read_pid_file "$UP_DIR/$name.pid")"
    if [[ -n $pid ]] && is_pid_alive "$pid" "$name"; then
      stop_pid "$pid" "$name" "$STOP_TIMEOUT"
    fi
    rm -f "$UP_DIR/$name.pid"
  done
  # The log prefixers end by themselves at end of input once their service is gone; give them a
  # moment to flush, then make sure none is left.
  sleep 0.2
  for name in "${services[@]}"; do
    pid="$(read_pid_file "$UP_DIR/$name.prefixer.pid")"
    if [[ -n $pid ]] && is_pid_alive "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
    rm -f "$UP_DIR/$name.prefixer.pid"
  done
  stop_broker_if_started
  if ((${LOCKED:-0})); then
    rm -f "$LOCK_FILE"
  fi
  log "stopped"
}
trap shutdown EXIT
trap 'shutdown; exit 0' INT TERM

# --- dependencies and build -----------------------------------------------------------------------
use_local_broker_if_needed
ensure_postgres

if [[ -n ${HTTP_ADDR:-} ]]; then
  log "note: ignoring HTTP_ADDR=$HTTP_ADDR - each service listens on its own port (8081-8084)"
fi
unset HTTP_ADDR

# Every service refuses to enable its /admin routes without a token. Locally a
# well-known token keeps the stack starting without setup; set ADMIN_TOKEN to use your own.
if [[ -z ${ADMIN_TOKEN:-} ]]; then
  export ADMIN_TOKEN=local-admin-token
  log "ADMIN_TOKEN is unset: the /admin routes of every service accept 'Bearer local-admin-token'"
fi
# report-exporter's /exports routes need EXPORTS_TOKEN the same way (an export holds every
# customer's e-mail address).
if [[ -z ${EXPORTS_TOKEN:-} ]]; then
  export EXPORTS_TOKEN=local-exports-token
  log "EXPORTS_TOKEN is unset: report-exporter's /exports routes accept 'Bearer local-exports-token'"
fi
# report-exporter's CSV files stay under target/, out of the working tree.
export EXPORT_DIR=${EXPORT_DIR:-$UP_DIR/exports}

build_args=()
for name in "${services[@]}"; do
  build_args+=(-p "$name")
done
# UP_PROFILE=dev: a debug build, which reuses what the tests compiled (a cold release build of
# every service takes long on a small machine); release otherwise.
case "${UP_PROFILE:-release}" in
  release)
    log "building ${services[*]} (release) ..."
    cargo build --release "${build_args[@]}"
    BIN_DIR="${CARGO_TARGET_DIR:-$ASYNCRON_ROOT/target}/release"
    ;;
  dev)
    log "building ${services[*]} (dev: debug build) ..."
    cargo build "${build_args[@]}"
    BIN_DIR="${CARGO_TARGET_DIR:-$ASYNCRON_ROOT/target}/debug"
    ;;
  *) die "UP_PROFILE must be release or dev, got '$UP_PROFILE'" ;;
esac

# A service left over from an up.sh that was killed with SIGKILL, or anything else on our ports,
# would make the new service fail to bind (and then restart forever): refuse to start instead.
for name in "${services[@]}"; do
  if is_port_open 127.0.0.1 "${PORTS[$name]}"; then
    pid="$(read_pid_file "$UP_DIR/$name.pid")"
    hint=""
    if [[ -n $pid ]] && is_pid_alive "$pid" "$name"; then
      hint=" - it is $name (pid $pid) left over from an earlier run: kill $pid"
    fi
    die "port ${PORTS[$name]} for $name is already in use$hint"
  fi
  [[ -x $BIN_DIR/$name ]] || die "$BIN_DIR/$name was not built"
done

# --- logs -----------------------------------------------------------------------------------------
# Reads a service's output line by line, prints it with a "[name] " prefix and appends the raw line
# to target/up/<name>.log. It runs in its own process (process substitution below) and ends at end
# of input, i.e. when the service exits. Its pid is recorded so shutdown can make sure it is gone.
# SIGINT is ignored so that a Ctrl-C does not cut off the services' shutdown logs.
prefix_lines() {
  local name=$1 file=$2 line
  trap '' INT
  printf '%s\n' "$BASHPID" >"$UP_DIR/$name.prefixer.pid"
  while IFS= read -r line || [[ -n $line ]]; do
    printf '[%s] %s\n' "$name" "$line"
    printf '%s\n' "$line" >>"$file"
  done
}

# A message from up.sh about a service: to the terminal and into that service's log file.
note() {
  local name=$1
  shift
  log "$*"
  printf '[up] %s\n' "$*" >>"$UP_DIR/$name.log"
}

# --- supervision ----------------------------------------------------------------------------------
# One supervisor subshell per service: start it, wait for it to exit, start it again after
# RESTART_DELAY, until the supervisor gets SIGTERM (from shutdown), which stops the service.
supervise() {
  local name=$1
  local port=${PORTS[$name]}
  local db=${name//-/_}
  local database_url log_file="$UP_DIR/$name.log"
  database_url="$(database_url_for "$db")"
  local stopping=0 child="" status sleeper
  trap 'stopping=1' TERM
  trap '' INT # Ctrl-C reaches the whole process group; the main script decides what to do

  while ((!stopping)); do
    # setsid: the service gets its own session and process group, so the terminal's Ctrl-C only
    # reaches this script, which then stops the services in order (and the supervisor can tell an
    # intended stop from a crash). $! is the service itself: setsid execs without forking here.
    HTTP_ADDR="127.0.0.1:$port" DATABASE_URL="$database_url" \
      setsid "$BIN_DIR/$name" </dev/null > >(prefix_lines "$name" "$log_file") 2>&1 &
    child=$!
    printf '%s\n' "$child" >"$UP_DIR/$name.pid"

    # `wait` returns when the service exits, or early (status > 128) when SIGTERM arrives.
    # (stderr: bash's own "Killed ..." job report; our message below says it better.)
    status=0
    wait "$child" 2>/dev/null || status=$?
    if ((stopping)); then
      break
    fi
    note "$name" "$name exited with status $status; restarting in ${RESTART_DELAY}s"
    # Sleep in the background and wait for it, so that SIGTERM interrupts the delay at once.
    sleep "$RESTART_DELAY" &
    sleeper=$!
    wait "$sleeper" || true
    kill "$sleeper" 2>/dev/null || true
  done

  if [[ -n $child ]]; then
    stop_pid "$child" "$name" "$STOP_TIMEOUT"
  fi
  rm -f "$UP_DIR/$name.pid"
}

for name in "${services[@]}"; do
  # Keep the previous run's log for post-mortems, start a fresh one.
  if [[ -f $UP_DIR/$name.log ]]; then
    mv -f "$UP_DIR/$name.log" "$UP_DIR/$name.log.1"
  fi
  : >"$UP_DIR/$name.log"
  supervise "$name" &
  SUPERVISORS[$name]=$!
  printf '%s\n' "$!" >"$UP_DIR/$name.supervisor.pid"
done

# --- readiness ------------------------------------------------------------------------------------
log "waiting up to ${READY_TIMEOUT}s for ${services[*]} to be ready ..."
pending=("${services[@]}")
deadline=$((SECONDS + READY_TIMEOUT))
while ((${#pending[@]})) && ((SECONDS < deadline)); do
  still=()
  for name in "${pending[@]}"; do
    if ! curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:${PORTS[$name]}/health/ready" 2>/dev/null; then
      still+=("$name")
    fi
  done
  pending=("${still[@]}")
  if ((${#pending[@]})); then
    sleep 0.5
  fi
done

if ((${#pending[@]})); then
  for name in "${pending[@]}"; do
    log "error: $name is not ready after ${READY_TIMEOUT}s (http://127.0.0.1:${PORTS[$name]}/health/ready); last lines of target/up/$name.log:"
    tail -n 20 "$UP_DIR/$name.log" >&2 || true
  done
  log "not ready: ${pending[*]}; stopping everything"
  exit 1 # the EXIT trap stops everything
fi

{
  echo
  echo "asyncron is up (Kafka: $KAFKA_BOOTSTRAP_SERVERS):"
  for name in "${services[@]}"; do
    printf '  %-16s http://127.0.0.1:%s   (/health/ready, /metrics)\n' "$name" "${PORTS[$name]}"
  done
  echo "Logs: target/up/<service>.log. Ctrl-C stops everything."
  echo
} >&2

# --- run until told to stop -----------------------------------------------------------------------
# `wait` returns when a trapped signal arrives (the trap then shuts down and exits) or when all
# supervisors are gone, which only happens if someone killed them.
wait || true
log "all supervisors exited unexpectedly"
exit 1
