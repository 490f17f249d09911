// upsample.cpp: nearest and bilinear upsampling, with the shim's own CPU
// kernel for bilinear upsampling of channels-last images.
//
// libtorch 1.13's CPU backward of a bilinear upsampling makes the
// channels-last gradient contiguous, accumulates in NCHW and converts back:
// 18 ms a training step of the CPU default, 8% of it, against 4 ms for the
// forward. Here one kernel per image interpolates each output row of
// channels from four input rows (forward) and adds each output gradient
// row into those four (backward), in float32 (bf16 staged through it),
// with the source positions and weights libtorch computes
// (align_corners=False, the scale F.interpolate(scale_factor=...) passes).
// Other layouts, dtypes and devices, nearest and align_corners=True take
// libtorch's kernels.
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <vector>

#include "internal.h"
#include "kernels.h"

using kk::T;

namespace {

// Tap is one output coordinate's two source coordinates and weights.
struct Tap {
  int64_t i0, i1;
  float l0, l1;
};

// taps computes libtorch's source taps for an output axis of out positions
// from in (align_corners=False) at the scale out/in given as `scale`.
std::vector<Tap> taps(int64_t in, int64_t out, double scale) {
  std::vector<Tap> t(out);
  float ratio = scale > 0 ? static_cast<float>(1.0 / scale) : static_cast<float>(in) / out;
  for (int64_t o = 0; o < out; o++) {
    if (in == out) {
      t[o] = {o, o, 1.0f, 0.0f};
      continue;
    }
    float real = ratio * (o + 0.5f) - 0.5f;
    if (real < 0) real = 0;
    int64_t i0 = static_cast<int64_t>(real);
    int64_t i1 = i0 + (i0 < in - 1 ? 1 : 0);
    float l1 = std::min(std::max(real - static_cast<float>(i0), 0.0f), 1.0f);
    t[o] = {i0, i1, 1.0f - l1, l1};
  }
  return t;
}

// Geometry of one image: input H×W, output OH×OW, C channels per pixel.
struct Geo {
  int64_t H, W, OH, OW, C;
};

// forward interpolates one NHWC image.
KK_INLINE void forward(const float *__restrict x, float *__restrict y, const Tap *th,
                       const Tap *tw, const Geo &g) {
  for (int64_t oh = 0; oh < g.OH; oh++) {
    const Tap h = th[oh];
    for (int64_t ow = 0; ow < g.OW; ow++) {
      const Tap w = tw[ow];
      const float *x00 = x + (h.i0 * g.W + w.i0) * g.C, *x01 = x + (h.i0 * g.W + w.i1) * g.C;
      const float *x10 = x + (h.i1 * g.W + w.i0) * g.C, *x11 = x + (h.i1 * g.W + w.i1) * g.C;
      float *out = y + (oh * g.OW + ow) * g.C;
      for (int64_t c = 0; c < g.C; c++)
        out[c] = h.l0 * (w.l0 * x00[c] + w.l1 * x01[c]) + h.l1 * (w.l0 * x10[c] + w.l1 * x11[c]);
    }
  }
}

KK_INLINE void add_row(float *__restrict to, const float *__restrict from, float k, int64_t n) {
  for (int64_t c = 0; c < n; c++) to[c] += k * from[c];
}

// backward adds each output gradient row of one NHWC image into the four
// input rows it was interpolated from; dx starts at zero.
KK_INLINE void backward(const float *__restrict dy, float *dx, const Tap *th, const Tap *tw,
                        const Geo &g) {
  std::fill(dx, dx + g.H * g.W * g.C, 0.0f);
  for (int64_t oh = 0; oh < g.OH; oh++) {
    const Tap h = th[oh];
    for (int64_t ow = 0; ow < g.OW; ow++) {
      const Tap w = tw[ow];
      const float *d = dy + (oh * g.OW + ow) * g.C;
      add_row(dx + (h.i0 * g.W + w.i0) * g.C, d, h.l0 * w.l0, g.C);
      add_row(dx + (h.i0 * g.W + w.i1) * g.C, d, h.l0 * w.l1, g.C);
      add_row(dx + (h.i1 * g.W + w.i0) * g.C, d, h.l1 * w.l0, g.C);
      add_row(dx + (h.i1 * g.W + w.i1) * g.C, d, h.l1 * w.l1, g.C);
    }
  }
}

KK_CLONES void fwd_f32(const float *x, float *y, const Tap *th, const Tap *tw, Geo g,
                       std::vector<float> &, std::vector<float> &) {
  forward(x, y, th, tw, g);
}
KK_CLONES void fwd_bf16(const uint16_t *x, uint16_t *y, const Tap *th, const Tap *tw, Geo g,
                        std::vector<float> &a, std::vector<float> &b) {
  kk::to_float(x, a.data(), g.H * g.W * g.C);
  forward(a.data(), b.data(), th, tw, g);
  kk::to_bf16(b.data(), y, g.OH * g.OW * g.C);
}
KK_CLONES void bwd_f32(const float *dy, float *dx, const Tap *th, const Tap *tw, Geo g,
                       std::vector<float> &, std::vector<float> &) {
  backward(dy, dx, th, tw, g);
}
KK_CLONES void bwd_bf16(const uint16_t *dy, uint16_t *dx, const Tap *th, const Tap *tw, Geo g,
                        std::vector<float> &a, std::vector<float> &b) {
  kk::to_float(dy, a.data(), g.OH * g.OW * g.C);
  backward(a.data(), b.data(), th, tw, g);
  kk::to_bf16(b.data(), dx, g.H * g.W * g.C);
}

// run applies the kernel k to every image of the batch, images in
// parallel; `in` and `out` are NHWC tensors of per_in and per_out values
// an image, the float32 scratch rows sized for both when staging bf16.
template <typename S, typename K>
void run(K k, const at::Tensor &in, at::Tensor &out, const std::vector<Tap> &th,
         const std::vector<Tap> &tw, const Geo &g) {
  const S *ip = static_cast<const S *>(in.data_ptr());
  S *op = static_cast<S *>(out.data_ptr());
  int64_t per_in = in.numel() / in.size(0), per_out = out.numel() / out.size(0);
  bool staged = !std::is_same<S, float>::value;
  at::parallel_for(0, in.size(0), 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> a(staged ? per_in : 0), b(staged ? per_out : 0);
    for (int64_t n = lo; n < hi; n++) k(ip + n * per_in, op + n * per_out, th.data(), tw.data(), g, a, b);
  });
}

