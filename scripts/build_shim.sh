#!/usr/bin/env bash
# build_shim.sh OUT_DIR: compiles torch/csrc into OUT_DIR/libkakusan_torch.so.
#
# Which libtorch:
#   default               Debian's libtorch-dev (headers in /usr/include)
#   LIBTORCH=/path        an unpacked libtorch 2.x (include/ and lib/ below it)
#   TORCH_FROM_PYTHON=py  the libtorch inside that python's pip-installed torch
#   Debian's libtorch-cuda-dev (contrib) is found like libtorch-dev.
# A libtorch with libtorch_cuda.so gets a CUDA build: torch_cuda and c10_cuda
# are linked with --no-as-needed, or CUDA would be silently unavailable.
#
# KAKUSAN_EXPECT_CUDA=1 makes a build without CUDA, without CUDA graphs
# (graph.cpp) or without NCCL (dist.cpp) an error that names what is
# missing; without it those are dropped with a message, and the trainer
# falls back to eager steps and Gloo (the GPU check sets it).
# KAKUSAN_SHIM_OBJECTS=DIR keeps the object files there.
set -euo pipefail
out=${1:-bin}
root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/torch/csrc
mkdir -p "$out"
obj=$(mktemp -d)
trap 'rm -rf "$obj"' EXIT

abi=${TORCH_CXX11_ABI:-1}
if [[ -n "${TORCH_FROM_PYTHON:-}" ]]; then
  read -r base abi < <("$TORCH_FROM_PYTHON" -c 'import os, torch; print(os.path.dirname(torch.__file__), int(torch._C._GLIBCXX_USE_CXX11_ABI))')
  inc="-I$base/include -I$base/include/torch/csrc/api/include"
  libdir=$base/lib
elif [[ -n "${LIBTORCH:-}" ]]; then
  inc="-I$LIBTORCH/include -I$LIBTORCH/include/torch/csrc/api/include"
  libdir=$LIBTORCH/lib
else
  inc="-I/usr/include/torch/csrc/api/include"
  libdir=""
  if [[ ! -f /usr/include/torch/csrc/api/include/torch/version.h ]]; then
    echo "build_shim: libtorch headers not found; run scripts/setup.sh, or set LIBTORCH or TORCH_FROM_PYTHON" >&2
    exit 1
  fi
  # Debian's CUDA libtorch (libtorch-cuda-dev) sits where the CPU one does.
  multiarch=$(${CXX:-g++} -print-multiarch 2>/dev/null || true)
  [[ -n $multiarch && -f /usr/lib/$multiarch/libtorch_cuda.so ]] && libdir=/usr/lib/$multiarch
fi
expect_cuda=${KAKUSAN_EXPECT_CUDA:-0}
[[ $expect_cuda == 0 ]] && expect_cuda=""
die() { echo "build_shim: $*" >&2; exit 1; }

