# syntax=docker/dockerfile:1
# Mizzen's images, for users with Docker (this repository's own tests build the same images without it:
# hack/images/build.sh). From the repository root, one target per image:
#   docker build --target mizzen-serve    -t ghcr.io/mizzen-dev/mizzen-serve:0.1.0 .
#   docker build --target mizzen-train    -t ghcr.io/mizzen-dev/mizzen-train:0.1.0 .
#   docker build --target mizzen-operator -t ghcr.io/mizzen-dev/mizzen-operator:0.1.0 .
#   docker build --target mizzen-registry -t ghcr.io/mizzen-dev/mizzen-registry:0.1.0 .
#   docker build --target mizzen-features -t ghcr.io/mizzen-dev/mizzen-features:0.1.0 .
# Runtime images are distroless (glibc, libstdc++, CA certificates; no shell), run as uid 65532, and carry
# ONNX Runtime's library from its PyPI wheel (onnxruntime==1.32.0), loaded through ORT_DYLIB_PATH.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mizzen-serve -p mizzen-train -p mizzen-operator -p mizzen-registry \
        -p mizzen-features \
    && mkdir /out && cp target/release/mizzen-serve target/release/mizzen-train target/release/mizzen-operator \
        target/release/mizzen-registry target/release/mizzen-features /out/

FROM python:3.11-slim-bookworm AS onnxruntime
RUN pip install --no-cache-dir onnxruntime==1.32.0 \
    && cp /usr/local/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0 /

FROM gcr.io/distroless/cc-debian12:nonroot AS mizzen-operator
COPY --from=build /out/mizzen-operator /usr/local/bin/mizzen-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mizzen-operator"]

FROM gcr.io/distroless/cc-debian12:nonroot AS mizzen-registry
COPY --from=build /out/mizzen-registry /usr/local/bin/mizzen-registry
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mizzen-registry"]

FROM gcr.io/distroless/cc-debian12:nonroot AS mizzen-features
COPY --from=build /out/mizzen-features /usr/local/bin/mizzen-features
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mizzen-features"]

FROM gcr.io/distroless/cc-debian12:nonroot AS with-onnxruntime
COPY --from=onnxruntime /libonnxruntime.so.1.32.0 /usr/local/lib/libonnxruntime.so.1.32.0
ENV ORT_DYLIB_PATH=/usr/local/lib/libonnxruntime.so.1.32.0
USER 65532:65532

FROM with-onnxruntime AS mizzen-train
COPY --from=build /out/mizzen-train /usr/local/bin/mizzen-train
ENTRYPOINT ["/usr/local/bin/mizzen-train"]

FROM with-onnxruntime AS mizzen-serve
COPY --from=build /out/mizzen-serve /usr/local/bin/mizzen-serve
ENTRYPOINT ["/usr/local/bin/mizzen-serve"]
