#!/usr/bin/env bash
# image_libs.sh LIB OUT: copies the shared libraries LIB loads (ldd's
# closure, glibc's own left to the base image) into OUT/lib under the names
# they are loaded by, and the Debian copyright files of the packages they
# come from into OUT/doc. The CPU image's build stage runs it on the shim,
# so the runtime stage carries libtorch without the 1.4 GB its package pulls.
set -euo pipefail
lib=$1 out=$2
mkdir -p "$out/lib" "$out/doc"
deps=$(ldd "$lib")
if grep 'not found' <<<"$deps" >&2; then exit 1; fi
mapfile -t libs < <(awk '$3 ~ /^\// {print $3}' <<<"$deps" |
  grep -Ev '/(libc|libm|libpthread|libdl|librt|libresolv|libutil|ld-linux[^/]*)\.so' | sort -u)
cp -L -t "$out/lib/" "${libs[@]}"
for l in "${libs[@]}"; do
  real=$(readlink -f "$l")
  dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null || echo "image_libs: no package owns $real" >&2
done | cut -d: -f1 | sort -u | while read -r pkg; do
  if [[ -f /usr/share/doc/$pkg/copyright ]]; then
    mkdir -p "$out/doc/$pkg" && cp /usr/share/doc/"$pkg"/copyright "$out/doc/$pkg/"
  fi
done
echo "image_libs: $(ls "$out/lib" | wc -l) libraries ($(du -sh "$out/lib" | cut -f1)), $(ls "$out/doc" | wc -l) packages' copyright files" >&2
