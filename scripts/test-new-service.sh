#!/usr/bin/env bash
# Proves that scripts/new-service.sh makes services that build, pass their tests and come up, so
# the template (scripts/templates/service) cannot rot. Run by scripts/test.sh (step new-service).
#
#   scripts/test-new-service.sh
#
# In a copy of the working tree (tracked and untracked files, uncommitted changes included; not
# target/) under <target>/new-service-test/repo - a fixed path, so later runs reuse its build:
# 1. scripts/new-service.sh demo-one 8091 and demo-two 8092, and its refusals (exit 2);
# 2. cargo fmt --check, build, clippy -D warnings, nextest and doc of demo-one and demo-two, with
#    CARGO_TARGET_DIR the repository's, so the dependencies compiled already are reused; the
#    compose/workspace consistency test (test-support's stack_files);
# 3. UP_PROFILE=dev scripts/up.sh demo-one, until http://127.0.0.1:8091/health/ready answers 200,
#    then SIGTERM to up.sh.
# Each step is bounded (NEW_SERVICE_STEP_TIMEOUT seconds, default 600). Needs the broker and
# PostgreSQL like scripts/test.sh (it starts the local broker when KAFKA_BOOTSTRAP_SERVERS is unset).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG=test-new-service

STEP_TIMEOUT="${NEW_SERVICE_STEP_TIMEOUT:-600}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ASYNCRON_ROOT/target}"
mkdir -p "$CARGO_TARGET_DIR"
CARGO_TARGET_DIR="$(cd "$CARGO_TARGET_DIR" && pwd)"
COPY="$CARGO_TARGET_DIR/new-service-test/repo"

UP_PID=""
cleanup() {
  if [[ -n $UP_PID ]] && kill -0 "$UP_PID" 2>/dev/null; then
    kill -TERM "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
  fi
  stop_broker_if_started
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

use_local_broker_if_needed
ensure_postgres

bounded() { timeout --signal=TERM --kill-after=15 "$STEP_TIMEOUT" "$@"; }

# --- a copy of the working tree -------------------------------------------------------------------
log "copying the working tree to $COPY"
rm -rf "$COPY"
mkdir -p "$COPY"
(
  cd "$ASYNCRON_ROOT"
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' file; do [[ -e $file ]] && printf '%s\0' "$file"; done |
    tar --null -T - -cf -
) | tar -xf - -C "$COPY"
cd "$COPY"

# --- generate -------------------------------------------------------------------------------------
scripts/new-service.sh demo-one 8091 >/dev/null
scripts/new-service.sh demo-two 8092 >/dev/null
expect_refusal() {
  local status=0
  scripts/new-service.sh "$@" 2>/dev/null || status=$?
  ((status == 2)) || die "new-service.sh $* exited with $status, expected 2"
}
expect_refusal demo-one 8093   # exists
expect_refusal Demo 8093       # bad name
expect_refusal 1demo 8093      # bad name
expect_refusal kafka 8093      # a dependency's name
expect_refusal demo-three 8082 # orders' port
expect_refusal demo-three 8091 # demo-one's port
expect_refusal demo-three      # no port
log "generated demo-one and demo-two; bad input refused with exit 2"

# --- build and test -------------------------------------------------------------------------------
packages=(-p demo-one -p demo-two)
bounded cargo fmt "${packages[@]}" -- --check
bounded cargo build "${packages[@]}"
bounded cargo clippy "${packages[@]}" --all-targets -- -D warnings
bounded cargo nextest run "${packages[@]}" --profile "${NEXTEST_PROFILE:-ci}"
# The README is the crate's doc: no rustdoc warnings (one of the two suffices).
RUSTDOCFLAGS="-D warnings" bounded cargo doc --no-deps -p demo-one
# docker-compose.yml and init.sql have a consistent block for each generated service.
bounded cargo nextest run -p asyncron-test-support --test stack_files --profile "${NEXTEST_PROFILE:-ci}"

# --- up.sh ----------------------------------------------------------------------------------------
if is_port_open 127.0.0.1 8091; then
  die "port 8091 is in use: cannot check that demo-one comes up under scripts/up.sh"
fi
log "starting UP_PROFILE=dev scripts/up.sh demo-one"
UP_PROFILE=dev scripts/up.sh demo-one >"$COPY/up.log" 2>&1 &
UP_PID=$!
ready=0
deadline=$((SECONDS + STEP_TIMEOUT))
while ((SECONDS < deadline)) && kill -0 "$UP_PID" 2>/dev/null; do
  if curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:8091/health/ready 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.5
done
if ((!ready)); then
  tail -n 40 "$COPY/up.log" >&2 || true
  die "demo-one did not become ready under scripts/up.sh"
fi
log "demo-one is ready under scripts/up.sh; stopping it"
kill -TERM "$(cat "$COPY/target/up/up.pid")"
status=0
wait "$UP_PID" || status=$?
UP_PID=""
((status == 0)) || die "scripts/up.sh exited with $status after SIGTERM"

cd "$ASYNCRON_ROOT"
rm -rf "$COPY"
log "ok: generated services build, pass their tests and come up"
