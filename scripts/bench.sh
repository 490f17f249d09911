#!/usr/bin/env bash
# bench.sh: kakusan's benchmarks beside their PyTorch peers, in one run on
# one machine, and a table of ratios (kakusan time / peer time; below 1 is
# faster). Debian's python3-torch runs the peers on the same libtorch. Go
# figures are the median of 5 runs, the peers' the median step time.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-/usr/bin/python3}
log=$(mktemp -d)
go test -p 1 -run '^$' -bench . -benchtime 1s -count 5 ./torch/ ./models/vae/ | tee "$log/go.txt"
"$py" scripts/bench_convnet.py --steps 200 | tee "$log/convnet.json"
"$py" scripts/bench_vae.py --steps 3000 | tee "$log/vae.json"
"$py" - "$log" <<'PY'
import json, re, sys
d = sys.argv[1]
import statistics
runs = {}
for k, v in re.findall(r'^(Benchmark\w+)-\d+\s+\d+\s+([\d.]+) ns/op', open(d + '/go.txt').read(), re.M):
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
print('| benchmark | kakusan | peer | ratio |')
print('| --- | --- | --- | --- |')
for name, ours, peer, what, unit in rows:
    print(f'| {name} | {ours:.4g} {unit} | {peer:.4g} {unit} ({what}) | {ours / peer:.2f} |')
PY
rm -rf "$log"
