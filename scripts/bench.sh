#!/usr/bin/env bash
# bench.sh: kakusan's benchmarks beside their PyTorch peers, in one run on
# one machine, and a table of ratios (kakusan time / peer time; below 1 is
# faster). Debian's python3-torch runs the peers on the same libtorch. Go
# figures are the median of 5 runs, the peers' the median step time.
set -euo pipefail
cd "$(dirname "$0")/.."
py=("${PYTHON:-/usr/bin/python3}")
# The peers run under the malloc thresholds kakusan's torch package sets for
# itself (torch/torch.go: mmap 32 MiB, trim 1 GiB): under glibc's defaults
# PyTorch maps and faults in its activations afresh at each step, and a mode
# measured first in its process ran up to 3x slower than the same mode after
# another (docs/performance.md). PEER_MALLOC=system leaves glibc's defaults.
if [[ ${PEER_MALLOC:-tuned} != system ]]; then
  py=(env GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824 "${py[@]}")
fi
log=$(mktemp -d)
go test -p 1 -run '^$' -bench 'Add|ConvNet|VAE' -benchtime 1s -count 5 ./torch/ ./train/ | tee "$log/go.txt"
"${py[@]}" scripts/bench_convnet.py --steps 200 | tee "$log/convnet.json"
"${py[@]}" scripts/bench_vae.py --steps 3000 | tee "$log/vae.json"
# The U-Net against the reference peer (shared/bench/ref_unet.py, kept
# outside the repository: set REF_UNET to its path), in each mode both have
# (eager, bf16 autocast, channels-last, both), at a size a 2-core CPU runs
# in minutes; the GPU check runs the reference size. The runs alternate,
# kakusan then the peer, ROUNDS times, and the table takes medians: these
# machines drift by 2x within minutes.
ref=${REF_UNET:-../shared/bench/ref_unet.py}
export BENCH_UNET_WIDTH=${BENCH_UNET_WIDTH:-16} BENCH_UNET_BATCH=${BENCH_UNET_BATCH:-128} BENCH_UNET_SAMPLE_BATCH=${BENCH_UNET_SAMPLE_BATCH:-100}
# PEER_MODES adds the peers' other modes, torch.compile's among them on
# PyTorch 2.x (scripts/test_torch2.sh bench); a compiled mode's kakusan
# counterpart is the same mode without compile.
modes=${PEER_MODES:-eager,bf16,cl,bf16-cl}
twin_modes=${TWIN_MODES:-fp32-cl,bf16-cl}
if [[ -f $ref ]]; then
  for r in $(seq "${ROUNDS:-3}"); do
    go test -run '^$' -bench 'UNet' -benchtime 10x -count 1 ./train/ | tee -a "$log/unet.txt"
    "${py[@]}" "$ref" --device cpu --steps 10 --width "$BENCH_UNET_WIDTH" --batch "$BENCH_UNET_BATCH" --sample-batch "$BENCH_UNET_SAMPLE_BATCH" --modes "$modes" | tee -a "$log/ref_unet.json"
  done
else
  echo "bench: $ref not found; skipping the U-Net (set REF_UNET)" >&2
fi
# The CPU default's network (GroupNorm, SiLU, three levels, channels-last)
# against its PyTorch twin, alternating likewise, in float32 and bf16.
for r in $(seq "${ROUNDS:-3}"); do
  go test -run '^$' -bench 'CPUDefault' -benchtime 10x -count 1 ./train/ | tee -a "$log/unet.txt"
  "${py[@]}" scripts/bench_cpu_default.py --steps 10 --sample-batch "$BENCH_UNET_SAMPLE_BATCH" --modes "$twin_modes" | tee -a "$log/cpu_default.json"
done
# The colour recipe's network (configs/emoji_cpu.yaml, unet.arch adm) against
# its PyTorch twin, alternating likewise.
for r in $(seq "${ROUNDS:-3}"); do
  go test -run '^$' -bench 'Colour' -benchtime 10x -count 1 ./train/ | tee -a "$log/unet.txt"
  "${py[@]}" scripts/bench_cpu_default.py --net colour --batch 64 --steps 10 --sample-batch "$BENCH_UNET_SAMPLE_BATCH" --modes "$twin_modes" | tee -a "$log/colour.json"
done
# The sampling job a user runs (the CPU default, DDIM-50, 200 images with
# guidance, PNGs written) in images/s, in fp32 and bf16, from a checkpoint
# of one training step (speed does not depend on the weights); its peer is
# the twin's guided step: 100 / (50 x the step).
if [[ -x bin/train && -x bin/sample ]]; then
  if ! bin/train -config configs/mnist_cond_cpu.yaml --set train.max_steps=1 --set data.test_subset=100 --set samples=10 --out "$log/run" >"$log/train.log" 2>&1; then
    echo "bench: the sampling job's checkpoint could not be trained:" >&2
    tail -5 "$log/train.log" >&2
  fi
  i=0
  [[ -d $log/run ]] && for p in fp32 bf16 fp32 bf16; do
    i=$((i + 1)) # a folder per job: one holding another job's images is refused
    bin/sample --checkpoint "$log/run" --n 200 --sampler ddim --steps 50 --guidance 3 --precision "$p" --out "$log/samples-$i" 2>&1 |
      sed -n "s/.*(\([0-9.]*\) images\/s).*/$p \1/p" >>"$log/job.txt"
  done
