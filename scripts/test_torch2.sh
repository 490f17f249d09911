#!/usr/bin/env bash
# test_torch2.sh [tests|cuda|all]: proves kakusan on libtorch 2.x without a
# GPU (`make test-torch2`, run by .ci/run), in Debian 13 containers made from
# the Dockerfile's torch2 and cuda-compile stages:
#   tests  the whole test suite (`make test`: vet, unit tests, fixtures,
#          PyTorch-twin tests) against Debian 13's libtorch 2.6 and PyTorch
#          2.6, on a copy of the source tree (bin/, runs/, data/ and .gpu/
#          here are untouched); skipped tests are listed, and a skipped twin
#          test fails the run
#   cuda   the CUDA shim compiled and linked against libtorch 2.6's CUDA
#          build, CUDA 12.4 and NCCL 2.22 with KAKUSAN_EXPECT_CUDA=1: every
#          translation unit must compile, CUDA graphs and NCCL included, and
#          the link (-z defs) must resolve every symbol in libtorch_cuda,
#          libc10_cuda and the rest
#   bench  (not in `all`) scripts/bench.sh in the torch2 image: kakusan
#          built against libtorch 2.6 beside PyTorch 2.6's eager and
#          torch.compile modes of ref_unet.py ($REF_UNET) and of the shipped
#          networks' twins, alternating rounds, and the sampling job; nothing
#          else should load the machine meanwhile
# The logs and a timing summary go to $OUT (default runs/torch2).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
[[ $what =~ ^(tests|cuda|all|bench)$ ]] || { echo "usage: test_torch2.sh [tests|cuda|all|bench]" >&2; exit 2; }
scripts/base_images.sh torch2
source scripts/container.sh
out=${OUT:-runs/torch2}
out=$(mkdir -p "$out" && cd "$out" && pwd)
summary=$out/summary.txt
: >"$summary"
say() { echo "test_torch2: $*" | tee -a "$summary" >&2; }
fail() { say "FAIL: $*"; exit 1; }
# build TARGET: the image kakusan:TARGET, its build time said.
build() {
  local t0=$SECONDS
  "${podman[@]}" build "${build_flags[@]}" --target "$1" -t "kakusan:$1" . >"$out/build-$1.log" 2>&1 ||
    { tail -30 "$out/build-$1.log" >&2; fail "building the $1 image (log: $out/build-$1.log)"; }
  say "image kakusan:$1 built in $((SECONDS - t0)) s ($("${podman[@]}" image inspect --format '{{.Size}}' "kakusan:$1" | awk '{printf "%d MB", $1 / 1e6}'))"
}
# tree: the source tree as tar on stdout, tracked and untracked files that
# git does not ignore.
tree() { git ls-files -z -co --exclude-standard | xargs -0 -I{} sh -c 'test -e "{}" && printf "%s\0" "{}"' | tar --null -T - -cf -; }

cuda() {
  build cuda-compile
  local t0=$SECONDS log=$out/cuda-compile.log
  tree | "${podman[@]}" run --rm -i --network none "${limits[@]}" kakusan:cuda-compile bash -c '
    set -euo pipefail
    tar -xf - -C /src
    KAKUSAN_EXPECT_CUDA=1 scripts/build_shim.sh /tmp/bin
    echo "needed: $(readelf -d /tmp/bin/libkakusan_torch.so | sed -n "s/.*Shared library: \[\(.*\)\]/\1/p" | xargs)"
    echo "versions: CUDA $(sed -n "s/^#define CUDART_VERSION *//p" /usr/include/cuda_runtime_api.h), NCCL $(sed -n "s/^#define NCCL_VERSION_CODE *//p" /usr/include/nccl.h), libtorch-cuda-dev $(dpkg-query -W -f "\${Version}" libtorch-cuda-dev)"
  ' >"$log" 2>&1 || { cat "$log" >&2; fail "the CUDA shim (log: $log)"; }
  grep -q 'libtorch_cuda.so' "$log" || fail "the CUDA shim does not link libtorch_cuda (log: $log)"
  say "CUDA shim compiled and linked in $((SECONDS - t0)) s: $(sed -n 's/^build_shim: compiled //p' "$log")"
  say "$(grep '^versions: ' "$log")"
  say "$(grep '^needed: ' "$log")"
}

