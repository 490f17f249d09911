// upsample.cpp: nearest and bilinear upsampling, and a U-Net up block's
// input, cat([upsample(x), skip], 1) + bias, in the shim's own CPU kernel
// for channels-last images.
//
// libtorch 1.13's CPU backward of a bilinear upsampling makes the
// channels-last gradient contiguous, accumulates in NCHW and converts back:
// 18 ms a training step of the CPU default, 8% of it, against 4 ms for the
// forward; the concatenation with the skip and the time embedding's add
// after it are two more passes over the block's largest tensor each way.
// Here one kernel per image writes each output row of channels as the
// interpolation of four input rows, then the skip's row, plus the bias
// (forward), and one splits each output gradient row into those four input
// rows, the skip's gradient and the bias's (backward), in float32 (bf16
// staged through it), with the source positions and weights libtorch
// computes (align_corners=False, the scale F.interpolate(scale_factor=...)
// passes). Other layouts, dtypes and devices, nearest and
// align_corners=True take libtorch's kernels.
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

// Geometry of one image: input H×W of C channels, output OH×OW of C + CS
// channels (the upsampled input's, then a skip tensor's, as torch.cat of
// the two along the channels).
struct Geo {
  int64_t H, W, OH, OW, C, CS;
  int64_t out() const { return C + CS; }
};

// forward interpolates one NHWC image into the first C channels of each
// output row, copies the skip image's row after them, and adds the
// per-channel bias (nullable) to both.
KK_INLINE void forward(const float *__restrict x, const float *__restrict skip,
                       const float *__restrict bias, float *__restrict y, const Tap *th,
                       const Tap *tw, const Geo &g, const float *__restrict zero) {
  const float *b = bias ? bias : zero, *bs = b + g.C;
  for (int64_t oh = 0; oh < g.OH; oh++) {
    const Tap h = th[oh];
    for (int64_t ow = 0; ow < g.OW; ow++) {
      const Tap w = tw[ow];
      const float *x00 = x + (h.i0 * g.W + w.i0) * g.C, *x01 = x + (h.i0 * g.W + w.i1) * g.C;
      const float *x10 = x + (h.i1 * g.W + w.i0) * g.C, *x11 = x + (h.i1 * g.W + w.i1) * g.C;
      int64_t p = oh * g.OW + ow;
      float *out = y + p * g.out();
      for (int64_t c = 0; c < g.C; c++)
        out[c] = h.l0 * (w.l0 * x00[c] + w.l1 * x01[c]) + h.l1 * (w.l0 * x10[c] + w.l1 * x11[c]) + b[c];
      const float *sr = skip + p * g.CS;
      float *os = out + g.C;
      for (int64_t c = 0; c < g.CS; c++) os[c] = sr[c] + bs[c];
    }
  }
}

KK_INLINE void add_row(float *__restrict to, const float *__restrict from, float k, int64_t n) {
  for (int64_t c = 0; c < n; c++) to[c] += k * from[c];
}

// backward splits one image's output gradient: each row's first C values
// go into the four input rows they were interpolated from (dx starts at
// zero), the rest is the skip's gradient, and every row adds into the
// bias's gradient (db, C + CS floats).
KK_INLINE void backward(const float *__restrict dy, float *dx, float *__restrict dskip,
                        float *__restrict db, const Tap *th, const Tap *tw, const Geo &g) {
  std::fill(dx, dx + g.H * g.W * g.C, 0.0f);
  std::fill(db, db + g.out(), 0.0f);
  for (int64_t oh = 0; oh < g.OH; oh++) {
    const Tap h = th[oh];
    for (int64_t ow = 0; ow < g.OW; ow++) {
      const Tap w = tw[ow];
      int64_t p = oh * g.OW + ow;
      const float *d = dy + p * g.out();
      add_row(dx + (h.i0 * g.W + w.i0) * g.C, d, h.l0 * w.l0, g.C);
      add_row(dx + (h.i0 * g.W + w.i1) * g.C, d, h.l0 * w.l1, g.C);
      add_row(dx + (h.i1 * g.W + w.i0) * g.C, d, h.l1 * w.l0, g.C);
      add_row(dx + (h.i1 * g.W + w.i1) * g.C, d, h.l1 * w.l1, g.C);
      float *ds = dskip + p * g.CS;
      const float *dsr = d + g.C;
      for (int64_t c = 0; c < g.CS; c++) ds[c] = dsr[c];
      for (int64_t c = 0; c < g.out(); c++) db[c] += d[c];
    }
  }
}

