# kakusan: `make` builds the shim and the binaries into bin/, `make test` runs
# every test, `make bench` the benchmarks beside their PyTorch peers,
# `make image` the CPU container image, `make image-test` builds it and runs
# kakusan's jobs inside it.
GO      ?= go
SHIM    := bin/libkakusan_torch.so
SOURCES := $(wildcard torch/csrc/*.cpp torch/csrc/*.h) scripts/build_shim.sh
# Binaries find the shim beside themselves, wherever bin/ is copied.
LDFLAGS := -ldflags '-extldflags "-Wl,-rpath,$$ORIGIN"'

# podman as these machines run it (crun fails on hybrid cgroups); any
# Docker-compatible engine works with PODMAN=docker.
PODMAN  ?= podman --runtime runc --cgroup-manager=cgroupfs
IMAGE   ?= kakusan:cpu
# The build's RUN steps trust this machine's CA bundle (mounted, not copied
# into the image): behind a proxy that re-signs TLS, `go mod download`
# needs the proxy's CA.
CA      := /etc/ssl/certs/ca-certificates.crt
BUILD_FLAGS ?= --network host --ulimit nofile=1024:1024 --ulimit nproc=1000:1000 $(if $(wildcard $(CA)),-v $(CA):$(CA):ro)

.PHONY: all build setup shim test bench clean image image-test

all: build

setup:
	scripts/setup.sh

$(SHIM): $(SOURCES)
	scripts/build_shim.sh bin

shim: $(SHIM)

build: setup $(SHIM)
	$(GO) build $(LDFLAGS) -o bin/ ./cmd/...

test: build
	$(GO) vet ./...
	$(GO) test -count=1 ./...

bench: $(SHIM)
	scripts/setup.sh
	scripts/bench.sh

image:
	scripts/base_images.sh
	$(PODMAN) build $(BUILD_FLAGS) --target cpu -t $(IMAGE) .

image-test: image
	scripts/image_test.sh $(IMAGE)

clean:
	rm -rf bin