tests() {
  build torch2
  local t0=$SECONDS log=$out/test.log cache=${KAKUSAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kakusan}/torch2-go-build
  mkdir -p "$cache"
  # The host's module cache (go mod download fills it), and the proxy
  # settings it came through; the build cache is the container's own.
  local modcache goproxy
  modcache=$(go env GOMODCACHE)
  goproxy=$(go env GOPROXY)
  go mod download
  tree | "${podman[@]}" run --rm -i --network host "${limits[@]}" "${ca_mount[@]}" \
    -v "$modcache:/go/pkg/mod" -v "$cache:/root/.cache/go-build" -v "$out:/out" -e GOPROXY="$goproxy" -e GOFLAGS=-mod=mod \
    kakusan:torch2 bash -c '
    set -euo pipefail
    tar -xf - -C /src
    echo "libtorch $(dpkg-query -W -f "\${Version}" libtorch-dev), PyTorch $(python3 -c "import torch; print(torch.__version__)")"
    echo "cpu: $(lscpu | sed -n "s/^Model name: *//p") (family $(sed -n "s/^cpu family\t*: //p;T;q" /proc/cpuinfo), model $(sed -n "s/^model\t*: //p;T;q" /proc/cpuinfo)), $(nproc) cores, $(grep -ow "avx2\|avx512f\|avx512_bf16\|avx512_vnni\|amx_bf16" /proc/cpuinfo | sort -u | xargs)"
    python3 scripts/sdpa_check.py >/out/sdpa_check.txt 2>&1 || true
    make build
    go vet ./...
    go test -count=1 -timeout 30m -json ./... >/out/test.json || true
    python3 scripts/go_test_summary.py /out/test.json || {
      # Which library path is at fault: the book network'"'"'s fixture again
      # with one of libtorch'"'"'s, oneDNN'"'"'s and OpenBLAS'"'"'s kernel choices
      # narrowed at a time.
      for e in KAKUSAN_THREADS=1 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell; do
        if env $e go test -count=1 ./models/unet -run "TestForwardMatchesPyTorchReference\$" >/dev/null 2>&1; then r=passes; else r=fails; fi
        echo "localise: with $e the book network'"'"'s fixture test $r"
      done
      exit 1
    }
  ' >"$log" 2>&1 || { tail -60 "$log" >&2; grep -h '^cpu: \|^localise: ' "$log" | tee -a "$summary" >&2; tail -1 "$out/sdpa_check.txt" 2>/dev/null | tee -a "$summary" >&2; fail "make test against libtorch 2.6 (log: $log)"; }
  say "$(grep -m1 '^libtorch ' "$log")"
  say "$(grep -m1 '^cpu: ' "$log")"
  say "$(tail -1 "$out/sdpa_check.txt")"
  say "make test against libtorch 2.6 passed in $((SECONDS - t0)) s: $(grep '^tests: ' "$log")"
  grep '^SKIP ' "$log" | tee -a "$summary" >&2 || true
  ! grep -i '^SKIP .*\(python3-torch\|pytorch\)' "$log" || fail "a PyTorch-twin test was skipped in the torch2 image"
}

bench() {
  build torch2
  local ref=${REF_UNET:-../shared/bench/ref_unet.py} t0=$SECONDS
  [[ -f $ref ]] || fail "the U-Net peer $ref is missing (set REF_UNET)"
  go mod download
  tree | "${podman[@]}" run --rm -i --network none "${limits[@]}" \
    -v "$(go env GOMODCACHE):/go/pkg/mod:ro" -v "$(cd "$(dirname "$ref")" && pwd)/$(basename "$ref"):/ref_unet.py:ro" \
    -e GOFLAGS=-mod=mod -e GOPROXY=off -e ROUNDS="${ROUNDS:-2}" \
    kakusan:torch2 bash -c '
    set -euo pipefail
    tar -xf - -C /src
    echo "libtorch $(dpkg-query -W -f "\${Version}" libtorch-dev), PyTorch $(python3 -c "import torch; print(torch.__version__)"), $(lscpu | sed -n "s/^Model name: *//p"), $(nproc) cores"
    make build >/tmp/build.log 2>&1 || { tail -20 /tmp/build.log; exit 1; }
    REF_UNET=/ref_unet.py PYTHON=python3 PEER_MODES=eager,bf16-cl,compile,compile-bf16-cl \
      TWIN_MODES=fp32-cl,bf16-cl,compile-fp32-cl,compile-bf16-cl scripts/bench.sh
  ' >"$out/bench.log" 2>&1 || { tail -30 "$out/bench.log" >&2; fail "the benchmarks (log: $out/bench.log)"; }
  say "benchmarks against PyTorch 2.6 in $((SECONDS - t0)) s: $(head -1 "$out/bench.log")"
  sed -n '/^| benchmark/,$p' "$out/bench.log" | tee -a "$summary"
}

case $what in
  bench) bench ;;
  tests) tests ;;
  cuda) cuda ;;
  all) tests && cuda ;;
esac
