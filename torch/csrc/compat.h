// compat.h: the one place that papers over libtorch 1.13 vs 2.x differences.
#pragma once
#include <ATen/ATen.h>
#include <torch/version.h>

#include <vector>

// TORCH_AT_LEAST(2, 1) is true when compiling against libtorch 2.1 or newer.
#define TORCH_AT_LEAST(major, minor)                                       \
  (TORCH_VERSION_MAJOR > (major) ||                                        \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace kk {

// foreach_mul_ multiplies every tensor of ts in place by the 0-d tensor s,
// which stays where it is (on the device): no host read, so it may run under
// CUDA graph capture. libtorch 2.1 has _foreach_mul_.Tensor, one launch when
// s has the tensors' dtype (so s is cast to it when they all share one);
// 1.13 has no such overload (a Tensor would silently convert to a one-element
// TensorList there), so it is one mul_ per tensor.
inline void foreach_mul_(std::vector<at::Tensor> &ts, const at::Tensor &s) {
  if (ts.empty()) return;
  bool same = true;
  for (const auto &t : ts) same = same && t.scalar_type() == ts[0].scalar_type();
  at::Tensor c = same ? s.to(ts[0].scalar_type()) : s;
#if TORCH_AT_LEAST(2, 1)
  at::_foreach_mul_(ts, c);
#else
  for (auto &t : ts) t.mul_(c);
#endif
}

}  // namespace kk
