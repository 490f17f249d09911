#!/usr/bin/env bash
# image_test.sh [IMAGE]: runs kakusan's jobs inside the CPU image, as the
# image's non-root user, with no network, writing to a mounted folder, and
# checks what they wrote on the host (`make image-test` builds the image
# first). Exits non-zero on the first failed check, with the job's log.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-kakusan:cpu}
[[ -n ${PODMAN:-} ]] || scripts/setup.sh image # python3 reads the outputs
source scripts/container.sh
max_mb=${IMAGE_MAX_MB:-1000}
work=$(mktemp -d /var/tmp/kakusan-image-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
runs=$work/runs
mkdir -m 0700 "$runs"
# The image's user (uid 1000) must write the mounted folder: as root the
# folder is handed to that uid; otherwise the engine maps this user onto it.
userns=()
if [[ $(id -u) -eq 0 ]]; then chown 1000:1000 "$runs"; else userns=(--userns=keep-id:uid=1000,gid=1000); fi
run() { "${podman[@]}" run --rm --network none "${limits[@]}" "${userns[@]}" -v "$runs:/kakusan/runs" "$image" "$@"; }
fail() { echo "image_test: FAIL: $*" >&2; exit 1; }
ok() { echo "image_test: ok: $*"; }
# job NAME ARGS...: runs a job, its output in $work/NAME.log, shown if it fails.
job() {
  local name=$1
  shift
  run "$@" >"$work/$name.log" 2>&1 || { tail -20 "$work/$name.log" >&2; fail "$name: $*"; }
}
is_png() { [[ -s $1 && $(head -c 8 "$1" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]]; }
t0=$SECONDS

size=$(("$("${podman[@]}" image inspect --format '{{.Size}}' "$image")" / 1000000))
((size <= max_mb)) || fail "image $image is $size MB, more than $max_mb MB (IMAGE_MAX_MB)"
ok "image $image, $size MB (at most $max_mb)"
user=$("${podman[@]}" image inspect --format '{{.Config.User}}' "$image")
[[ $user == kakusan ]] || fail "the image runs as '${user:-root}', want kakusan"
uid=$(run sh -c 'id -u')
[[ $uid == 1000 ]] || fail "uid $uid inside the image, want 1000"
ok "runs as $user (uid $uid)"
tools=$(run sh -c 'for c in go gcc cc g++ c++ clang make; do command -v $c; done; true')
[[ -z $tools ]] || fail "the runtime image carries build tools: $tools"
ok "no Go or compilers in the runtime image"
libs=$(run sh -c 'test -f /kakusan/bin/libkakusan_torch.so && ldd /kakusan/bin/libkakusan_torch.so 2>&1' || true)
grep -q 'libtorch_cpu' <<<"$libs" || fail "ldd of the shim in the image: $libs"
! grep -q 'not found' <<<"$libs" || fail "the shim's libraries are incomplete: $(grep 'not found' <<<"$libs")"
ok "every library the shim links resolves ($(grep -c '=> /' <<<"$libs") of them)"
commands=$(run | sed -n 's/^commands: *//p')
[[ $(tr -s ' ' '\n' <<<"$commands" | sort | xargs) == "eval sample serve train" ]] || fail "the default command lists '$commands', want eval sample serve train"
ok "the default command lists the binaries: $commands"

# Ladder step 3 (a classical config): EM on Old Faithful, then sampling.
job gmm train -config configs/gmm_old_faithful.yaml -o /kakusan/runs/gmm
python3 -c 'import json, sys; p = json.load(open(sys.argv[1])); assert p, "empty params"' "$runs/gmm/params.json" || fail "gmm params.json does not parse"
is_png "$runs/gmm/fit.png" || fail "gmm fit.png is not a PNG"
job gmm-sample sample --run /kakusan/runs/gmm -n 500 -o /kakusan/runs/gmm/samples.csv
rows=$(($(wc -l <"$runs/gmm/samples.csv") - 1))
[[ $rows == 500 ]] || fail "gmm samples.csv has $rows rows, want 500"
ok "train gmm_old_faithful.yaml (params.json, fit.png), then sample 500 points into a CSV"

# The CPU diffusion default (MNIST from inside the image), 50 steps.
job diffusion train -config configs/mnist_cond_cpu.yaml --set train.max_steps=50 --set samples=20 -o /kakusan/runs/diffusion
python3 - "$runs/diffusion" <<'PY' || fail "the diffusion run's checkpoint or metrics are not those of 50 steps"
import json, struct, sys
run = sys.argv[1]
with open(run + '/checkpoints/latest.safetensors', 'rb') as f:
    n = struct.unpack('<Q', f.read(8))[0]
    head = json.loads(f.read(n))
assert any(k.endswith('down1.convs.0.weight') for k in head), sorted(head)[:5]
steps = [json.loads(l).get('step', 0) for l in open(run + '/metrics.jsonl')]
assert max(steps) == 50, max(steps)
PY
is_png "$runs/diffusion/samples/final.png" || fail "the run's samples/final.png is not a PNG"
ok "train mnist_cond_cpu.yaml for 50 steps: checkpoint (the U-Net's weights), metrics to step 50, a PNG grid"
job diffusion-sample sample --checkpoint /kakusan/runs/diffusion -n 20 --steps 10 -o /kakusan/runs/samples
files=$(python3 -c 'import json, sys; [print(json.loads(l)["file"]) for l in open(sys.argv[1])]' "$runs/samples/manifest.jsonl") ||
  fail "the sampling job's manifest does not parse"
[[ $(wc -l <<<"$files") == 20 ]] || fail "the manifest names $(wc -l <<<"$files") images, want 20"
for f in $files; do is_png "$runs/samples/$f" || fail "$f, named by the manifest, is not a PNG"; done
ok "sample 20 images from that checkpoint: each image the manifest names is a PNG"

# bin/serve inside the image on the host's loopback (--network host): ready,
# two images as a grid PNG, then SIGTERM drains it and it exits 0.
port=${SERVE_PORT:-18931}
name=kakusan-image-test-serve-$$
"${podman[@]}" run -d --name "$name" --network host "${limits[@]}" "${userns[@]}" -v "$runs:/kakusan/runs" "$image" \
  serve --checkpoint /kakusan/runs/diffusion --addr 127.0.0.1:$port >/dev/null
python3 - "$port" "$work/serve.png" <<'PY' || { "${podman[@]}" logs "$name" >&2; "${podman[@]}" rm -f "$name" >/dev/null; fail "bin/serve in the image did not answer"; }
import sys, time, urllib.request
port, out = sys.argv[1], sys.argv[2]
for _ in range(300):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).read()
        break
    except OSError:
        time.sleep(0.2)
req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/images", data=b'{"n": 2, "steps": 5, "format": "png"}', headers={"Content-Type": "application/json"})
open(out, "wb").write(urllib.request.urlopen(req, timeout=60).read())
PY
"${podman[@]}" stop -t 30 "$name" >/dev/null
code=$("${podman[@]}" inspect --format '{{.State.ExitCode}}' "$name")
"${podman[@]}" logs "$name" >"$work/serve.log" 2>&1 || true
"${podman[@]}" rm "$name" >/dev/null
is_png "$work/serve.png" || fail "bin/serve's grid is not a PNG"
[[ $code == 0 ]] && grep -q "drained" "$work/serve.log" || { cat "$work/serve.log" >&2; fail "bin/serve exited $code after SIGTERM"; }
ok "serve that checkpoint: ready, a grid of two images, SIGTERM drains it (exit 0)"

job eval-help eval --help
grep -q -- '--judge' "$work/eval-help.log" || fail "eval --help does not describe --judge"
ok "eval --help"
job version train --version
rev=$(git rev-parse HEAD 2>/dev/null || echo unknown)
grep -q "revision $rev" "$work/version.log" && grep -q "shim ABI" "$work/version.log" ||
  { cat "$work/version.log" >&2; fail "train --version does not name revision $rev and the shim"; }
ok "train --version: revision ${rev:0:12}, $(grep -o 'libtorch [^,]*' "$work/version.log")"
job fashion train -config configs/fashion_cond_cpu.yaml --set train.max_steps=1 --set samples=10 -o /kakusan/runs/fashion
ok "Fashion-MNIST loads (one training step of fashion_cond_cpu.yaml)"
# Data parallelism inside the image: two ranks on Gloo over the container's
# loopback (its shim has c10d's Gloo), rank 0 writing the run.
job dist sh -c 'export WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29400 GLOO_SOCKET_IFNAME=lo KAKUSAN_THREADS=1
  a="-config configs/mnist_classifier.yaml --set data.subset=512 --set data.test_subset=64 --set train.max_steps=4 --set classifier.hidden=16 -o /kakusan/runs/dist"
  RANK=1 /kakusan/bin/train $a & p=$!
  RANK=0 /kakusan/bin/train $a; r0=$?; wait $p; r1=$?; [ $r0 = 0 ] && [ $r1 = 0 ]'
grep -q 'data parallel: 2 ranks (gloo)' "$work/dist.log" || fail "the two-rank run did not report two ranks"
python3 - "$runs/dist" <<'PY' || fail "the two-rank run's checkpoint is not of step 4 and world size 2"
import json, struct, sys
with open(sys.argv[1] + '/checkpoints/latest.safetensors', 'rb') as f:
    meta = json.loads(f.read(struct.unpack('<Q', f.read(8))[0]))['__metadata__']
assert meta['kakusan.step'] == '4' and meta['kakusan.world_size'] == '2', meta
PY
ok "data-parallel training, two ranks on Gloo in one container: a checkpoint of world size 2"
echo "image_test: passed in $((SECONDS - t0)) s"