# libtorch 2.x headers want C++20 from 2.10 on; 1.13's are C++17.
hdr=$(for d in $inc; do f=${d#-I}/torch/version.h; [[ -f $f ]] && echo "$f"; done | head -1)
major=$(awk '/define TORCH_VERSION_MAJOR/ {print $3}' "$hdr")
minor=$(awk '/define TORCH_VERSION_MINOR/ {print $3}' "$hdr")
std=c++17
[[ "$major" -ge 2 ]] && std=c++20

libs="-ltorch -ltorch_cpu -lc10"
rpath=""
cuda="" cudaflag=""
if [[ -n "$libdir" ]]; then
  # A system libdir is on the linker's path and the loader's already.
  [[ $libdir == /usr/lib/* ]] || rpath="-L$libdir -Wl,-rpath,$libdir"
  if [[ -f $libdir/libtorch_cuda.so ]]; then
    cuda=1 cudaflag="-DKK_CUDA_BUILD"
    libs="-Wl,--no-as-needed -ltorch_cuda -lc10_cuda $libs -Wl,--as-needed"
    echo "build_shim: CUDA build against $libdir" >&2
  fi
fi
[[ -n $expect_cuda && -z $cuda ]] && die "KAKUSAN_EXPECT_CUDA is set but this libtorch has no libtorch_cuda.so (${libdir:-/usr/lib}): not a CUDA build"

flags="-std=$std -O2 -fPIC -fvisibility=hidden -D_GLIBCXX_USE_CXX11_ABI=$abi -Wall -Wno-unused-function $cudaflag $inc"
# CUDA graphs (graph.cpp) also need CUDA's runtime headers: a toolkit's, or
# the ones pip's nvidia-cuda-runtime package ships beside torch. Without
# them, or if that build fails, graph.cpp builds without capture and the
# training loop falls back to eager steps, saying so.
# Debian's nvidia-cuda-dev puts them in /usr/include.
graphflags=""
if [[ -n $cuda ]]; then
  for d in "${CUDA_HOME:-/usr/local/cuda}/include" "$libdir"/../../nvidia/cuda_runtime/include "$libdir"/../../nvidia/cu*/include /usr/include; do
    if [[ -f $d/cuda_runtime_api.h ]]; then graphflags="-DKK_CUDA_GRAPHS -I$d"; break; fi
  done
  [[ -n $expect_cuda && -z $graphflags ]] && die "KAKUSAN_EXPECT_CUDA is set but CUDA's runtime headers (cuda_runtime_api.h) are not found: set CUDA_HOME"
fi
# graph.cpp calls CUDA's runtime (c10's CUDA guards inline cudaEvent* and
# cudaStream* calls), so the shim names libcudart itself: a toolkit's, pip's
# nvidia-cuda-runtime (a versioned file only, linked by its path), or
# Debian's. Without it the -z defs link below fails, and without -z defs
# the shim would lean on libtorch_cuda having loaded it first.
cudart=""
if [[ -n $graphflags ]]; then
  for f in "${CUDA_HOME:-/usr/local/cuda}"/lib64/libcudart.so "$libdir"/../../nvidia/cuda_runtime/lib/libcudart.so* \
    ${multiarch:+/usr/lib/$multiarch/libcudart.so}; do
    if [[ -f $f ]]; then
      cudart=$f
      [[ $f == /usr/lib/* ]] || rpath="$rpath -Wl,-rpath,$(dirname "$f")"
      break
    fi
  done
  if [[ -z $cudart ]]; then
    [[ -n $expect_cuda ]] && die "KAKUSAN_EXPECT_CUDA is set but CUDA's runtime library (libcudart.so) is not found: set CUDA_HOME"
    echo "build_shim: libcudart not found: building without CUDA graphs" >&2
    graphflags=""
  fi
fi
# c10d (dist.cpp): Gloo where its headers are (Debian's libgloo-dev; a pip
# torch's include/); NCCL in a CUDA build where nccl.h is (a toolkit's, or
# pip's nvidia-nccl package), tried first and dropped if that build fails.
distflags=""
for d in /usr/include ${inc//-I/}; do
  [[ -f $d/gloo/algorithm.h ]] && { distflags="-DUSE_C10D_GLOO"; break; }
done
ncclflags=""
if [[ -n "$graphflags" ]]; then
  for d in "${CUDA_HOME:-/usr/local/cuda}/include" "$libdir"/../../nvidia/nccl/include /usr/include; do
    if [[ -f $d/nccl.h ]]; then ncclflags="-DUSE_C10D_NCCL -I$d ${graphflags#-DKK_CUDA_GRAPHS }"; break; fi
  done
fi
[[ -n $expect_cuda && -z $ncclflags ]] && die "KAKUSAN_EXPECT_CUDA is set but NCCL's header (nccl.h) is not found: set CUDA_HOME, or install NCCL's headers"
# norm.cpp, bnorm.cpp and upsample.cpp hold the shim's own CPU kernels (kernels.h):
# -O3 vectorises their loops (for each instruction set its target_clones
# name), and -fopenmp makes at::parallel_for, inlined from libtorch's
# headers, the OpenMP loop libtorch's own kernels run (without it the
# header compiles to a serial loop).
# The OpenMP runtime is libtorch's own: a pip torch or a libtorch archive
# bundles a libgomp under a hashed name, and a second runtime beside it
# would run its own threads, deaf to torch.set_num_threads. Debian's
# libtorch uses the system's (-fopenmp links it).
omp="-fopenmp"
if [[ -n "$libdir" ]]; then
  bundled=$(ls "$libdir"/libgomp*.so* 2>/dev/null | head -1 || true)
  [[ -n "$bundled" ]] && omp="$bundled"
fi
pids=() names=()
for f in "$src"/*.cpp; do
  [[ $(basename "$f") == graph.cpp || $(basename "$f") == dist.cpp ]] && continue
  extra=""
  # (GCC 14 at -O3 warns falsely inside std::vector<bool>::reserve, which
  # libtorch's autograd::Function inlines: its bug 107852's kin.)
  [[ $(basename "$f") == norm.cpp || $(basename "$f") == bnorm.cpp || $(basename "$f") == upsample.cpp ]] && extra="-O3 -fopenmp -Wno-array-bounds"
  ${CXX:-g++} $flags $extra -c "$f" -o "$obj/$(basename "$f" .cpp).o" & pids+=($!) names+=("$(basename "$f")")
done
if [[ -n "$graphflags" ]] && ${CXX:-g++} $flags $graphflags -c "$src/graph.cpp" -o "$obj/graph.o" 2>"$obj/graph.log"; then
  echo "build_shim: CUDA graphs on" >&2
  graph="graph.cpp (CUDA graphs)"
else
  [[ -n "$graphflags" ]] && { echo "build_shim: graph.cpp failed with CUDA graphs; building without them:" >&2; head -20 "$obj/graph.log" >&2; }
  [[ -n $expect_cuda ]] && die "KAKUSAN_EXPECT_CUDA is set and graph.cpp failed with CUDA graphs"
  ${CXX:-g++} $flags -c "$src/graph.cpp" -o "$obj/graph.o"
  graph="graph.cpp (eager only)"
fi
if [[ -n "$ncclflags" ]] && ${CXX:-g++} $flags $distflags $ncclflags -c "$src/dist.cpp" -o "$obj/dist.o" 2>"$obj/dist.log"; then
  echo "build_shim: c10d with NCCL${distflags:+ and Gloo}" >&2
  dist="dist.cpp (NCCL${distflags:+, Gloo})"
else
  [[ -n "$ncclflags" ]] && { echo "build_shim: dist.cpp failed with NCCL; building without it:" >&2; head -20 "$obj/dist.log" >&2; }
  [[ -n $expect_cuda ]] && die "KAKUSAN_EXPECT_CUDA is set and dist.cpp failed with NCCL"
  [[ -z "$distflags" ]] && echo "build_shim: no gloo headers: data-parallel training unavailable" >&2
  ${CXX:-g++} $flags $distflags -c "$src/dist.cpp" -o "$obj/dist.o"
  dist="dist.cpp (Gloo)"
  [[ -z $distflags ]] && dist="dist.cpp (no c10d)"
fi
failed=()
for i in "${!pids[@]}"; do wait "${pids[$i]}" || failed+=("${names[$i]}"); done
((${#failed[@]} == 0)) || die "failed to compile: ${failed[*]}"
echo "build_shim: compiled ${names[*]} $graph $dist${cuda:+ (CUDA build)} against libtorch $major.$minor" >&2
[[ -n ${KAKUSAN_SHIM_OBJECTS:-} ]] && { mkdir -p "$KAKUSAN_SHIM_OBJECTS"; cp "$obj"/*.o "$KAKUSAN_SHIM_OBJECTS"/; }
# -z defs: every symbol the shim uses must be defined by the libraries it
# names, so a libtorch that lacks one fails here rather than at load time.
${CXX:-g++} -shared -Wl,-z,defs -o "$out/libkakusan_torch.so.tmp" "$obj"/*.o $rpath $libs ${cudart:+-Wl,--no-as-needed "$cudart" -Wl,--as-needed} $omp
mv "$out/libkakusan_torch.so.tmp" "$out/libkakusan_torch.so"
echo "build_shim: wrote $out/libkakusan_torch.so" >&2
