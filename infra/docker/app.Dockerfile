# syntax=docker/dockerfile:1
# The kumiko-app image: the reference app built on the Kumiko runtime, which the operator deploys
# in every end-to-end test. Build from the workspace root:
#
#   docker build -f infra/docker/app.Dockerfile -t kumiko-app:dev .
#
# Its commands (the container args the operator renders): `serve`, `worker`, `migrate apply`.

FROM rust:1.95-bookworm AS build
WORKDIR /workspace
COPY . .
RUN --mount=type=cache,id=kumiko-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=kumiko-target,target=/workspace/target,sharing=locked \
    cargo build --release --locked --package kumiko-runtime --bin kumiko-app \
 && install -D -m 0755 target/release/kumiko-app /out/kumiko-app \
 && install -d -m 0750 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="kumiko-app" \
      org.opencontainers.image.description="The Kumiko reference app (serve, worker, migrate apply)" \
      org.opencontainers.image.source="https://github.com/kumiko-so/kumiko-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/kumiko-app /usr/local/bin/kumiko-app
# Without DATABASE_URL the runtime keeps an embedded SQLite file here (progressive
# infrastructure); `docker run` works with nothing else. Under the operator DATABASE_URL is always
# set and the root filesystem is read-only.
COPY --from=build --chown=65532:65532 /out/data /data
ENV KUMIKO_DATA_DIR=/data \
    PORT=3000
USER 65532:65532
EXPOSE 3000
# Exec form: kumiko-app is PID 1 and receives SIGTERM itself, so its drain-and-linger shutdown runs.
ENTRYPOINT ["/usr/local/bin/kumiko-app"]
CMD ["serve"]
