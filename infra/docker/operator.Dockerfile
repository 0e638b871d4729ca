# syntax=docker/dockerfile:1
# The kumiko-operator image. Build from the workspace root (the context is the whole workspace):
#
#   docker build -f infra/docker/operator.Dockerfile -t kumiko-operator:dev .
#
# Stage 1 compiles the release binary; stage 2 is distroless (glibc, CA certificates, no shell, no
# package manager) and runs it as the numeric non-root user 65532. The chart runs it with a
# read-only root filesystem: the operator writes nothing to disk.

FROM rust:1.95-bookworm AS build
WORKDIR /workspace
COPY . .
# The cargo registry and target directory are BuildKit cache mounts, so a rebuild after a source
# change recompiles only what changed. The binary is copied out of the cache in the same step.
RUN --mount=type=cache,id=kumiko-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=kumiko-target,target=/workspace/target,sharing=locked \
    cargo build --release --locked --package kumiko-operator --bin kumiko-operator \
 && install -D -m 0755 target/release/kumiko-operator /out/kumiko-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="kumiko-operator" \
      org.opencontainers.image.description="The Kumiko operator: runs Kumiko apps from KumikoApp objects" \
      org.opencontainers.image.source="https://github.com/kumiko-so/kumiko-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/kumiko-operator /usr/local/bin/kumiko-operator
USER 65532:65532
# /metrics, /healthz, /readyz (KUMIKO_HTTP_ADDR).
EXPOSE 8080
# Exec form: the binary is PID 1 and receives SIGTERM itself (it releases its Lease on the way out).
ENTRYPOINT ["/usr/local/bin/kumiko-operator"]
CMD ["run"]