// Scratch of one thread: float32 images (staged bf16 copies of the inputs
// and outputs of one image, or nothing for float32) and a row of zeros.
struct Scratch {
  std::vector<float> a, b, c, zero;
  Scratch(int64_t na, int64_t nb, int64_t nc, int64_t row) : a(na), b(nb), c(nc), zero(row) {}
};

KK_CLONES void fwd_f32(const float *x, const float *skip, const float *bias, float *y,
                       const Tap *th, const Tap *tw, Geo g, Scratch &sc) {
  forward(x, skip, bias, y, th, tw, g, sc.zero.data());
}
KK_CLONES void fwd_bf16(const uint16_t *x, const uint16_t *skip, const float *bias, uint16_t *y,
                        const Tap *th, const Tap *tw, Geo g, Scratch &sc) {
  kk::to_float(x, sc.a.data(), g.H * g.W * g.C);
  kk::to_float(skip, sc.b.data(), g.OH * g.OW * g.CS);
  forward(sc.a.data(), sc.b.data(), bias, sc.c.data(), th, tw, g, sc.zero.data());
  kk::to_bf16(sc.c.data(), y, g.OH * g.OW * g.out());
}
KK_CLONES void bwd_f32(const float *dy, float *dx, float *dskip, float *db, const Tap *th,
                       const Tap *tw, Geo g, Scratch &) {
  backward(dy, dx, dskip, db, th, tw, g);
}
KK_CLONES void bwd_bf16(const uint16_t *dy, uint16_t *dx, uint16_t *dskip, float *db,
                        const Tap *th, const Tap *tw, Geo g, Scratch &sc) {
  kk::to_float(dy, sc.c.data(), g.OH * g.OW * g.out());
  backward(sc.c.data(), sc.a.data(), sc.b.data(), db, th, tw, g);
  kk::to_bf16(sc.a.data(), dx, g.H * g.W * g.C);
  kk::to_bf16(sc.b.data(), dskip, g.OH * g.OW * g.CS);
}

template <typename S>
S *ptr(const at::Tensor &t) {
  return t.defined() && t.numel() > 0 ? static_cast<S *>(t.data_ptr()) : nullptr;
}

// Tensors of one image n: offsets into the batch.
struct Sizes {
  int64_t x, s, y;
};

Sizes per_image(const Geo &g) { return {g.H * g.W * g.C, g.OH * g.OW * g.CS, g.OH * g.OW * g.out()}; }

template <typename S>
void run_forward(const at::Tensor &x, const at::Tensor &skip, const at::Tensor &bias,
                 at::Tensor &y, const std::vector<Tap> &th, const std::vector<Tap> &tw,
                 const Geo &g) {
  const S *xp = ptr<const S>(x), *sp = ptr<const S>(skip);
  const float *bp = ptr<const float>(bias);
  S *yp = ptr<S>(y);
  Sizes n = per_image(g);
  bool staged = !std::is_same<S, float>::value;
  at::parallel_for(0, x.size(0), 1, [&](int64_t lo, int64_t hi) {
    Scratch sc(staged ? n.x : 0, staged ? n.s : 0, staged ? n.y : 0, g.out());
    for (int64_t i = lo; i < hi; i++) {
      if constexpr (std::is_same<S, float>::value)
        fwd_f32(xp + i * n.x, sp ? sp + i * n.s : nullptr, bp ? bp + i * g.out() : nullptr,
                yp + i * n.y, th.data(), tw.data(), g, sc);
      else
        fwd_bf16(xp + i * n.x, sp ? sp + i * n.s : nullptr, bp ? bp + i * g.out() : nullptr,
                 yp + i * n.y, th.data(), tw.data(), g, sc);
    }
  });
}

