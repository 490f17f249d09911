# kakusan in a container.
#
# CPU image (Debian's libtorch 1.13):
#   docker build -t kakusan .
#   docker run --rm -v $PWD/runs:/kakusan/runs kakusan train -config configs/gmm_old_faithful.yaml
#
# CUDA image: the shim is built against the libtorch inside a pip torch
# (the Go binaries are the same; they link only the shim's C ABI):
#   docker build --build-arg RUNTIME=cuda -t kakusan:cuda .
#   docker run --gpus all --rm kakusan:cuda train -config configs/mnist_cond.yaml
ARG RUNTIME=cpu

# ---- Go binaries and the CPU shim ----
FROM golang:1.26-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libtorch-dev g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN scripts/build_shim.sh bin && \
    go build -ldflags '-extldflags "-Wl,-rpath,$ORIGIN"' -o bin/ ./cmd/...

# ---- CPU runtime ----
FROM debian:bookworm-slim AS cpu
RUN apt-get update && apt-get install -y --no-install-recommends libtorch1.13 libopenblas0-openmp && rm -rf /var/lib/apt/lists/*
WORKDIR /kakusan
COPY --from=build /src/bin/ /kakusan/bin/
COPY configs/ configs/
COPY third_party/dlfs5/*.txt third_party/dlfs5/
ENV PATH=/kakusan/bin:$PATH

# ---- CUDA runtime: a pip torch's libtorch ----
FROM pytorch/pytorch:latest AS cuda
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /kakusan
COPY torch/csrc/ torch/csrc/
COPY scripts/build_shim.sh scripts/
RUN TORCH_FROM_PYTHON=python3 scripts/build_shim.sh bin
COPY --from=build /src/bin/train /src/bin/sample /src/bin/eval bin/
COPY configs/ configs/
COPY third_party/dlfs5/*.txt third_party/dlfs5/
ENV PATH=/kakusan/bin:$PATH

FROM ${RUNTIME}