struct UpsampleBilinear : public torch::autograd::Function<UpsampleBilinear> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x,
                            int64_t oh, int64_t ow, double sh, double sw) {
    Geo g{x.size(2), x.size(3), oh, ow, x.size(1)};
    auto th = taps(g.H, oh, sh), tw = taps(g.W, ow, sw);
    at::Tensor y = at::empty({x.size(0), g.C, oh, ow}, x.options(), at::MemoryFormat::ChannelsLast);
    if (x.scalar_type() == at::kFloat)
      run<float>(fwd_f32, x, y, th, tw, g);
    else
      run<uint16_t>(fwd_bf16, x, y, th, tw, g);
    ctx->saved_data["size"] = std::vector<int64_t>{x.size(0), g.C, g.H, g.W};
    ctx->saved_data["scale"] = std::vector<double>{sh, sw};
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    auto size = ctx->saved_data["size"].toIntVector();
    auto scale = ctx->saved_data["scale"].toDoubleVector();
    at::Tensor dy = grads[0].contiguous(at::MemoryFormat::ChannelsLast);
    Geo g{size[2], size[3], dy.size(2), dy.size(3), size[1]};
    auto th = taps(g.H, g.OH, scale[0]), tw = taps(g.W, g.OW, scale[1]);
    at::Tensor dx = at::empty(size, dy.options(), at::MemoryFormat::ChannelsLast);
    if (dy.scalar_type() == at::kFloat)
      run<float>(bwd_f32, dy, dx, th, tw, g);
    else
      run<uint16_t>(bwd_bf16, dy, dx, th, tw, g);
    return {dx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

void kk_upsample2d(int bilinear, kk_tensor x, int64_t out_h, int64_t out_w, int align_corners,
                   kk_tensor *out, char **err) {
  KK_TRY(const at::Tensor &in = T(x);
         if (in.dim() != 4) throw std::invalid_argument("upsample2d expects NCHW input");
         if (out_h < 1 || out_w < 1 || in.size(2) < 1 || in.size(3) < 1)
           throw std::invalid_argument("upsample2d: sizes must be positive, got " +
                                       c10::str(in.sizes()) + " to " + std::to_string(out_h) +
                                       "x" + std::to_string(out_w));
         // Pass the scales PyTorch's F.interpolate(scale_factor=...) passes, so
         // results match it bit for bit when the factor is whole.
         double sh = static_cast<double>(out_h) / in.size(2);
         double sw = static_cast<double>(out_w) / in.size(3);
         std::vector<int64_t> size{out_h, out_w};
         if (bilinear && !align_corners && in.device().is_cpu() && kk::float_or_bf16(in) &&
             kk::channels_last(in) && in.numel() > 0) {
           *out = kk::wrap(UpsampleBilinear::apply(in, out_h, out_w, sh, sw));
         } else {
           *out = kk::wrap(bilinear ? at::upsample_bilinear2d(in, size, align_corners != 0, sh, sw)
                                    : at::upsample_nearest2d(in, size, sh, sw));
         })
}

}  // extern "C"
