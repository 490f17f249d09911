// kernels.h: what the shim's own CPU kernels (norm.cpp, bnorm.cpp,
// upsample.cpp)
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
#include <torch/csrc/autograd/custom_function.h>

#include "kakusan.h"

#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KK_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KK_CLONES
#endif
#define KK_INLINE inline __attribute__((always_inline))

namespace kk {

// The activations a fused kernel applies (kakusan.h's KK_ACT_*).
enum Act : int64_t { kNone = KK_ACT_NONE, kReLU = KK_ACT_RELU, kSiLU = KK_ACT_SILU };

// select is c ? a : b without a branch, as a mask.
KK_INLINE float select(bool c, float a, float b) {
  uint32_t m = 0u - static_cast<uint32_t>(c);
  return __builtin_bit_cast(float, (m & __builtin_bit_cast(uint32_t, a)) |
                                       (~m & __builtin_bit_cast(uint32_t, b)));
}

// expf in a form the compiler vectorises (Cephes' polynomial on a
// Cody-Waite reduction, within 2 ulp of expf over the clamped range); the
// sigmoid needs nothing better.
KK_INLINE float fexp(float x) {
  // Clamped to [-87, 88] by masks (NaN stays NaN): written as ternaries,
  // GCC 14 compiled them to branches, and the loops around them (the SiLU
  // kernels) to scalar code 4 times slower than GCC 12's vectors.
  x = select(x < -87.0f, -87.0f, x);
  x = select(x > 88.0f, 88.0f, x);
  // k = round(x / ln 2) by the 1.5·2^23 trick (floorf would be a call).
  float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - k * 0.693359375f + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * __builtin_bit_cast(float, static_cast<uint32_t>(static_cast<int32_t>(k) + 127) << 23);
}

template <int64_t A>
struct Activation {
  static KK_INLINE float f(float z) {
    if (A == kSiLU) return z / (1.0f + fexp(-z));
    if (A == kReLU) return z > 0.0f ? z : 0.0f;
    return z;
  }
  // df is act'(z)·dy.
  static KK_INLINE float df(float z, float dy) {
    if (A == kSiLU) {
      float s = 1.0f / (1.0f + fexp(-z));
      return dy * s * (1.0f + z * (1.0f - s));
    }
    if (A == kReLU) return select(z > 0.0f, dy, 0.0f);
    return dy;
  }
};

// bfloat16 (its 16 bits) to float32 and back, rounding to nearest even as
// c10::BFloat16 does (NaN stays NaN): ld and st one element (float32
// passes through), to_float and to_bf16 a row, in loops that vectorise.
KK_INLINE float ld(float v) { return v; }
KK_INLINE float ld(uint16_t v) { return __builtin_bit_cast(float, static_cast<uint32_t>(v) << 16); }
KK_INLINE void st(float f, float *p) { *p = f; }
KK_INLINE void st(float f, uint16_t *p) {
  // Branch-free (a mask selects the NaN), so that loops holding another
  // select still vectorise.
  uint32_t u = __builtin_bit_cast(uint32_t, f), nan = 0u - static_cast<uint32_t>(f != f);
  u = (nan & 0x7fc00000u) | (~nan & (u + 0x7fffu + ((u >> 16) & 1u)));
  *p = static_cast<uint16_t>(u >> 16);
}
KK_INLINE void to_float(const uint16_t *__restrict p, float *__restrict f, int64_t n) {
  for (int64_t i = 0; i < n; i++) f[i] = ld(p[i]);
}
KK_INLINE void to_bf16(const float *__restrict f, uint16_t *__restrict p, int64_t n) {
  for (int64_t i = 0; i < n; i++) st(f[i], p + i);
}

// NormState is what a fused normalisation's backward reads: its input as
// the kernels saw it, the affine parameters, the statistics (mean and
// 1/std), the activation and the layout.
struct NormState {
  at::Tensor x, w, b, mean, rstd;
  int64_t act;
  bool cl;
  // save saves the state, and after it extra tensors of the caller's.
  void save(torch::autograd::AutogradContext *ctx, std::vector<at::Tensor> extra = {}) const {
    extra.insert(extra.begin(), {x, w, b, mean, rstd});
    ctx->save_for_backward(extra);
    ctx->saved_data["act"] = act;
    ctx->saved_data["cl"] = cl;
  }
  // load loads what save saved, the extra tensors into extra.
  static NormState load(torch::autograd::AutogradContext *ctx,
                        std::vector<at::Tensor> *extra = nullptr) {
    auto s = ctx->get_saved_variables();
    if (extra != nullptr) extra->assign(s.begin() + 5, s.end());
    return {s[0], s[1], s[2], s[3], s[4], ctx->saved_data["act"].toInt(),
            ctx->saved_data["cl"].toBool()};
  }
};

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
