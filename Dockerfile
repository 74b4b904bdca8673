# syntax=docker/dockerfile:1.7
#
# Images of the search pipeline: mongo-source (MongoDB -> Kafka) and es-sync
# (Kafka -> Elasticsearch), built from one multi-stage Dockerfile.
#
#   docker build --target mongo-source -t search-pipeline/mongo-source .
#   docker build --target es-sync      -t search-pipeline/es-sync .
#
# Both targets hold both binaries (one build, shared layers); the target only
# chooses the ENTRYPOINT, the exposed admin port and the health check port.
# Not built on the machine that wrote it (no Docker engine there): validated
# with hadolint only. See docs/deployment.md.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------- builder ----
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder

# rdkafka builds librdkafka from source (bundled, features ssl + zstd):
# a C toolchain, make/cmake, OpenSSL headers, pkg-config and zlib headers.
# No SASL/GSSAPI feature is enabled, so libsasl2-dev is not needed.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# 1) Dependencies only: manifests + lock file, with empty crate roots, so this
#    layer (the crates.io download) is reused until Cargo.toml/Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
COPY shared/Cargo.toml shared/Cargo.toml
COPY source/Cargo.toml source/Cargo.toml
COPY sync/Cargo.toml   sync/Cargo.toml
COPY tests/Cargo.toml  tests/Cargo.toml
RUN mkdir -p shared/src source/src sync/src tests/src \
 && touch shared/src/lib.rs source/src/lib.rs sync/src/lib.rs tests/src/lib.rs \
 && echo 'fn main() {}' > source/src/main.rs \
 && echo 'fn main() {}' > sync/src/main.rs
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo fetch --locked

# 2) The sources (the stubs are overwritten), then the two binaries.
COPY shared shared
COPY source source
COPY sync   sync
COPY tests  tests
COPY config config
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin mongo-source --bin es-sync \
 && install -D -m 0755 target/release/mongo-source /out/mongo-source \
 && install -D -m 0755 target/release/es-sync      /out/es-sync

# ---------------------------------------------------------------- runtime ----
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# librdkafka is linked statically except OpenSSL (libssl3); CA certificates
# for TLS to brokers/Elasticsearch outside the compose network.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 pipeline \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin pipeline

COPY --from=builder /out/mongo-source /out/es-sync /usr/local/bin/
COPY deploy/docker/healthcheck /usr/local/bin/healthcheck
# Default configs (container hostnames, admin on 0.0.0.0, no secrets);
# docker-compose.yml mounts the same files read-only from deploy/config/.
COPY deploy/config/mongo-source.toml deploy/config/es-sync.toml /etc/search-pipeline/
COPY config/indices/ /etc/search-pipeline/indices/

LABEL org.opencontainers.image.title="search-pipeline" \
      org.opencontainers.image.description="MongoDB change streams -> Kafka -> Elasticsearch" \
      org.opencontainers.image.licenses="Apache-2.0"

USER 10001:10001
WORKDIR /etc/search-pipeline
STOPSIGNAL SIGTERM

# ----------------------------------------------------------- mongo-source ----
FROM runtime AS mongo-source
ENV ADMIN_PORT=9464 \
    MONGO_SOURCE__ADMIN__LISTEN=0.0.0.0:9464
EXPOSE 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/healthcheck"]
# Extra arguments follow the config: `docker run IMAGE --check` validates it.
ENTRYPOINT ["/usr/local/bin/mongo-source", "--config", "/etc/search-pipeline/mongo-source.toml"]
CMD []

# ---------------------------------------------------------------- es-sync ----
# Last stage: the default target of a plain `docker build .`.
FROM runtime AS es-sync
ENV ADMIN_PORT=9465 \
    ES_SYNC__ADMIN__LISTEN=0.0.0.0:9465
EXPOSE 9465
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/healthcheck"]
# The command is es-sync's subcommand: `run` (default), `replay ...`, `reindex ...`.
ENTRYPOINT ["/usr/local/bin/es-sync", "--config", "/etc/search-pipeline/es-sync.toml"]
CMD ["run"]
