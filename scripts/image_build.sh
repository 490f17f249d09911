#!/usr/bin/env bash
# image_build.sh [IMAGE]: builds the CPU image (`make image`), after making
# sure its base images exist (scripts/base_images.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/base_images.sh
source scripts/container.sh
"${podman[@]}" build "${build_flags[@]}" "${ca_mount[@]}" --target cpu -t "${1:-kakusan:cpu}" .
