# kakusan: `make` builds the shim and the binaries into bin/, `make test` runs
# every test but the long ones, `make test-long` those, `make bench` the
# benchmarks beside their PyTorch peers, `make image` the CPU container image, `make image-test` builds it and runs
# kakusan's jobs inside it, `make test-torch2` the tests against libtorch 2.6
# and the CUDA shim's compile in Debian 13 containers, `make test-web` the
# server's web page in a headless chromium, `make bench-serve` the server's
# load test, `make docs` rewrites the generated parts of
# docs/configuration.md (the config keys and the flags) from the code.
GO      ?= go
SHIM    := bin/libkakusan_torch.so
SOURCES := $(wildcard torch/csrc/*.cpp torch/csrc/*.h) scripts/build_shim.sh
# Binaries find the shim beside themselves, wherever bin/ is copied.
LDFLAGS := -ldflags '-extldflags "-Wl,-rpath,$$ORIGIN"'

# The engine: podman as scripts/container.sh sets it up, or PODMAN=docker.
IMAGE   ?= kakusan:cpu

.PHONY: all build setup shim test test-long bench bench-serve clean image image-test test-torch2 test-web docs

all: build

setup:
	scripts/setup.sh

$(SHIM): $(SOURCES)
	scripts/build_shim.sh bin

shim: $(SHIM)

build: setup $(SHIM)
	$(GO) build -buildvcs=auto $(LDFLAGS) -o bin/ ./cmd/...

# make test skips the long integration tests (-short); make test-long runs
# only them (TestLong...). Timeouts: at least 3x the slowest package's time
# on 2 quiet cores (docs/development.md lists the slowest tests).
test: build
	$(GO) vet ./...
	$(GO) test -short -count=1 -timeout 8m ./...

test-long: build
	$(GO) test -count=1 -timeout 20m -run '^TestLong' ./...

docs: build
	KAKUSAN_UPDATE_DOCS=1 $(GO) test -count=1 -run 'Docs?$$' ./models ./cmd/...

bench: $(SHIM)
	scripts/setup.sh
	scripts/bench.sh

image:
	scripts/image_build.sh $(IMAGE)

image-test: image
	scripts/image_test.sh $(IMAGE)

test-torch2:
	scripts/test_torch2.sh

test-web: build
	scripts/setup.sh browser
	KAKUSAN_BROWSER_TEST=1 $(GO) test -count=1 -timeout 5m -run TestPageInABrowser -v ./serve

bench-serve: build
	scripts/bench_serve.sh

clean:
	rm -rf bin
