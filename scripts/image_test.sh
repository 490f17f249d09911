#!/usr/bin/env bash
# image_test.sh [IMAGE]: runs kakusan's jobs inside the CPU image, as the
# image's non-root user, with no network, writing to a mounted folder, and
# checks what they wrote on the host (`make image-test` builds the image
# first). Exits non-zero on the first failed check.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-kakusan:cpu}
read -r -a podman <<<"${PODMAN:-podman --runtime runc --cgroup-manager=cgroupfs}"
work=$(mktemp -d /var/tmp/kakusan-image-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 0777 "$work" # the image's user (uid 1000) writes its runs here
run() { "${podman[@]}" run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1000:1000 \
  -v "$work:/kakusan/runs" "$image" "$@"; }
fail() { echo "image_test: FAIL: $*" >&2; exit 1; }
ok() { echo "image_test: ok: $*"; }
is_png() { [[ -s $1 && $(head -c 8 "$1" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]]; }
t0=$SECONDS

size=$("${podman[@]}" image inspect --format '{{.Size}}' "$image")
ok "image $image, $((size / 1000000)) MB"
user=$("${podman[@]}" image inspect --format '{{.Config.User}}' "$image")
[[ -n $user && $user != root && $user != 0 ]] || fail "the image runs as '${user:-root}', want a non-root user"
uid=$(run sh -c 'id -u')
[[ $uid != 0 ]] || fail "uid 0 inside the image"
ok "runs as $user (uid $uid)"
tools=$(run sh -c 'for c in go gcc cc g++ c++ clang make; do command -v $c; done; true')
[[ -z $tools ]] || fail "the runtime image carries build tools: $tools"
ok "no Go or compilers in the runtime image"
missing=$(run sh -c 'ldd /kakusan/bin/libkakusan_torch.so | grep "not found"; true')
[[ -z $missing ]] || fail "the shim's libraries are incomplete: $missing"
ok "every library the shim links is in the image"
help=$(run)
for c in train sample eval; do grep -q "\b$c\b" <<<"$help" || fail "the default command's listing lacks $c: $help"; done
ok "the default command lists the binaries"

# Ladder step 3 (a classical config): EM on Old Faithful, then sampling.
run train -config configs/gmm_old_faithful.yaml -o /kakusan/runs/gmm >"$work/gmm.log" 2>&1 || { cat "$work/gmm.log"; fail "train gmm_old_faithful"; }
python3 -c 'import json, sys; p = json.load(open(sys.argv[1])); assert p, "empty params"' "$work/gmm/params.json" || fail "gmm params.json does not parse"
is_png "$work/gmm/fit.png" || fail "gmm fit.png is not a PNG"
run sample --run /kakusan/runs/gmm -n 500 -o /kakusan/runs/gmm/samples.csv >/dev/null 2>&1 || fail "sample from the gmm run"
rows=$(($(wc -l <"$work/gmm/samples.csv") - 1))
[[ $rows == 500 ]] || fail "gmm samples.csv has $rows rows, want 500"
ok "train gmm_old_faithful.yaml, then sample 500 points (fit.png, params.json, samples.csv on the host)"

# The CPU diffusion default (MNIST from inside the image), 50 steps.
run train -config configs/mnist_cond_cpu.yaml --set train.max_steps=50 --set samples=20 -o /kakusan/runs/diffusion \
  >"$work/diffusion.log" 2>&1 || { tail -20 "$work/diffusion.log"; fail "train mnist_cond_cpu.yaml for 50 steps"; }
ckpt=$work/diffusion/checkpoints/latest.safetensors
python3 - "$ckpt" <<'PY' || fail "$ckpt is not a safetensors file with the U-Net's weights"
import json, struct, sys
with open(sys.argv[1], 'rb') as f:
    n = struct.unpack('<Q', f.read(8))[0]
    head = json.loads(f.read(n))
assert any(k.endswith('down1.convs.0.weight') for k in head), sorted(head)[:5]
PY
grep -q '"step":50' "$work/diffusion/metrics.jsonl" || fail "metrics.jsonl has no line for step 50"
is_png "$work/diffusion/samples/final.png" || fail "the run's samples/final.png is not a PNG"
ok "train mnist_cond_cpu.yaml for 50 steps: checkpoint written to the mounted folder"
run sample --checkpoint /kakusan/runs/diffusion -n 20 --steps 10 -o /kakusan/runs/samples >"$work/sample.log" 2>&1 ||
  { tail -20 "$work/sample.log"; fail "sample from the diffusion checkpoint"; }
lines=$(wc -l <"$work/samples/manifest.jsonl")
[[ $lines == 20 ]] || fail "manifest.jsonl has $lines lines, want 20"
pngs=0
for f in "$work"/samples/*/*.png "$work"/samples/*.png; do
  [[ -f $f ]] || continue
  is_png "$f" || fail "$f is not a PNG"
  pngs=$((pngs + 1))
done
((pngs >= 20)) || fail "$pngs PNG files from sampling, want at least 20"
ok "sample 20 images from that checkpoint ($pngs PNGs, manifest of 20)"

run eval --help >"$work/eval.txt" 2>&1 || fail "eval --help exits non-zero"
grep -q -- '--judge' "$work/eval.txt" || fail "eval --help does not describe --judge"
ok "eval --help"
run train -config configs/fashion_cond_cpu.yaml --set train.max_steps=1 --set samples=10 -o /kakusan/runs/fashion >"$work/fashion.log" 2>&1 ||
  { tail -5 "$work/fashion.log"; fail "Fashion-MNIST is not usable in the image"; }
ok "Fashion-MNIST loads (one training step of fashion_cond_cpu.yaml)"
echo "image_test: passed in $((SECONDS - t0)) s"
