#!/usr/bin/env bash
# base_images.sh: makes sure the CPU image's pinned base images (the ARGs at
# the top of the Dockerfile) exist in the local image store: pulled when the
# registry answers, else stand-ins made here under the same tags, labelled
# kakusan.standin (a later run with a registry replaces them):
#   debian:12.15-slim       debootstrap --variant=minbase bookworm (2-10
#                           minutes), its root tarred into `podman import`;
#                           the tarball is cached in $KAKUSAN_CACHE
#   golang:1.26.8-bookworm  that Debian plus this machine's Go (`go env
#                           GOROOT`, else /usr/local/go), gcc and CA certificates
# `base_images.sh torch2` also makes the libtorch 2.x test image's bases
# (ARG TRIXIE_IMAGE, GO_TRIXIE_IMAGE): the same two from Debian 13 (trixie).
# Images already in the store are kept: a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -n ${PODMAN:-} ]] || scripts/setup.sh image
source scripts/container.sh
cache=${KAKUSAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kakusan}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
sudo=""
[[ $(id -u) -ne 0 ]] && sudo=sudo
arg() { sed -n "s/^ARG $1=//p" Dockerfile; }
debian=$(arg DEBIAN_IMAGE)
golang=$(arg GO_IMAGE)
suite=${golang##*-} # bookworm: the Go image's Debian, which the stand-ins share

have() { "${podman[@]}" image inspect "$1" >/dev/null 2>&1; }
standin() { [[ $("${podman[@]}" image inspect --format '{{index .Config.Labels "kakusan.standin"}}' "$1" 2>/dev/null) == 1 ]]; }
# registry: whether docker.io answers at all (a quick probe). A pull that
# then fails (a proxy that refuses it, a tag that does not exist) makes a
# stand-in too, after a warning that names the tag.
registry() { timeout 10 bash -c 'exec 3<>/dev/tcp/registry-1.docker.io/443' 2>/dev/null; }
pull() {
  echo "base_images: pulling $1" >&2
  "${podman[@]}" pull "docker.io/library/$1" && "${podman[@]}" tag "docker.io/library/$1" "$1"
}
# online: whether docker.io answers, probed once and only when an image is
# missing or a stand-in.
online=""
is_online() {
  if [[ -z $online ]]; then
    online=0
    registry && online=1
    ((online)) || echo "base_images: docker.io does not answer: missing base images are made here" >&2
  fi
  ((online))
}

ensure() { # ensure TAG MAKE [ARGS]: TAG in the store, pulled or made by MAKE TAG ARGS
  if have "$1" && ! standin "$1"; then return; fi
  if is_online; then
    pull "$1" && return
    echo "base_images: WARNING: docker.io answers but $1 could not be pulled: making a stand-in" >&2
  elif have "$1"; then
    return # the stand-in stays until a registry answers
  fi
  "$2" "$1" "${@:3}"
}

make_debian() { # make_debian TAG [SUITE]
  local suite=${2:-$suite}
  local tarball=$cache/$suite-minbase.tar
  if [[ ! -s $tarball ]]; then
    root=$(mktemp -d /var/tmp/kakusan-rootfs.XXXXXX) # global: the EXIT trap removes it
    trap '$sudo rm -rf "$root" "$root.log"' EXIT
    echo "base_images: debootstrap $suite for $1" >&2
    $sudo debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1 ||
      { tail -20 "$root.log" >&2; exit 1; }
    $sudo rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    # Updates and security fixes, as the official image's sources have them.
    printf 'deb %s %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' "$mirror" "$suite" "$suite" |
      $sudo tee -a "$root/etc/apt/sources.list" >/dev/null
    mkdir -p "$cache"
    $sudo tar -C "$root" -cf "$tarball.tmp" . && $sudo chown "$(id -u):$(id -g)" "$tarball.tmp" && mv "$tarball.tmp" "$tarball"
  fi
  "${podman[@]}" import -q --change 'CMD ["bash"]' --change 'LABEL kakusan.standin=1' "$tarball" "$1" >/dev/null
  echo "base_images: $1 is a stand-in: Debian $("${podman[@]}" run --rm --network none "${limits[@]}" "$1" cat /etc/debian_version) from debootstrap" >&2
}

make_golang() { # make_golang TAG [FROM]
  local goroot want from=${2:-$debian}
  goroot=$(go env GOROOT 2>/dev/null || echo /usr/local/go)
  want=${1#golang:}
  want=go${want%%-*}
  [[ $("$goroot/bin/go" env GOVERSION) == "$want" ]] ||
    echo "base_images: warning: the $1 stand-in gets this machine's $("$goroot/bin/go" env GOVERSION)" >&2
  echo "base_images: $1 from $from and $goroot" >&2
  "${podman[@]}" build "${build_flags[@]}" -t "$1" -f - "$goroot" <<DOCKERFILE
FROM $from
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates gcc g++ libc6-dev git && rm -rf /var/lib/apt/lists/*
COPY . /usr/local/go
ENV GOPATH=/go PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /go
LABEL kakusan.standin=1
DOCKERFILE
}

images=("$debian" "$golang")
ensure "$debian" make_debian
ensure "$golang" make_golang
if [[ ${1:-} == torch2 ]]; then
  trixie=$(arg TRIXIE_IMAGE) gotrixie=$(arg GO_TRIXIE_IMAGE)
  ensure "$trixie" make_debian trixie
  ensure "$gotrixie" make_golang "$trixie"
  images+=("$trixie" "$gotrixie")
fi
for image in "${images[@]}"; do
  echo "base_images: $image $("${podman[@]}" image inspect --format '{{.Size}}' "$image" | awk '{printf "%d MB", $1 / 1e6}')$(standin "$image" && echo ' (stand-in)')" >&2
done
