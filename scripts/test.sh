#!/usr/bin/env bash
# THE test command: formatting, lints, all tests against a real broker and PostgreSQL, doc tests,
# a smoke run of every benchmark scenario, and the service generator checked end to end.
#
#   scripts/test.sh [ARGS...]      ARGS go to `cargo nextest run`, e.g. -E 'test(outbox)'
#
# What it needs, it provides:
# - Kafka: with KAFKA_BOOTSTRAP_SERVERS unset, the local broker (installed on first use, ~10 min)
#   is started for the run and stopped afterwards (unless it was already running before).
#   With KAFKA_BOOTSTRAP_SERVERS set, that Kafka is used and nothing is started.
# - PostgreSQL: DATABASE_URL if set (it selects the server; tests create their own databases),
#   else the local server on 127.0.0.1:5432, started if it is installed but down.
#
# The last step, new-service (scripts/test-new-service.sh), generates two services from the service
# template in a copy of the tree and builds, tests and starts them (about 1.5 min once the workspace
# is built; about 4 min the first time).
#
# Steps run one after the other and all of them run even if an earlier one fails (so one CI run
# shows every problem); the script exits 1 if any failed. The nextest profile is NEXTEST_PROFILE
# (default "default"; "ci" when CI=true) - see .config/nextest.toml.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_TAG="test"

case "${1:-}" in
  -h | --help)
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    exit 0
    ;;
esac

cd "$ASYNCRON_ROOT"

if [[ -z ${NEXTEST_PROFILE:-} ]]; then
  if [[ ${CI:-} == true ]]; then
    NEXTEST_PROFILE=ci
  else
    NEXTEST_PROFILE=default
  fi
fi
export NEXTEST_PROFILE

# Stop the broker on every way out (success, failure, Ctrl-C), but only if this run started it.
# INT/TERM are turned into a normal exit so that the EXIT trap runs.
trap stop_broker_if_started EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- dependencies ---------------------------------------------------------------------------------
# Started before fmt/clippy although those do not need them: a missing dependency should fail the
# run in the first minute, not after a long clippy build.
use_local_broker_if_needed
ensure_postgres
# A full disk fails the build with errors that look like anything else; say up front how much room
# there is (a whole run needs about 8 GB for target/).
log "free disk space for target/: $(df -h --output=avail . | tail -n 1 | tr -d ' ')"

# --- steps ----------------------------------------------------------------------------------------
failed=()
run_step() {
  local name=$1
  shift
  log "=== $name: $*"
  local start=$SECONDS
  if "$@"; then
    log "=== $name: ok ($((SECONDS - start))s)"
  else
    local status=$?
    log "=== $name: FAILED with status $status ($((SECONDS - start))s)"
    failed+=("$name")
  fi
}

run_step fmt cargo fmt --all -- --check
run_step clippy cargo clippy --workspace --all-targets -- -D warnings
# --no-fail-fast: a failing test does not hide the others' results.
run_step nextest cargo nextest run --workspace --no-fail-fast --profile "$NEXTEST_PROFILE" "$@"
# Every benchmark scenario with tiny sizes (crates/bench, "Smoke run"), so that none breaks
# unnoticed. Debug binaries: the bench starts the services from its own profile directory. Built
# with the workspace's own feature set (--workspace --all-targets, as the tests were), so that only
# the binaries are linked; `cargo build -p ...` or `cargo run -p ...` would resolve other features
# and rebuild dependencies. A release build would take far longer than the whole run.
bench_smoke() {
  cargo build --workspace --all-targets &&
    "${CARGO_TARGET_DIR:-target}/debug/asyncron-bench" all --smoke
}
run_step bench-smoke bench_smoke
# nextest does not run doc tests.
run_step doctest cargo test --workspace --doc
# A broken intra-doc link is a drifted doc: rustdoc warnings fail the run.
run_step doc env RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace
# The service template: two generated services build, pass their tests and come up (~4 min).
run_step new-service scripts/test-new-service.sh

if ((${#failed[@]})); then
  log "FAILED: ${failed[*]}"
  exit 1
fi
log "all steps passed (fmt, clippy, nextest, bench-smoke, doctest, doc, new-service)"
