# syntax=docker/dockerfile:1
# wsedge container image: release build in rust:1-bookworm, run in debian:bookworm-slim.
# The slim binary (`--no-default-features`): the router, `check`, `plan` and `healthcheck`,
# without the load/demo/echo/certs tools and their crates (rcgen, indicatif, hdrhistogram,
# tungstenite).
#   docker build -t wsedge .
#   docker run -p 8080:8080 -p 9901:9901 -v "$PWD/routes.yaml:/etc/wsedge/routes.yaml:ro" wsedge
# The mounted routes.yaml must bind the listener to 0.0.0.0:8080 to be reachable from outside the
# container. An admin listener on 0.0.0.0:9901 also needs a token (at least 16 bytes) from
# `admin.token_file` (mount it, e.g. a Kubernetes Secret) or WSEDGE_ADMIN_TOKEN: without one a
# non-loopback admin bind refuses to start. HEALTHCHECK asks the admin listener's /healthz, so
# with a loopback-only admin (127.0.0.1:9901) it still works inside the container.

FROM rust:1-bookworm AS build
WORKDIR /src
# Manifest (and the bench, test and example targets it names) first: the dependency download is
# its own layer, redone only when Cargo.toml, Cargo.lock, benches/, tests/ or examples/ change.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY tests ./tests
COPY examples ./examples
RUN mkdir -p src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo fetch --locked \
    && rm -rf src
COPY build.rs ./
COPY src ./src
# No .git in the build context: pass the commit for `--version` and wsedge_build_info
# (docker build --build-arg WSEDGE_COMMIT=$(git rev-parse --short=12 HEAD) .).
ARG WSEDGE_COMMIT=unknown
ENV WSEDGE_COMMIT=$WSEDGE_COMMIT
# The edge image is the slim build; `--build-arg CARGO_FEATURES=` builds the full one (with
# `wsedge echo`, the example backend of deploy/kubernetes/backend-statefulset.yaml).
ARG CARGO_FEATURES=--no-default-features
# The target cache survives between builds (BuildKit): only changed crates recompile.
RUN --mount=type=cache,target=/src/target \
    cargo build --release --locked --offline $CARGO_FEATURES --bin wsedge \
    && install -m 0755 -s target/release/wsedge /usr/local/bin/wsedge \
    && wsedge --version

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 wsedge \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin wsedge \
    && mkdir -p /etc/wsedge
COPY --from=build /usr/local/bin/wsedge /usr/local/bin/wsedge
USER 10001:10001
EXPOSE 8080 9901
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["wsedge", "healthcheck"]
ENTRYPOINT ["wsedge"]
CMD ["run", "--config", "/etc/wsedge/routes.yaml"]
