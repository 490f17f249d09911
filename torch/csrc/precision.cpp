// precision.cpp: autocast, TF32, cuDNN benchmark mode and memory formats.
#include <malloc.h>

#include "internal.h"

using kk::T;

namespace {
at::DeviceType autocast_device(int dev) {
  switch (dev) {
    case KK_CPU: return at::kCPU;
    case KK_CUDA: return at::kCUDA;
  }
  throw std::invalid_argument("autocast: unknown device type " + std::to_string(dev));
}

at::MemoryFormat format(int f) {
  switch (f) {
    case KK_CONTIGUOUS_FORMAT: return at::MemoryFormat::Contiguous;
    case KK_CHANNELS_LAST: return at::MemoryFormat::ChannelsLast;
  }
  throw std::invalid_argument("unknown memory format " + std::to_string(f));
}

// As format, but a tensor that is not 4-d keeps the contiguous format
// (channels-last is only defined for 4-d tensors).
at::MemoryFormat format_for(const at::Tensor &t, int f) {
  return t.dim() == 4 ? format(f) : at::MemoryFormat::Contiguous;
}
}  // namespace

extern "C" {

void kk_autocast_push(int dev, int dtype, int *prev_on, int *prev_dtype, char **err) {
  KK_TRY(at::DeviceType d = autocast_device(dev); at::ScalarType t = kk::dtype(dtype);
         if (t != at::kBFloat16 && t != at::kHalf && t != at::kFloat)
           throw std::invalid_argument("autocast: dtype must be bfloat16, float16 or float32 (off)");
         *prev_on = kk::autocast_enabled(d);
         *prev_dtype = static_cast<int>(kk::autocast_dtype(d));
         if (t != at::kFloat) kk::set_autocast_dtype(d, t);
         kk::set_autocast_enabled(d, t != at::kFloat);
         at::autocast::increment_nesting();)
}

void kk_autocast_pop(int dev, int prev_on, int prev_dtype, char **err) {
  KK_TRY(at::DeviceType d = autocast_device(dev);
         if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
         kk::set_autocast_enabled(d, prev_on != 0);
         kk::set_autocast_dtype(d, static_cast<at::ScalarType>(prev_dtype));)
}

int kk_autocast_cache(int on) {
  bool prev = at::autocast::is_autocast_cache_enabled();
  at::autocast::set_autocast_cache_enabled(on != 0);
  return prev;
}

int kk_set_tf32(int on) {
  auto &ctx = at::globalContext();
  bool prev = ctx.allowTF32CuBLAS();
  ctx.setAllowTF32CuBLAS(on != 0);
  ctx.setAllowTF32CuDNN(on != 0);
  return prev;
}

int kk_tune_malloc(int64_t mmap_threshold, int64_t trim_threshold) {
  int ok = mallopt(M_MMAP_THRESHOLD, static_cast<int>(std::min<int64_t>(mmap_threshold, INT32_MAX)));
  return mallopt(M_TRIM_THRESHOLD, static_cast<int>(std::min<int64_t>(trim_threshold, INT32_MAX))) && ok;
}

int kk_malloc_trim(void) { return malloc_trim(0); }

int kk_set_cudnn_benchmark(int on) {
  auto &ctx = at::globalContext();
  bool prev = ctx.benchmarkCuDNN();
  ctx.setBenchmarkCuDNN(on != 0);
  return prev;
}

// laid_out reports whether x's strides say format m. A tensor with one
// channel (or a 1×1 image) is contiguous in both formats, and contiguous()
// leaves it as it is; libtorch then takes its strides for NCHW, and a
// convolution of it writes NCHW, reordered on the way in and out of oneDNN.
// Such a tensor gets channels-last strides of its own (clone).
static bool laid_out(const at::Tensor &x, at::MemoryFormat m) {
  return x.is_contiguous(m) && (m != at::MemoryFormat::ChannelsLast ||
                                x.suggest_memory_format() == at::MemoryFormat::ChannelsLast);
}

void kk_contiguous_as(kk_tensor t, int f, kk_tensor *out, char **err) {
  KK_TRY(const at::Tensor &x = T(t); at::MemoryFormat m = format_for(x, f);
         *out = kk::wrap(laid_out(x, m) ? x : x.clone(m));)
}

int kk_is_contiguous_as(kk_tensor t, int f, char **err) {
  KK_TRY(return T(t).is_contiguous(format_for(T(t), f));)
  return 0;
}

void kk_set_memory_format_(kk_tensor t, int f, char **err) {
  KK_TRY(at::Tensor &x = kk::M(t); at::NoGradGuard g;
         at::MemoryFormat m = format_for(x, f);
         if (!laid_out(x, m)) x.set_data(x.clone(m));)
}

void kk_pin_memory(kk_tensor t, kk_tensor *out, char **err) { KK_OUT(T(t).pin_memory()) }

void kk_to_async(kk_tensor t, int dev, int dev_index, kk_tensor *out, char **err) {
  KK_OUT(T(t).to(kk::device(dev, dev_index), /*non_blocking=*/true))
}

}  // extern "C"