template <typename S>
void run_backward(const at::Tensor &dy, at::Tensor &dx, at::Tensor &dskip, at::Tensor &db,
                  const std::vector<Tap> &th, const std::vector<Tap> &tw, const Geo &g) {
  const S *dyp = ptr<const S>(dy);
  S *dxp = ptr<S>(dx), *dsp = ptr<S>(dskip);
  float *dbp = ptr<float>(db);
  Sizes n = per_image(g);
  bool staged = !std::is_same<S, float>::value;
  at::parallel_for(0, dy.size(0), 1, [&](int64_t lo, int64_t hi) {
    Scratch sc(staged ? n.x : 0, staged ? n.s : 0, staged ? n.y : 0, 0);
    for (int64_t i = lo; i < hi; i++) {
      if constexpr (std::is_same<S, float>::value)
        bwd_f32(dyp + i * n.y, dxp + i * n.x, dsp ? dsp + i * n.s : nullptr, dbp + i * g.out(),
                th.data(), tw.data(), g, sc);
      else
        bwd_bf16(dyp + i * n.y, dxp + i * n.x, dsp ? dsp + i * n.s : nullptr, dbp + i * g.out(),
                 th.data(), tw.data(), g, sc);
    }
  });
}

// UpsampleCat is cat([upsample_bilinear(x, size of skip), skip], 1) + bias
// broadcast over the pixels: a U-Net up block's input, its time embedding
// added, in one pass (skip may have no channels, bias may be undefined:
// plain upsampling). x and skip are NHWC of one dtype, bias (N, C + CS)
// float32.
struct UpsampleCat : public torch::autograd::Function<UpsampleCat> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x,
                            const at::Tensor &skip, const at::Tensor &bias, int64_t oh,
                            int64_t ow, double sh, double sw) {
    Geo g{x.size(2), x.size(3), oh, ow, x.size(1), skip.size(1)};
    auto th = taps(g.H, oh, sh), tw = taps(g.W, ow, sw);
    at::Tensor xs = x.contiguous(at::MemoryFormat::ChannelsLast);
    at::Tensor ss = skip.contiguous(at::MemoryFormat::ChannelsLast);
    bool has_bias = bias.numel() > 0;
    at::Tensor bs = bias.to(at::kFloat).contiguous();
    at::Tensor y = at::empty({x.size(0), g.out(), oh, ow}, x.options(), at::MemoryFormat::ChannelsLast);
    if (x.scalar_type() == at::kFloat)
      run_forward<float>(xs, ss, bs, y, th, tw, g);
    else
      run_forward<uint16_t>(xs, ss, bs, y, th, tw, g);
    ctx->saved_data["geo"] = std::vector<int64_t>{x.size(0), g.H, g.W, g.C, g.CS};
    ctx->saved_data["scale"] = std::vector<double>{sh, sw};
    ctx->saved_data["bias"] = has_bias ? static_cast<int64_t>(bias.scalar_type()) : int64_t(-1);
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    auto v = ctx->saved_data["geo"].toIntVector();
    auto scale = ctx->saved_data["scale"].toDoubleVector();
    int64_t bias_dtype = ctx->saved_data["bias"].toInt();
    at::Tensor dy = grads[0].contiguous(at::MemoryFormat::ChannelsLast);
    Geo g{v[1], v[2], dy.size(2), dy.size(3), v[3], v[4]};
    auto th = taps(g.H, g.OH, scale[0]), tw = taps(g.W, g.OW, scale[1]);
    auto cl = at::MemoryFormat::ChannelsLast;
    at::Tensor dx = at::empty({v[0], g.C, g.H, g.W}, dy.options(), cl);
    at::Tensor dskip = at::empty({v[0], g.CS, g.OH, g.OW}, dy.options(), cl);
    at::Tensor db = at::empty({v[0], g.out()}, dy.options().dtype(at::kFloat));
    if (dy.scalar_type() == at::kFloat)
      run_backward<float>(dy, dx, dskip, db, th, tw, g);
    else
      run_backward<uint16_t>(dy, dx, dskip, db, th, tw, g);
    at::Tensor gb = bias_dtype < 0 ? at::Tensor() : db.to(static_cast<at::ScalarType>(bias_dtype));
    return {dx, dskip, gb, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// upsample_cat is UpsampleCat on any device, dtype or layout: the CPU
// kernels where they apply, libtorch's ops elsewhere.
at::Tensor upsample_cat(const at::Tensor &x, const at::Tensor &skip, const at::Tensor &bias,
                        int64_t oh, int64_t ow) {
  // The scales PyTorch's F.interpolate(scale_factor=...) passes, so results
  // match it bit for bit when the factor is whole.
  double sh = static_cast<double>(oh) / x.size(2), sw = static_cast<double>(ow) / x.size(3);
  bool cpu = x.device().is_cpu() && (!skip.defined() || skip.device().is_cpu()) &&
             (!bias.defined() || bias.device().is_cpu());
  if (cpu && kk::float_or_bf16(x) && x.numel() > 0 && kk::channels_last(x) &&
      (!skip.defined() || skip.scalar_type() == x.scalar_type())) {
    // A custom function takes defined tensors: no skip is one of no
    // channels, no bias one of no elements (their gradients go nowhere).
    at::Tensor s = skip.defined() ? skip : at::empty({x.size(0), 0, oh, ow}, x.options());
    at::Tensor b = bias.defined() ? bias : at::empty({0}, x.options().dtype(at::kFloat));
    return UpsampleCat::apply(x, s, b, oh, ow, sh, sw);
  }
  at::Tensor in = x;
  // libtorch 1.13's CPU backward of a bf16 bilinear upsampling is slow:
  // under autograd it runs in float32 and casts back.
  if (x.device().is_cpu() && x.scalar_type() == at::kBFloat16 && at::GradMode::is_enabled())
    in = x.to(at::kFloat);
  at::Tensor y = at::upsample_bilinear2d(in, {oh, ow}, false, sh, sw).to(x.scalar_type());
  if (skip.defined()) y = at::cat({y, skip.to(y.scalar_type())}, 1);
  if (bias.defined()) y = y + bias.to(y.scalar_type()).view({bias.size(0), bias.size(1), 1, 1});
  return y;
}

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
         double sh = static_cast<double>(out_h) / in.size(2);
         double sw = static_cast<double>(out_w) / in.size(3);
         std::vector<int64_t> size{out_h, out_w};
         if (bilinear && !align_corners) {
           *out = kk::wrap(upsample_cat(in, at::Tensor(), at::Tensor(), out_h, out_w));
         } else {
           *out = kk::wrap(bilinear ? at::upsample_bilinear2d(in, size, true, sh, sw)
                                    : at::upsample_nearest2d(in, size, sh, sw));
         })
}

void kk_upsample_cat(kk_tensor x, kk_tensor skip, kk_tensor bias, kk_tensor *out, char **err) {
  KK_TRY(const at::Tensor &in = T(x), &s = T(skip); at::Tensor b = kk::Opt(bias);
         if (in.dim() != 4 || s.dim() != 4 || in.size(0) != s.size(0) || in.size(2) < 1 ||
             in.size(3) < 1)
           throw std::invalid_argument("upsample_cat: want (N, C, H, W) input and skip of one batch, got " +
                                       c10::str(in.sizes()) + " and " + c10::str(s.sizes()));
         if (b.defined() && (b.dim() != 2 || b.size(0) != in.size(0) ||
                             b.size(1) != in.size(1) + s.size(1)))
           throw std::invalid_argument("upsample_cat: bias " + c10::str(b.sizes()) + " is not (" +
                                       std::to_string(in.size(0)) + ", " +
                                       std::to_string(in.size(1) + s.size(1)) + ")");
         *out = kk::wrap(upsample_cat(in, s, b, s.size(2), s.size(3)));)
}

}  // extern "C"
