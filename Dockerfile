# The three images for users who build with Docker. They hold the same static binaries that
# scripts/build-images packs without Docker (amd64 here; scripts/build-images also builds arm64):
#   docker build --target ssi-csi      -t secrets-store-integration/ssi-csi:<version> .
#   docker build --target ssi-webhook  -t secrets-store-integration/ssi-webhook:<version> .
#   docker build --target ssi-injector -t secrets-store-integration/ssi-injector:<version> .
# The references are what the Helm chart installs; push them to your registry and set the chart's
# `images.repository`. (Docker is not available on the test machines, so this file is not built in
# CI; scripts/build-images is, and the real node's tests run its images.)

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# NB: an explicit --target keeps +crt-static away from build scripts and proc macros.
RUN RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release -p ssi-csi -p ssi-webhook --target x86_64-unknown-linux-gnu \
 && RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --profile injector -p ssi-injector --target x86_64-unknown-linux-gnu \
 && mkdir /out \
 && strip -o /out/ssi-csi target/x86_64-unknown-linux-gnu/release/ssi-csi \
 && strip -o /out/ssi-webhook target/x86_64-unknown-linux-gnu/release/ssi-webhook \
 && cp target/x86_64-unknown-linux-gnu/injector/ssi-injector /out/ssi-injector

# The node driver: privileged by its DaemonSet (it mounts tmpfs volumes for kubelet).
FROM scratch AS ssi-csi
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/ssi-csi /ssi-csi
ENTRYPOINT ["/ssi-csi"]

FROM scratch AS ssi-webhook
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/ssi-webhook /ssi-webhook
ENTRYPOINT ["/ssi-webhook"]

# The init container copies /ssi-injector into the pod; the app's image provides the rest.
FROM scratch AS ssi-injector
COPY --from=build /out/ssi-injector /ssi-injector
ENTRYPOINT ["/ssi-injector"]
