#!/usr/bin/env bash
# base_images.sh: makes sure the CPU image's pinned base images exist in the
# local podman store: pulled when a registry answers, else stand-ins made
# here under the same tags:
#   debian:12.15-slim       debootstrap --variant=minbase bookworm (about 2-10
#                           minutes), its root tarred into `podman import`;
#                           the tarball is cached in $KAKUSAN_CACHE
#   golang:1.26.8-bookworm  that Debian plus this machine's Go (/usr/local/go
#                           or `go env GOROOT`), gcc and ca-certificates
# Images already in the store are kept: a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
# podman, runc and debootstrap come from Debian's packages.
need=()
for p in podman runc debootstrap; do command -v "$p" >/dev/null || need+=("$p"); done
if ((${#need[@]})) && [[ -z ${PODMAN:-} ]]; then
  command -v apt-get >/dev/null || { echo "base_images: missing ${need[*]} and no apt-get" >&2; exit 1; }
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo=sudo
  echo "base_images: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq podman runc debootstrap >/dev/null
fi
podman=${PODMAN:-podman --runtime runc --cgroup-manager=cgroupfs}
cache=${KAKUSAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kakusan}
arg() { sed -n "s/^ARG $1=//p" Dockerfile; }
debian=$(arg DEBIAN_IMAGE)
golang=$(arg GO_IMAGE)

have() { $podman image exists "$1"; }
pull() { timeout "${PULL_TIMEOUT:-60}" $podman pull -q "docker.io/library/$1" >/dev/null 2>&1 && $podman tag "docker.io/library/$1" "$1"; }

if ! have "$debian" && ! pull "$debian"; then
  tarball=$cache/bookworm-minbase.tar
  if [[ ! -s $tarball ]]; then
    command -v debootstrap >/dev/null || { echo "base_images: no registry and no debootstrap: apt-get install debootstrap" >&2; exit 1; }
    root=$(mktemp -d /var/tmp/kakusan-rootfs.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    echo "base_images: no registry; debootstrap bookworm for $debian" >&2
    debootstrap --variant=minbase bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$root.log" 2>&1 ||
      { tail -20 "$root.log" >&2; exit 1; }
    rm -f "$root.log"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    # Security updates, as the official image's sources have them.
    echo "deb http://deb.debian.org/debian-security bookworm-security main" >>"$root/etc/apt/sources.list"
    mkdir -p "$cache"
    tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
  fi
  $podman import -q --change 'CMD ["bash"]' "$tarball" "$debian" >/dev/null
  echo "base_images: $debian is a stand-in: Debian $($podman run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1000:1000 "$debian" cat /etc/debian_version) from debootstrap" >&2
fi

if ! have "$golang" && ! pull "$golang"; then
  goroot=$(go env GOROOT 2>/dev/null || echo /usr/local/go)
  want=${golang#golang:}; want=go${want%%-*}
  have_go=$("$goroot/bin/go" env GOVERSION)
  [[ $have_go == "$want" ]] || echo "base_images: warning: $golang stand-in gets this machine's $have_go" >&2
  echo "base_images: no registry; $golang from $debian and $goroot" >&2
  $podman build --network host --ulimit nofile=1024:1024 --ulimit nproc=1000:1000 -t "$golang" -f - "$goroot" <<DOCKERFILE
FROM $debian
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates gcc g++ libc6-dev git && rm -rf /var/lib/apt/lists/*
COPY . /usr/local/go
ENV GOPATH=/go PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /go
DOCKERFILE
fi
$podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^(docker.io/library/|localhost/)?(${debian}|${golang}) " >&2 || true
