#!/usr/bin/env bash
# Start a new service the one way every service is built (docs/new-service.md).
#
#   scripts/new-service.sh <name> <port>      e.g. scripts/new-service.sh inventory 8085
#
# Creates services/<name> (Cargo package <name>) from scripts/templates/service: an entity with
# CRUD routes publishing its events through the outbox on <name>.items.v1, a task type and its
# worker on <name>.tasks.v1, a recurring schedule firing it, the service host wiring, migrations,
# README with a code map, and tests. Registers the service in scripts/up.sh (PORTS, ALL_SERVICES),
# docker-compose.yml, docker/postgres/init.sql and .env.example, then prints what to edit next.
#
# Refuses (exit 2): a name not matching ^[a-z][a-z0-9-]*$, an existing service, the name of a
# workspace dependency, a port that is not a number in 1024-65535 or that another service in
# scripts/up.sh uses.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TEMPLATE="$ROOT/scripts/templates/service"

refuse() {
  printf 'new-service: %s\n' "$*" >&2
  exit 2
}

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
  exit 0
fi
(($# == 2)) || refuse "usage: scripts/new-service.sh <name> <port>"
name=$1
port=$2

[[ $name =~ ^[a-z][a-z0-9-]*$ ]] ||
  refuse "invalid name '$name': use lowercase letters, digits and '-', starting with a letter (^[a-z][a-z0-9-]*\$)"
[[ $name != *- && $name != *--* ]] || refuse "invalid name '$name': no trailing or doubled '-'"
((${#name} <= 40)) || refuse "invalid name '$name': at most 40 characters"
[[ ! -e $ROOT/services/$name ]] || refuse "services/$name already exists"
# A crate named like one of its dependencies (kafka, platform, outbox, ...) would shadow it.
if sed -n '/^\[workspace.dependencies\]/,/^\[/p' "$ROOT/Cargo.toml" | grep -qE "^(${name}|${name//-/_}) *="; then
  refuse "'$name' is the name of a workspace dependency: choose another"
fi
[[ $port =~ ^[0-9]+$ ]] && ((port >= 1024 && port <= 65535)) ||
  refuse "invalid port '$port': a number from 1024 to 65535"

UP="$ROOT/scripts/up.sh"
ports_line="$(grep -E '^declare -A PORTS=\(' "$UP")" || refuse "scripts/up.sh has no 'declare -A PORTS=(...)' line"
grep -qE '^ALL_SERVICES=\(' "$UP" || refuse "scripts/up.sh has no 'ALL_SERVICES=(...)' line"
[[ $ports_line != *"[$name]="* ]] || refuse "scripts/up.sh already knows a service '$name'"
if [[ $ports_line =~ \[([a-z0-9-]+)\]=$port[^0-9] ]]; then
  refuse "port $port is already used by ${BASH_REMATCH[1]} (scripts/up.sh PORTS)"
fi

crate=${name//-/_}
env_prefix=${crate^^}
target="$ROOT/services/$name"

# --- the service ----------------------------------------------------------------------------------
substitute() {
  sed -e "s/{{service}}/$name/g" -e "s/{{crate}}/$crate/g" -e "s/{{ENV}}/$env_prefix/g" \
    -e "s/{{port}}/$port/g" "$1"
}
mkdir -p "$target"
(cd "$TEMPLATE" && find . -type f) | while IFS= read -r file; do
  out="$target/${file%.template}"
  mkdir -p "$(dirname "$out")"
  substitute "$TEMPLATE/$file" >"$out"
done

# The template is formatted for one name length; wrap the lines for this one.
if command -v cargo >/dev/null; then
  (cd "$ROOT" && cargo fmt -p "$name")
fi

# --- registrations --------------------------------------------------------------------------------
# scripts/up.sh: the name → port map and the default list.
sed -i -E -e "s/^(declare -A PORTS=\(.*)\)$/\1 [$name]=$port)/" \
  -e "s/^(ALL_SERVICES=\(.*)\)$/\1 $name)/" "$UP"

# docker-compose.yml: a service block before the top-level volumes (or at the end).
block="$(
  cat <<YAML
  $name:
    <<: *service
    image: asyncron/$name:dev
    build:
      context: .
      args:
        SERVICE: $name
    ports:
      - "127.0.0.1:$port:$port"
    environment:
      <<: *service-env
      HTTP_ADDR: 0.0.0.0:$port
      DATABASE_URL: postgres://postgres:postgres@postgres:5432/$crate
      # The /admin routes require a token; override it in .env for anything shared.
      ADMIN_TOKEN: \${ADMIN_TOKEN:-local-admin-token}
    healthcheck:
      <<: *service-healthcheck
      test: ["CMD", "curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:$port/health/ready"]

YAML
)"
BLOCK="$block" awk '/^volumes:/ && !done { print ENVIRON["BLOCK"]; print ""; done = 1 } { print }
  END { if (!done) { print ""; print ENVIRON["BLOCK"] } }' "$ROOT/docker-compose.yml" >"$ROOT/docker-compose.yml.new"
mv "$ROOT/docker-compose.yml.new" "$ROOT/docker-compose.yml"

# docker/postgres/init.sql: its database.
printf 'CREATE DATABASE %s;\n' "$crate" >>"$ROOT/docker/postgres/init.sql"

# .env.example: a section before the scripts' one (or at the end).
rule='# =================================================================================================='
section="$(
  cat <<ENV
$rule
# $name (port $port, database $crate)
$rule

# Prefix of the consumer group of $name's task worker. Default: $name.
# KAFKA_CONSUMER_GROUP_PREFIX=$name

# $name's own task queue (SummarizeItems); fixed by the contract, change it only in tests.
# Default: $name.tasks.v1.
# ${env_prefix}_TASKS_TOPIC=$name.tasks.v1

# When the recurring summarize-items schedule fires, in UTC. Default: 0 0 * * * * (hourly).
# ${env_prefix}_SUMMARY_CRON=0 0 * * * *
ENV
)"
SECTION="$section" awk -v rule="$rule" '
  { lines[NR] = $0 }
  END {
    at = 0
    for (i = 2; i <= NR; i++) if (lines[i] ~ /^# Scripts/ && lines[i - 1] == rule) { at = i - 1; break }
    for (i = 1; i <= NR; i++) {
      if (i == at) { print ENVIRON["SECTION"]; print "" }
      print lines[i]
    }
    if (!at) { print ""; print ENVIRON["SECTION"] }
  }' "$ROOT/.env.example" >"$ROOT/.env.example.new"
mv "$ROOT/.env.example.new" "$ROOT/.env.example"

cat <<NEXT
Created services/$name (package $name, port $port, database $crate) and registered it in
scripts/up.sh, docker-compose.yml, docker/postgres/init.sql and .env.example.

Next (docs/new-service.md has the whole checklist):
  1. cargo nextest run -p $name            # the generated tests pass as they are
  2. rename the entity (item.rs, store.rs, events.rs, migrations/0001_items.sql, tests) and the
     task (tasks.rs, workers.rs) to what the service really owns and does
  3. write the contracts: docs/contracts/$name.items.v1.md and docs/contracts/$name.tasks.v1.md
  4. describe the service in services/$name/README.md and add it to the Layout table of README.md
  5. scripts/up.sh $name                   # comes up on http://127.0.0.1:$port/health/ready
NEXT
