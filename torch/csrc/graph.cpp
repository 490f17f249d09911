// graph.cpp: CUDA graph capture and replay (at::cuda::CUDAGraph).
//
// Compiled with KK_CUDA_GRAPHS only when build_shim.sh finds a CUDA libtorch
// and CUDA's runtime headers; otherwise every call fails with a message and
// kk_cuda_graphs_available says 0, so a caller can fall back.
#include "internal.h"

#ifdef KK_CUDA_GRAPHS
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <optional>

struct kk_graph_s {
  at::cuda::CUDAGraph graph;
  // The side stream the capture runs on (capture may not use the default
  // stream), current between kk_graph_begin and kk_graph_end.
  std::optional<c10::cuda::CUDAStreamGuard> capturing;
};
#else
struct kk_graph_s {};
#endif

namespace {
[[noreturn]] void unavailable() {
  throw std::runtime_error(
      "CUDA graphs need a shim built against a CUDA libtorch with CUDA's runtime headers");
}
}  // namespace

extern "C" {

int kk_built_with(void) {
  int bits = kk::dist_built_with();
#ifdef KK_CUDA_BUILD
  bits |= KK_BUILT_CUDA;
#endif
#ifdef KK_CUDA_GRAPHS
  bits |= KK_BUILT_CUDA_GRAPHS;
#endif
  return bits;
}

int kk_cuda_graphs_available(void) {
#ifdef KK_CUDA_GRAPHS
  return kk_cuda_available();
#else
  return 0;
#endif
}

void kk_graph_begin(int dev_index, kk_graph *out, char **err) {
  KK_TRY(
#ifdef KK_CUDA_GRAPHS
      auto ambient = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(dev_index));
      ambient.synchronize();  // once per capture: the side stream starts after the queued work
      auto g = std::make_unique<kk_graph_s>();
      g->capturing.emplace(c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(dev_index)));
      g->graph.capture_begin();
      *out = g.release();
#else
      (void)dev_index; (void)out; unavailable();
#endif
  )
}

void kk_graph_end(kk_graph g, char **err) {
  KK_TRY(
#ifdef KK_CUDA_GRAPHS
      if (!g || !g->capturing) throw std::invalid_argument("graph: not capturing");
      try {
        g->graph.capture_end();
      } catch (...) {
        g->capturing.reset();
        throw;
      }
      g->capturing.reset();
#else
      (void)g; unavailable();
#endif
  )
}

void kk_graph_replay(kk_graph g, char **err) {
  KK_TRY(
#ifdef KK_CUDA_GRAPHS
      if (!g || g->capturing) throw std::invalid_argument("graph: replay before the capture ended");
      g->graph.replay();
#else
      (void)g; unavailable();
#endif
  )
}

void kk_graph_free(kk_graph g) {
#ifdef KK_CUDA_GRAPHS
  if (g && g->capturing) {  // a capture that failed half-way: end it, drop it
    try { g->graph.capture_end(); } catch (...) {}
    g->capturing.reset();
  }
#endif
  delete g;
}

}  // extern "C"
