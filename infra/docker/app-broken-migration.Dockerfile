# syntax=docker/dockerfile:1
# The e2e suite's broken-migration image: `kumiko-app-broken-migration` (e2e/src/bin/) as the
# entrypoint, beside the real `kumiko-app`. `migrate ...` prints the migration error the
# failed-migration scenario looks for and exits 1; any other command runs kumiko-app. The runtime
# image has no shell, so the wrapper is a program: it uses the standard library only and is
# compiled with plain rustc. Build from the workspace root (scripts/e2e-kind.sh does):
#
#   docker build -f infra/docker/app-broken-migration.Dockerfile -t kumiko-app:broken-migration .

FROM rust:1.95-bookworm AS build
WORKDIR /workspace
COPY . .
# The same cache mounts as app.Dockerfile: after that build, kumiko-app is already compiled.
RUN --mount=type=cache,id=kumiko-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=kumiko-target,target=/workspace/target,sharing=locked \
    cargo build --release --locked --package kumiko-runtime --bin kumiko-app \
 && install -D -m 0755 target/release/kumiko-app /out/kumiko-app \
 && rustc --edition 2024 -C opt-level=2 -o /out/kumiko-app-broken-migration \
      e2e/src/bin/kumiko-app-broken-migration.rs \
 && install -d -m 0750 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="kumiko-app-broken-migration" \
      org.opencontainers.image.description="Test image of the Kumiko e2e suite: kumiko-app whose migration fails" \
      org.opencontainers.image.source="https://github.com/kumiko-so/kumiko-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/kumiko-app /usr/local/bin/kumiko-app
COPY --from=build /out/kumiko-app-broken-migration /usr/local/bin/kumiko-app-broken-migration
COPY --from=build --chown=65532:65532 /out/data /data
ENV KUMIKO_DATA_DIR=/data \
    PORT=3000
USER 65532:65532
EXPOSE 3000
# Exec form, as in app.Dockerfile; the wrapper execs kumiko-app, which then is PID 1.
ENTRYPOINT ["/usr/local/bin/kumiko-app-broken-migration"]
CMD ["serve"]
