#!/usr/bin/env bash
# bench_dist.sh: data-parallel training's speed on this machine, in one run:
# the config trained as one process (no launcher), as one rank under
# torchrun (the all-reduce path alone: DDP's overhead), and as NPROC ranks
# under torchrun, each rank with the config's batch (so NPROC ranks train on
# NPROC times the images a step). Images/s is the median of the logged
# windows after the first (metrics.jsonl); the modes alternate ROUNDS times
# (3), each round starting with another, as these machines drift within
# minutes, and the table takes medians.
#
#   scripts/bench_dist.sh [CONFIG] [STEPS] [NPROC] [--set key=value ...]
#
# Defaults: configs/mnist_cond_cpu.yaml, 150 steps, 2 ranks. Environment:
# DEVICE (cpu, the default, or cuda: one GPU per rank), PYTHON (whose torch
# provides torchrun; default /usr/bin/python3), ROUNDS (default 3), BIN
# (default bin). On the CPU each rank gets cores/NPROC threads
# (OMP_NUM_THREADS and KAKUSAN_THREADS). torchrun is scripts/torchrun.py
# with USE_LIBUV=0: its stores run without libuv, which Debian 13's PyTorch
# 2.6 lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/mnist_cond_cpu.yaml}
steps=${2:-150}
nproc=${3:-2}
shift $(($# < 3 ? $# : 3))
py=${PYTHON:-/usr/bin/python3}
device=${DEVICE:-cpu}
bin=${BIN:-bin}
cores=$(nproc)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sets=(--set "train.max_steps=$steps" --set train.log_every=25 --set data.test_subset=100 --set samples=10 --set "device=$device" "$@")
port=$((20000 + RANDOM % 20000))

train() { # mode out
  local mode=$1 out=$2
  case $mode in
  one) KAKUSAN_THREADS=$cores "$bin/train" -config "$config" --out "$out" "${sets[@]}" ;;
  ws*)
    local n=${mode#ws} threads=$((cores / ${mode#ws}))
    # --redirects 1 --tee 1: torch 1.13's defaults break on Python 3.11.
    # OMP_NUM_THREADS too: torchrun would set 1, and OpenBLAS follows it.
    threads=$((threads > 0 ? threads : 1))
    OMP_NUM_THREADS=$threads KAKUSAN_THREADS=$threads USE_LIBUV=${USE_LIBUV:-0} "$py" scripts/torchrun.py --nproc_per_node "$n" --master_port $((port++)) \
      --redirects 1 --tee 1 --no_python "$bin/train" -config "$config" --out "$out" "${sets[@]}" ;;
  esac >"$out.log" 2>&1 || { echo "bench_dist: $mode failed:" >&2; tail -20 "$out.log" >&2; exit 1; }
}

modes=(one ws1)
[[ $nproc -gt 1 ]] && modes+=("ws$nproc")
# Each round starts with the next mode: a run right after another runs
# slower on these machines, so no mode may always go first.
for r in $(seq "${ROUNDS:-3}"); do
  for k in "${!modes[@]}"; do
    mode=${modes[$(((k + r - 1) % ${#modes[@]}))]}
    train "$mode" "$work/$mode-$r"
    echo "round $r: $mode done" >&2
  done
done

"$py" - "$work" "$nproc" "$config" "$steps" "$device" <<'PY'
import json, glob, os, statistics, sys
work, nproc, config, steps, device = sys.argv[1:]
def rate(run):
    rs = [json.loads(l)["images_per_s"] for l in open(os.path.join(run, "metrics.jsonl")) if "images_per_s" in l]
    return statistics.median(rs[1:] if len(rs) > 1 else rs)
modes = {"one": "one process", "ws1": "torchrun, 1 rank"}
if nproc != "1":
    modes["ws" + nproc] = "torchrun, %s ranks" % nproc
base = None
print(f"{config}, {steps} steps, {device}; images/s: median of the logged windows, median over rounds")
print("| mode | images/s (rounds) | against one process |")
print("| --- | --- | --- |")
for m, name in modes.items():
    rs = [rate(d) for d in sorted(glob.glob(os.path.join(work, m + "-*"))) if os.path.isdir(d)]
    med = statistics.median(rs)
    base = base or med
    print(f"| {name} | {med:.0f} ({', '.join(f'{r:.0f}' for r in rs)}) | {med / base:.2f} |")
PY
