#!/bin/bash
# Ladder step 9's measurements, under the evaluation protocol of docs/evaluation.md:
# pixel against latent diffusion (bin/eval of both checkpoints as their
# configs sample, IMAGES each, in one sitting so sampling speeds compare;
# the latent model with DPM-Solver++ in 10 steps too), and the prompted
# model with no style word (IMAGES) and with each style word
# (PROMPT_IMAGES each: the judge's class accuracy, and the shares of images
# above their class's median ink mass and slant), the autoencoder's own
# reconstructions of IMAGES training images (its ceiling), then the
# prompted model's grids for docs/models.md. Each eval.json is kept, so a rerun resumes.
#
#   scripts/ladder9.sh [IMAGES] [PROMPT_IMAGES]
#
# Environment: JUDGE (default runs/mnist_classifier), PIXEL
# (runs/mnist_cond_cpu), LATENT (runs/mnist_latent), PROMPT
# (runs/mnist_prompt), AE (runs/mnist_autoencoder), OUT (runs/ladder9).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
np=${2:-1000}
judge=${JUDGE:-runs/mnist_classifier}
out=${OUT:-runs/ladder9}
mkdir -p "$out"

ev() { # name checkpoint images flags...
	local name=$1 ck=$2 images=$3
	shift 3
	[ -s "$out/$name.json" ] && return
	echo "== $name" >&2
	bin/eval --judge "$judge" --checkpoint "$ck" --n "$images" --out "$out/$name.json" "$@" 2>&1 | grep -E 'images in|^\|' >&2
}

ev pixel "${PIXEL:-runs/mnist_cond_cpu}" "$n"
ev latent "${LATENT:-runs/mnist_latent}" "$n"
ev latent-dpm10 "${LATENT:-runs/mnist_latent}" "$n" --sampler dpm++2m --steps 10 # a fast sampler on latents
prompt=${PROMPT:-runs/mnist_prompt}
ev prompt-none "$prompt" "$n" # as the label models: FID compares at one image count
for p in thin bold upright slanted bold-slanted thin-upright; do
	ev "prompt-$p" "$prompt" "$np" --prompt "${p/-/ }"
done
ae=${AE:-runs/mnist_autoencoder} # what the autoencoder loses: its reconstructions of 2,000 training images
if [ ! -s "$out/ae-recon.json" ]; then
	bin/sample --checkpoint "$ae" --n "$n" --out "$out/ae-recon" >/dev/null 2>&1
	bin/eval --judge "$judge" --samples "$out/ae-recon" --out "$out/ae-recon.json" 2>&1 | grep '^|' >&2
fi
for p in thin bold upright slanted; do # 4 of each class, a row per class
	[ -s "$out/grid-$p/grid.png" ] || bin/sample --checkpoint "$prompt" --prompt "$p" --n 40 --out "$out/grid-$p" >/dev/null 2>&1
done

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
print('| run | images | sampling images/s | conditional accuracy (95% CI) | FID | precision | recall | ink > class median | slant > class median |')
print('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
for name in ['pixel', 'latent', 'latent-dpm10', 'prompt-none', 'prompt-thin', 'prompt-bold', 'prompt-upright', 'prompt-slanted', 'prompt-bold-slanted', 'prompt-thin-upright', 'ae-recon']:
    try:
        e = json.load(open(f'{out}/{name}.json'))
    except FileNotFoundError:
        continue
    r = e['reports'][0]  # ae-recon: `bin/sample` of the autoencoder (reconstructions of training images), then `bin/eval --samples`
    iv = lambda v: f"{v['Value']:.3f} ({v['Low']:.3f}-{v['High']:.3f})"
    st = r.get('style', {})
    print(f"| {name} | {r['samples']} | {r.get('sampling_images_per_s', 0):.1f} | {iv(r['conditional_accuracy'])} | {r['fid']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | "
          f"{iv(st['ink_above_class_median']) if st else '-'} | {iv(st['slant_above_class_median']) if st else '-'} |")
PY
