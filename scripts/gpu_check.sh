#!/usr/bin/env bash
# gpu_check.sh: the GPU check, for a CUDA machine with a pip torch and no Go.
#
# Before: build the Go test binary on any machine with Go and carry it here:
#   go test -c -o .gpu/torch.test ./torch
# Then, on the GPU machine, from the repository root:
#   scripts/gpu_check.sh            (TORCH_FROM_PYTHON=python3 by default)
# It builds the shim against that python's libtorch (CUDA), runs the whole
# torch test suite on CUDA (KAKUSAN_EXPECT_CUDA=1 makes a CPU-only shim a
# failure) and on the CPU, runs the benchmarks beside their PyTorch peers and
# prints a table. Logs go to $OUT (or .gpu/out).
set -uo pipefail
cd "$(dirname "$0")/.."
py=${TORCH_FROM_PYTHON:-python3}
out=${OUT:-.gpu/out}
mkdir -p "$out"
bin=.gpu/torch.test
[[ -x $bin ]] || { echo "gpu_check: $bin missing: go test -c -o $bin ./torch on a machine with Go" >&2; exit 1; }

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$py -c 'import torch; print("pip torch", torch.__version__, "CUDA", torch.version.cuda, "|", torch.cuda.get_device_name(0))'

echo "== shim"
t0=$(date +%s)
if ! TORCH_FROM_PYTHON=$py scripts/build_shim.sh .gpu/shim >"$out/build.log" 2>&1; then
  grep -E 'error' "$out/build.log" | head -40
  echo "gpu_check: shim build failed (full log in $out/build.log)"
  exit 1
fi
echo "built in $(( $(date +%s) - t0 )) s: $(tail -1 "$out/build.log")"
export LD_LIBRARY_PATH=$PWD/.gpu/shim
ldd $bin | grep -E 'kakusan|libtorch|c10' | sed 's/ (0x.*//'

status=0
echo "== tests on CUDA"
KAKUSAN_TEST_DEVICE=cuda KAKUSAN_EXPECT_CUDA=1 $bin -test.count=1 -test.v >"$out/test_cuda.log" 2>&1 || status=1
grep -E '^(--- (FAIL|SKIP)|FAIL|ok|PASS)|libtorch .* CUDA device|_test.go' "$out/test_cuda.log" | head -40
echo "passed: $(grep -c '^--- PASS' "$out/test_cuda.log"), failed: $(grep -c '^--- FAIL' "$out/test_cuda.log")"

echo "== tests on CPU (same CUDA-built shim, libtorch 2.x)"
KAKUSAN_TEST_DEVICE=cpu $bin -test.count=1 -test.v >"$out/test_cpu.log" 2>&1 || status=1
grep -E '^(--- FAIL|FAIL)|_test.go' "$out/test_cpu.log" | head -20
echo "passed: $(grep -c '^--- PASS' "$out/test_cpu.log"), failed: $(grep -c '^--- FAIL' "$out/test_cpu.log")"

echo "== benchmarks (CUDA)"
KAKUSAN_TEST_DEVICE=cuda $bin -test.run '^$' -test.bench . -test.benchtime 3s >"$out/bench.log" 2>&1 || status=1
$py scripts/bench_convnet.py --device cuda --steps 300 >"$out/peer.json" 2>&1 || status=1
grep Benchmark "$out/bench.log"
cat "$out/peer.json"
$py - "$out/bench.log" "$out/peer.json" <<'PY'
import json, re, sys
bench = dict(re.findall(r'^(Benchmark\w+)-\d+\s+\d+\s+([\d.]+) ns/op', open(sys.argv[1]).read(), re.M))
peer = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
go_ms = float(bench['BenchmarkConvNetStep']) / 1e6
print(f"| what | kakusan (Go) | peer | ratio |")
print(f"| tiny add, ns/op | {float(bench['BenchmarkAddGo']):.0f} | {float(bench['BenchmarkAddCpp']):.0f} (C++ loop) | {float(bench['BenchmarkAddGo'])/float(bench['BenchmarkAddCpp']):.2f} |")
print(f"| conv-net step, ms | {go_ms:.3f} | {peer['ms_per_step']:.3f} (PyTorch {peer['torch']} eager) | {go_ms/peer['ms_per_step']:.2f} |")
PY
exit $status
