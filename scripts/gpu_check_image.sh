#!/bin/sh
# gpu_check inside the CUDA image (`docker run --gpus all IMAGE gpu_check`):
# the torch package's tests on CUDA against the image's shim (a CPU-only
# shim fails them), then one epoch of configs/mnist_cond.yaml in bf16 and a
# DDIM-50 sampling job, with their speeds. Writes under ${OUT:-/tmp/gpu_check}.
# The full check with PyTorch peers is scripts/gpu_check.sh in the source tree.
set -u
out=${OUT:-/tmp/gpu_check}
mkdir -p "$out"
status=0
echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || status=1
python3 -c 'import torch; print("image torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())'
echo "== torch package tests on CUDA"
KAKUSAN_TEST_DEVICE=cuda KAKUSAN_EXPECT_CUDA=1 /kakusan/bin/torch.test -test.count=1 -test.v >"$out/test_cuda.log" 2>&1 || status=1
grep -E '^(--- FAIL|FAIL|ok|PASS)' "$out/test_cuda.log" | head -20
echo "passed: $(grep -c '^--- PASS' "$out/test_cuda.log"), failed: $(grep -c '^--- FAIL' "$out/test_cuda.log")"
echo "== mnist_cond.yaml, one epoch, bf16 channels-last, then DDIM-50 sampling"
train -config /kakusan/configs/mnist_cond.yaml --device cuda --set train.epochs=1 --set train.precision=bf16 \
  --set unet.channels_last=true --set diffusion.sample_precision=bf16 --out "$out/run" >"$out/train.log" 2>&1 || { status=1; tail -5 "$out/train.log"; }
grep 'test loss' "$out/train.log" | tail -1
sample --checkpoint "$out/run" --n 5000 --batch 500 --device cuda --out "$out/samples" >"$out/sample.log" 2>&1 || { status=1; tail -5 "$out/sample.log"; }
tail -1 "$out/sample.log"
[ $status -eq 0 ] && echo "gpu_check: passed" || echo "gpu_check: FAILED (logs in $out)"
exit $status
