#!/usr/bin/env bash
# setup.sh: installs what kakusan needs on Debian/Ubuntu, once.
#   libtorch-dev          libtorch 1.13 headers and libraries (CPU)
#   libgloo-dev           c10d's headers, for data-parallel work
#   libopenblas0-openmp   an optimised BLAS (libtorch falls back to the
#                         reference one without it)
#   dataset-fashion-mnist Fashion-MNIST's IDX files
#   python3-torch         PyTorch on the same libtorch: the interop tests load
#                         our checkpoints into the PyTorch twins of our
#                         models, and the benchmarks' peers run on it
#   protobuf-compiler, python3-protobuf
#                         an independent reader of the TensorBoard event
#                         files training writes (a test compiles the
#                         messages' .proto for Python's protobuf runtime)
# With LIBTORCH or TORCH_FROM_PYTHON set it installs nothing with apt: that
# machine brings its own libtorch (and, for Fashion-MNIST, data.dir). Go
# modules (MNIST among them) always come through `go mod download`.
# `setup.sh image` installs podman, runc, debootstrap and python3 instead
# (scripts/base_images.sh and scripts/image_test.sh run it); `setup.sh
# browser` installs Debian's chromium (make test-web drives the server's
# page in it).
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(libtorch-dev libgloo-dev libopenblas0-openmp dataset-fashion-mnist python3-torch protobuf-compiler python3-protobuf)
if [[ -n "${LIBTORCH:-}" || -n "${TORCH_FROM_PYTHON:-}" ]]; then
  pkgs=()
fi
# `setup.sh image`: what the container images' scripts need instead.
# (podman with its recommended packages, as these machines were checked with).
image="" recommends=--no-install-recommends
if [[ "${1:-}" == image ]]; then
  image=1 recommends="" pkgs=(podman runc debootstrap python3)
elif [[ "${1:-}" == browser ]]; then
  image=1 pkgs=(chromium) # image=1: no go mod download either
fi

missing=()
for p in "${pkgs[@]+"${pkgs[@]}"}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if ! command -v apt-get >/dev/null; then
    echo "setup: missing ${missing[*]} and no apt-get: install them by hand, or set LIBTORCH/TORCH_FROM_PYTHON" >&2
    exit 1
  fi
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo=sudo
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $recommends "${missing[@]}" >/dev/null
fi
[[ -n $image ]] || go mod download