fi
"${py[@]}" - "$log" <<'PY'
import json, re, sys
d = sys.argv[1]
import statistics
import os
runs = {}
text = open(d + '/go.txt').read() + (open(d + '/unet.txt').read() if os.path.exists(d + '/unet.txt') else '')
for k, v in re.findall(r'^(Benchmark[\w/-]+?)-\d+\s+\d+\s+([\d.]+) ns/op', text, re.M):
    runs.setdefault(k, []).append(float(v))
go = {k: statistics.median(v) for k, v in runs.items()}  # median of the -count runs
conv = json.loads(open(d + '/convnet.json').read().strip().splitlines()[-1])
vae = json.loads(open(d + '/vae.json').read().strip().splitlines()[-1])
ns = lambda k: float(go[k])
rows = [
    ('one-element add, per op', ns('BenchmarkAddGo'), ns('BenchmarkAddCpp'), 'the same add in a C++ loop', 'ns'),
    ('small CNN training step, batch 64', ns('BenchmarkConvNetStep') / 1e6, conv['ms_per_step'], 'PyTorch ' + conv['torch'], 'ms'),
    ('VAE training step, batch 32', ns('BenchmarkVAETrainStep') / 1e6, vae['ms_per_step'], 'PyTorch ' + vae['torch'], 'ms'),
]
def by_mode(file):
    """A peer's JSON lines (one per mode and round), by mode; {} when absent."""
    peer = {}
    if os.path.exists(d + '/' + file):
        for line in open(d + '/' + file):
            if line.startswith('{'):
                r = json.loads(line)
                peer.setdefault(r['mode'], []).append(r)
    return peer
unet = []
peer = by_mode('ref_unet.json')
if peer:
    med = lambda mode, k: statistics.median(r[k] for r in peer[mode])
    ref = next(iter(peer.values()))[0]
    shape = f"width {ref['width']}"
    for what, bench, key, size in [('training step', 'BenchmarkUNetTrainStep', 'train_ms_per_step', f"batch {ref['batch']}"),
                                   ('guided sampling step', 'BenchmarkUNetSampleStep', 'sample_ms_per_step', f"{ref['sample_batch']} images")]:
        best = min(peer, key=lambda m: med(m, key))
        for mode in peer:
            ours = ns(f"{bench}/{mode.replace('compile-', '').replace('compile', 'eager')}") / 1e6
            unet.append((f'U-Net {what}, {shape}, {size}, {mode}', ours, med(mode, key), f'ref_unet.py {mode}',
                         'ms', ours / med(best, key), best))
def twin(file, name, bench, batch, peer_name):
    """Rows of a network against its twin (bench_cpu_default.py's JSON lines)."""
    peer = by_mode(file)
    if not peer:
        return
    med = lambda mode, k: statistics.median(r[k] for r in peer[mode])
    for what, kind, key, size in [('training step', 'TrainStep', 'train_ms_per_step', f'batch {batch}'),
                                  ('guided sampling step', 'SampleStep', 'sample_ms_per_step',
                                   f"{next(iter(peer.values()))[0]['sample_batch']} images")]:
        best = min(peer, key=lambda m: med(m, key))
        for mode in peer:
            ours = ns(f"Benchmark{bench}{kind}/{'bf16' if 'bf16' in mode else 'fp32'}") / 1e6
            unet.append((f'{name} {what}, {size}, {mode}', ours, med(mode, key), f'{peer_name} {mode}',
                         'ms', ours / med(best, key), best))
twin('cpu_default.json', 'CPU default', 'CPUDefault', 128, 'bench_cpu_default.py')
twin('colour.json', 'colour recipe (3x32x32)', 'Colour', 64, 'bench_cpu_default.py --net colour')
peer = by_mode('cpu_default.json')
if os.path.exists(d + '/job.txt') and peer:
    med = lambda mode: statistics.median(r['sample_ms_per_step'] for r in peer[mode])
    best = min(peer, key=med)
    n = peer[best][0]['sample_batch']
    peer_ips = n / (50 * med(best) / 1e3)
    jobs = {}
    for line in open(d + '/job.txt'):
        p, ips = line.split()
        jobs.setdefault(p, []).append(float(ips))
    for p, v in sorted(jobs.items()):
        # images/s: a ratio of times is the peer's rate over ours.
        unet.append((f'DDIM-50 sampling job, CPU default, {p}, images/s (ours includes PNGs)', statistics.median(v), peer_ips,
                     f'bench_cpu_default.py {best}: {n} / (50 steps)', 'images/s', peer_ips / statistics.median(v), best))
print('| benchmark | kakusan | peer | ratio |')
print('| --- | --- | --- | --- |')
for name, ours, peer, what, unit in rows:
    print(f'| {name} | {ours:.4g} {unit} | {peer:.4g} {unit} ({what}) | {ours / peer:.2f} |')
if unet:
    print()
    print('| benchmark (median of the rounds) | kakusan | peer, same mode | ratio | ratio to the fastest peer mode |')
    print('| --- | --- | --- | --- | --- |')
    for name, ours, peer, what, unit, best_ratio, best in unet:
        ratio = peer / ours if unit == 'images/s' else ours / peer
        print(f'| {name} | {ours:.4g} {unit} | {peer:.4g} {unit} | {ratio:.2f} | {best_ratio:.2f} (vs {best}) |')
PY
rm -rf "$log"
