// kernels.h: what the shim's own CPU kernels (norm.cpp, upsample.cpp)
// share: instruction-set clones, bfloat16 rows and memory layouts.
//
// The kernels are plain loops the compiler vectorises: build_shim.sh
// compiles their files with -O3, and KK_CLONES compiles each entry point
// for AVX-512, AVX2 and baseline x86-64, one picked at load time
// (target_clones). Helpers marked KK_INLINE are inlined into every clone.
// Files with kernels also get -fopenmp, without which at::parallel_for,
// inlined from libtorch's headers, compiles to a serial loop.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KK_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KK_CLONES
#endif
#define KK_INLINE inline __attribute__((always_inline))

namespace kk {

// bfloat16 (its 16 bits) to float32 and back, rounding to nearest even as
// c10::BFloat16 does (NaN stays NaN), a row at a time so the loops
// vectorise: the kernels compute in float32 on staged copies.
KK_INLINE void to_float(const uint16_t *__restrict p, float *__restrict f, int64_t n) {
  for (int64_t i = 0; i < n; i++) f[i] = __builtin_bit_cast(float, static_cast<uint32_t>(p[i]) << 16);
}
KK_INLINE void to_bf16(const float *__restrict f, uint16_t *__restrict p, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    uint32_t u = __builtin_bit_cast(uint32_t, f[i]);
    u = f[i] != f[i] ? 0x7fc00000u : u + 0x7fffu + ((u >> 16) & 1u);
    p[i] = static_cast<uint16_t>(u >> 16);
  }
}

// channels_last reports whether x is a 4-d NHWC tensor (and not also NCHW:
// one channel, or 1×1 images, are both, and the NCHW kernels take them).
inline bool channels_last(const at::Tensor &x) {
  return x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

inline at::MemoryFormat format(bool cl) {
  return cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// float_or_bf16 reports whether the kernels take x's dtype.
inline bool float_or_bf16(const at::Tensor &x) {
  return x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16;
}

}  // namespace kk
