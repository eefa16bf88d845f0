# syntax=docker/dockerfile:1
#
# The nodemesh agent image: `nodemesh` on a minimal glibc runtime.
#
#   docker build -t ghcr.io/example/nodemesh:0.1.0 .
#
# The builder compiles the kernel programs with the pinned nightly and
# bpf-linker (`cargo xtask build-ebpf --release` installs both), then the
# agent, which embeds that object. Builder and runtime share the Debian
# release, so the binary's glibc matches. CI does not build this image.

ARG RUST_VERSION=1.99.1
ARG DEBIAN_RELEASE=bookworm
ARG DISTROLESS_DEBIAN=12

FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
# Where xtask keeps bpf-linker between builds (a cache mount below).
ENV NODEMESH_CACHE_DIR=/cache/nodemesh
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/cache/nodemesh \
    --mount=type=cache,target=/src/target \
    cargo xtask build-ebpf --release \
    && cargo build --release --locked -p nodemesh-agent \
    && install -D -m 0755 target/release/nodemesh /out/nodemesh

FROM gcr.io/distroless/cc-debian${DISTROLESS_DEBIAN} AS runtime
COPY --from=builder /out/nodemesh /usr/local/bin/nodemesh
# The agent needs root with BPF, PERFMON, NET_ADMIN and SYS_ADMIN; the
# DaemonSet from `nodemesh install` grants exactly those.
USER 0:0
ENTRYPOINT ["/usr/local/bin/nodemesh"]
CMD ["--help"]
