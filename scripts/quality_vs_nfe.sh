#!/bin/bash
# Sample quality against sampling cost, under docs/evaluation.md's evaluation
# protocol: bin/eval of one checkpoint at each of STEPS network evaluations
# with DDIM (η = 0), DDPM's ancestral step on the respaced schedule (DDIM
# η = 1, which is DDPM's posterior step between the visited timesteps) and
# DPM-Solver++(2M); then DDPM over all 1000 timesteps and DDIM in 1000
# steps (the ODE's limit); then the table (stdout, with each sampling's
# images/s) and docs/quality_vs_nfe.png. Each eval.json is kept, so a rerun
# resumes (and refuses one made on another number of images).
#
#   scripts/quality_vs_nfe.sh RUN_FOLDER [IMAGES] [LONG_IMAGES]
#
# IMAGES (default 2000) per point; LONG_IMAGES (default IMAGES) for the
# 1000-step points: when it differs, DDIM-50 is measured again at that
# count so the two compare (FID falls as the number of images grows). On 2
# cores a 1000-step point of the CPU default takes about 14 minutes at
# 2,000 images (an AMD EPYC), the whole run about 40. Guidance, its
# interval, precision and clipping are the checkpoint config's. Environment: STEPS (default "10 15 20 50 100"; 15 is
# the issue's bound for DPM-Solver++), ETA1=0 to skip DDPM at fewer steps,
# LONG=0 to skip the 1000-step points, JUDGE (default
# runs/mnist_classifier), OUT (default RUN_FOLDER/nfe), PLOT (default
# docs/quality_vs_nfe.png).
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:?usage: scripts/quality_vs_nfe.sh RUN_FOLDER [IMAGES] [LONG_IMAGES]}
n=${2:-2000}
nlong=${3:-$n}
judge=${JUDGE:-runs/mnist_classifier}
out=${OUT:-$run/nfe}
mkdir -p "$out"

# ev NAME IMAGES FLAGS...: one point, kept in OUT/NAME.json; a rerun reuses
# it if it was made on as many images, and refuses to mix counts.
files=()
ev() {
	local name=$1 images=$2 have
	shift 2
	files+=("$out/$name.json")
	if [ -s "$out/$name.json" ]; then
		have=$(grep -o '"n": *[0-9]*' "$out/$name.json" | grep -o '[0-9]*$' || true)
		if [ "$have" != "$images" ]; then
			echo "quality_vs_nfe: $out/$name.json was made on ${have:-an unknown number of} images, not $images: set OUT to another folder" >&2
			exit 1
		fi
		return
	fi
	echo "== $name ($images images) $(date +%T)" >&2
	bin/eval --judge "$judge" --checkpoint "$run" --n "$images" -o "$out/$name.json" "$@" >/dev/null
}
for steps in ${STEPS:-10 15 20 50 100}; do
	ev "ddim-$steps" "$n" --sampler ddim --steps "$steps" --eta 0
	if [ "${ETA1:-1}" = 1 ]; then
		ev "ddim-eta1-$steps" "$n" --sampler ddim --steps "$steps" --eta 1
	fi
	ev "dpm-$steps" "$n" --sampler dpm++2m --steps "$steps"
done
if [ "${LONG:-1}" = 1 ]; then
	suffix=
	if [ "$nlong" != "$n" ]; then
		suffix=-n$nlong
		ev "ddim-50$suffix" "$nlong" --sampler ddim --steps 50 --eta 0
	fi
	ev "ddpm-1000$suffix" "$nlong" --sampler ddpm
	ev "ddim-1000$suffix" "$nlong" --sampler ddim --steps 1000 --eta 0
fi
go run ./scripts/nfeplot -o "${PLOT:-docs/quality_vs_nfe.png}" "${files[@]}"
