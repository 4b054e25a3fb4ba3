#!/usr/bin/env bash
# The local Kafka-compatible broker (nisshi 0.6.0, in-memory storage) on 127.0.0.1:9092.
#
#   scripts/broker.sh start    start it in the background (installs it first if missing);
#                              does nothing if it is already running
#   scripts/broker.sh stop     stop it (SIGTERM, then SIGKILL after 10 s)
#   scripts/broker.sh status   exit 0 if it is running, 1 if not
#
# State lives in target/broker/: broker.pid and broker.log (appended to across runs).
# Memory storage: every start is an empty cluster; a stop loses all topics and offsets.
# Docker users get real Apache Kafka from docker-compose.yml instead.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=broker

BROKER_DIR="$ASYNCRON_ROOT/target/broker"
PID_FILE="$BROKER_DIR/broker.pid"
LOG_FILE="$BROKER_DIR/broker.log"
START_TIMEOUT=20
STOP_TIMEOUT=10

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

# Print the pid of the broker this script started, if it is still alive. Checking that the pid
# really is a nisshi process protects against a stale pid file whose pid was reused.
running_pid() {
  local pid
  pid="$(read_pid_file "$PID_FILE")"
  if [[ -n $pid ]] && is_pid_alive "$pid" nisshi; then
    printf '%s\n' "$pid"
    return 0
  fi
  return 1
}

cmd_start() {
  local pid
  if pid="$(running_pid)"; then
    log "already running on $LOCAL_BROKER_ADDR (pid $pid)"
    return 0
  fi
  rm -f "$PID_FILE"
  # Something else on the port (a broker started by hand, a Kafka container publishing 9092):
  # starting ours would only fail with "address in use", so say what to do instead.
  if is_port_open "$LOCAL_BROKER_HOST" "$LOCAL_BROKER_PORT"; then
    die "$LOCAL_BROKER_ADDR is already in use by a process this script did not start.
  Stop it, or use it by setting KAFKA_BOOTSTRAP_SERVERS=$LOCAL_BROKER_ADDR."
  fi

  ensure_broker_installed
  mkdir -p "$BROKER_DIR"
  printf '\n--- %s: starting nisshi ---\n' "$(date -Is)" >>"$LOG_FILE"
  # setsid: the broker gets its own session, so a Ctrl-C meant for the script that started it
  # (test.sh, up.sh) does not kill it behind that script's back; they stop it explicitly.
  # stdin from /dev/null so it never holds the caller's terminal.
  # nisshi 0.6.0 has no setting for how long a group join waits (Apache Kafka's
  # group.initial.rebalance.delay.ms): it holds each JoinGroup for half the client's session
  # timeout, so the clients set a short one instead (KAFKA_SESSION_TIMEOUT in lib.sh).
  setsid nisshi broker \
    --listener-url "tcp://$LOCAL_BROKER_ADDR" \
    --advertised-listener-url "tcp://$LOCAL_BROKER_ADDR" \
    --storage-engine memory://nisshi/ \
    </dev/null >>"$LOG_FILE" 2>&1 &
  pid=$!
  printf '%s\n' "$pid" >"$PID_FILE"

  if ! wait_for_port "$LOCAL_BROKER_HOST" "$LOCAL_BROKER_PORT" "$START_TIMEOUT" "$pid"; then
    if pid_running "$pid"; then
      log "error: the broker did not accept connections on $LOCAL_BROKER_ADDR within ${START_TIMEOUT}s; stopping it"
      stop_pid "$pid" broker "$STOP_TIMEOUT"
    else
      log "error: the broker exited during startup"
    fi
    rm -f "$PID_FILE"
    log "last lines of $LOG_FILE:"
    tail -n 20 "$LOG_FILE" >&2 || true
    exit 1
  fi
  log "started on $LOCAL_BROKER_ADDR (pid $pid, log ${LOG_FILE#"$ASYNCRON_ROOT"/})"
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    log "not running"
    return 0
  fi
  stop_pid "$pid" broker "$STOP_TIMEOUT"
  rm -f "$PID_FILE"
  log "stopped (pid $pid)"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    log "running on $LOCAL_BROKER_ADDR (pid $pid, log ${LOG_FILE#"$ASYNCRON_ROOT"/})"
    return 0
  fi
  if is_port_open "$LOCAL_BROKER_HOST" "$LOCAL_BROKER_PORT"; then
    log "not running (but $LOCAL_BROKER_ADDR is in use by a process this script did not start)"
  else
    log "not running"
  fi
  return 1
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
