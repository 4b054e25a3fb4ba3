# syntax=docker/dockerfile:1
# One image recipe for every service:
#
#   docker build --build-arg SERVICE=orders -t asyncron/orders .
#
# SERVICE is the Cargo package name; the binary has the same name. docker-compose.yml builds all
# four services from this file. Needs BuildKit (the default builder since Docker 23).

# --- build ----------------------------------------------------------------------------------------
# rust:*-bookworm is based on buildpack-deps, which already has gcc, g++ and make: enough for the
# librdkafka that rdkafka builds and links statically (no cmake needed). Same Debian release as
# the runtime image below, so the binary's glibc requirements match.
FROM rust:1.95-bookworm AS build
ARG SERVICE
WORKDIR /src
COPY . .
# Cache mounts keep the crates.io downloads and compiled dependencies between builds (and between
# the four services, which share almost all dependencies). They are not part of the image layers,
# so the binary is copied out of target/ within the same RUN. sharing=locked: parallel builds of
# several services wait for each other instead of corrupting the shared target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    set -eu; \
    if [ -z "${SERVICE:-}" ]; then echo "build with --build-arg SERVICE=<package>" >&2; exit 1; fi; \
    cargo build --release --locked -p "$SERVICE"; \
    install -D -m 0755 "target/release/$SERVICE" /out/service

# --- runtime --------------------------------------------------------------------------------------
FROM debian:bookworm-slim
ARG SERVICE
# ca-certificates: TLS to anything outside the compose network; curl: the compose healthcheck
# (GET /health/ready).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# Never run as root inside the container.
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin asyncron
# report-exporter writes its CSV files here (EXPORT_DIR in docker-compose.yml). Created owned by
# the service user, so that a named volume mounted on it starts out writable.
RUN mkdir -p /var/lib/asyncron/exports && chown asyncron:asyncron /var/lib/asyncron/exports
COPY --from=build /out/service /usr/local/bin/service
# Fail the image build, not the container start, if the binary needs a library this image lacks.
RUN if ldd /usr/local/bin/service | grep 'not found'; then exit 1; fi
ENV SERVICE=${SERVICE} \
    LOG_FORMAT=json
USER asyncron
# The service drains and exits 0 on SIGTERM (docker stop), within SHUTDOWN_TIMEOUT.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/service"]
