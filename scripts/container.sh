# container.sh, sourced by the image scripts: the container engine as these
# machines run it. Podman with runc and cgroupfs (crun fails on hybrid
# cgroups) and explicit limits (the defaults exceed the host's hard limits
# and runc refuses them; nproc counts the host uid's threads, so it is set
# well above what a job needs). PODMAN=docker works too; the build mounts
# the host's CA bundle only under podman (`docker build` has no -v).
read -r -a podman <<<"${PODMAN:-podman --runtime runc --cgroup-manager=cgroupfs}"
limits=(--ulimit nofile=1024:1024 --ulimit nproc=16384:16384)
build_flags=(--network host "${limits[@]}")
ca=/etc/ssl/certs/ca-certificates.crt
# Behind a proxy that re-signs TLS, `go mod download` in kakusan's build
# needs the host's CA bundle: mounted read-only over the build stage's own
# for its RUN steps, never copied (not for images that install
# ca-certificates themselves: its script cannot replace a mounted file).
ca_mount=()
if [[ ${podman[0]} == podman && -f $ca ]]; then ca_mount=(-v "$ca:$ca:ro"); fi
