// compat.h: the one place that papers over libtorch 1.13 vs 2.x differences.
#pragma once
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
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

namespace kk {

// Autocast state per device type. libtorch 2.4 made it one set of functions
// taking the device type; 1.13 has a pair per device (the "gpu" pair is
// CUDA's).
inline bool autocast_enabled(at::DeviceType d) {
#if TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(d);
#else
  return d == at::kCPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
#endif
}

inline void set_autocast_enabled(at::DeviceType d, bool on) {
#if TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(d, on);
#else
  if (d == at::kCPU)
    at::autocast::set_cpu_enabled(on);
  else
    at::autocast::set_enabled(on);
#endif
}

inline at::ScalarType autocast_dtype(at::DeviceType d) {
#if TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(d);
#else
  return d == at::kCPU ? at::autocast::get_autocast_cpu_dtype() : at::autocast::get_autocast_gpu_dtype();
#endif
}

inline void set_autocast_dtype(at::DeviceType d, at::ScalarType t) {
#if TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_dtype(d, t);
#else
  if (d == at::kCPU)
    at::autocast::set_autocast_cpu_dtype(t);
  else
    at::autocast::set_autocast_gpu_dtype(t);
#endif
}

}  // namespace kk
