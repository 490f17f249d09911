#!/bin/bash
# Sample quality against sampling cost, under the README's evaluation
# protocol: bin/eval of one checkpoint with DDIM (η = 0) and
# DPM-Solver++(2M) at 10, 20, 50 and 100 network evaluations (with ETA1=1
# also DDIM η = 1, ancestral sampling on the respaced schedule: DDPM's
# sampler at fewer steps), and DDPM over all 1000 timesteps; then the table
# (stdout) and docs/quality_vs_nfe.png. Each eval.json is kept, so a rerun
# resumes.
#
#   scripts/quality_vs_nfe.sh RUN_FOLDER [IMAGES] [DDPM_IMAGES]
#
# IMAGES (default 1000) per point; DDPM_IMAGES (default 300) for the
# 1000-step point, with DDIM-50 measured again at that count so the two
# compare (FID falls with the number of images). Guidance, its interval,
# precision and clipping are the checkpoint config's. Environment: STEPS
# (default "10 20 50 100"), ETA1, JUDGE (default runs/mnist_classifier),
# OUT (default RUN_FOLDER/nfe), PLOT (default docs/quality_vs_nfe.png).
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:?usage: scripts/quality_vs_nfe.sh RUN_FOLDER [IMAGES] [DDPM_IMAGES]}
n=${2:-1000}
nddpm=${3:-300}
judge=${JUDGE:-runs/mnist_classifier}
out=${OUT:-$run/nfe}
mkdir -p "$out"

ev() { # name images flags...
	local name=$1 images=$2
	shift 2
	[ -s "$out/$name.json" ] && return
	echo "== $name ($images images)" >&2
	bin/eval --judge "$judge" --checkpoint "$run" --n "$images" -o "$out/$name.json" "$@" >/dev/null
}
for steps in ${STEPS:-10 20 50 100}; do
	ev "ddim-$steps" "$n" --sampler ddim --steps "$steps" --eta 0
	if [ "${ETA1:-0}" = 1 ]; then
		ev "ddim-eta1-$steps" "$n" --sampler ddim --steps "$steps" --eta 1
	fi
	ev "dpm-$steps" "$n" --sampler dpm++2m --steps "$steps"
done
ev "ddpm-1000-n$nddpm" "$nddpm" --sampler ddpm
ev "ddim-50-n$nddpm" "$nddpm" --sampler ddim --steps 50 --eta 0
go run ./scripts/nfeplot -o "${PLOT:-docs/quality_vs_nfe.png}" "$out"/*.json
