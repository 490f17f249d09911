// internal.h: helpers shared by the shim's translation units.
#pragma once
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "compat.h"
#include "kakusan.h"

struct kk_tensor_s {
  at::Tensor t;
};

namespace kk {

extern std::atomic<int64_t> live;
extern std::atomic<int64_t> host_reads;
extern thread_local bool bound;

// host_read counts one call that made the host read tensor values or wait
// for a device (kk_host_reads): the syncs a training step must not have.
inline void host_read() { host_reads.fetch_add(1, std::memory_order_relaxed); }

inline void set_err(char **err, const char *msg) {
  if (err) *err = strdup(msg ? msg : "unknown error");
}

inline void check_thread() {
  if (!bound)
    throw std::runtime_error(
        "torch call from a thread other than the torch thread (run it inside torch.Do)");
}

inline const at::Tensor &T(kk_tensor h) {
  if (!h) throw std::invalid_argument("nil tensor handle");
  return h->t;
}

// M returns the handle's tensor for the few non-const methods.
inline at::Tensor &M(kk_tensor h) {
  if (!h) throw std::invalid_argument("nil tensor handle");
  return h->t;
}

// Opt returns the tensor behind an optional handle (undefined when NULL).
inline at::Tensor Opt(kk_tensor h) { return h ? h->t : at::Tensor(); }

inline kk_tensor wrap(at::Tensor t) {
  live.fetch_add(1, std::memory_order_relaxed);
  return new kk_tensor_s{std::move(t)};
}

inline at::Device device(int dev, int index) {
  switch (dev) {
    case KK_CPU: return at::Device(at::kCPU);
    case KK_CUDA: return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw std::invalid_argument("unknown device type " + std::to_string(dev));
}

inline at::ScalarType dtype(int d) {
  switch (static_cast<at::ScalarType>(d)) {
    case at::kByte: case at::kChar: case at::kShort: case at::kInt: case at::kLong:
    case at::kHalf: case at::kFloat: case at::kDouble: case at::kBool:
    case at::kBFloat16:
      return static_cast<at::ScalarType>(d);
    default:
      throw std::invalid_argument("unsupported dtype code " + std::to_string(d));
  }
}

inline at::TensorOptions options(int dt, int dev, int index) {
  return at::TensorOptions().dtype(dtype(dt)).device(device(dev, index));
}

inline at::IntArrayRef dims(const int64_t *p, int n) {
  return at::IntArrayRef(p, static_cast<size_t>(n));
}

inline std::vector<at::Tensor> list(const kk_tensor *ts, int n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int i = 0; i < n; i++) v.push_back(T(ts[i]));
  return v;
}

// The c10d backends dist.cpp was compiled with, as KK_BUILT_* bits.
int dist_built_with();

}  // namespace kk

// KK_TRY wraps a function body: it checks the calling thread and turns every
// C++ exception into a message in *err.
#define KK_TRY(...)                                                 \
  try {                                                              \
    kk::check_thread();                                              \
    __VA_ARGS__                                                      \
  } catch (const c10::Error &e) {                                    \
    kk::set_err(err, e.what_without_backtrace());                    \
  } catch (const std::exception &e) {                                \
    kk::set_err(err, e.what());                                      \
  } catch (...) {                                                    \
    kk::set_err(err, "unknown C++ exception");                       \
  }

// KK_OUT stores a new tensor in *out.
#define KK_OUT(...) KK_TRY(*out = kk::wrap(__VA_ARGS__);)
