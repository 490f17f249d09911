#!/usr/bin/env bash
# image_build.sh [IMAGE]: builds the CPU image (`make image`), after making
# sure its base images exist (scripts/base_images.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/base_images.sh
source scripts/container.sh
# --version's revision: the context leaves .git out.
rev=$(git rev-parse HEAD 2>/dev/null || echo unknown)
[[ $rev != unknown && -n $(git status --porcelain 2>/dev/null) ]] && rev="$rev-modified"
"${podman[@]}" build "${build_flags[@]}" "${ca_mount[@]}" --build-arg "KAKUSAN_REVISION=$rev" --target cpu -t "${1:-kakusan:cpu}" .
