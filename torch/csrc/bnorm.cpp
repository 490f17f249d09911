// bnorm.cpp: batch normalisation in training, fused with the activation
// that follows it.
//
// The book's U-Net is convolution, BatchNorm, ReLU, twice a block. At its
// ten normalised layers (width 16, batch 128, bf16 channels-last) libtorch
// 1.13's CPU batch norm and the ReLU after it took 18 ms forward and
// backward, against 57 ms for kakusan's whole training step: a statistics
// pass, a normalising pass and a ReLU pass forward, a ReLU pass and two
// normalising passes backward, each allocating its result. Here the
// forward reads x twice (per-channel sums, then act(x·a + b) written once)
// and the backward reads x and dy twice (per-channel sums of the gradient,
// then dx written once), recomputing the activation's input rather than
// saving it: 1.2-1.3 times libtorch's speed a layer, a few ms of the step
// (docs/performance.md).
//
// Statistics are summed in double, from a per-channel pivot, so an offset
// mean does not cancel the variance away.
//
// The CPU kernels take float32 or bfloat16 activations, NCHW or NHWC
// (channels-last) or (N, C), with float32 parameters and running
// statistics, in training; they are compiled per instruction set
// (kernels.h). Evaluation (sampling folds batch norm into the convolution
// before it; nn.ConvNorm), CUDA, and other dtypes take libtorch's
// batch_norm and the activation.
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "internal.h"
#include "kernels.h"

using kk::Activation;
using kk::kNone;
using kk::kReLU;
using kk::kSiLU;
using kk::Opt;
using kk::T;

namespace {

// A tensor as rows: NHWC (and (N, C)) is N·H·W rows of C channels; NCHW is
// N·C rows of H·W positions, row r of channel r mod C.
struct Geo {
  int64_t C, rows, len;
};

// Each pass runs over rows [lo, hi) with per-channel coefficients; the
// summing passes add to per-channel double accumulators (one set per
// block of rows, summed afterwards in a fixed order).

// Rows of a channels-last tensor are short (C values): their loops are
// kept apart, on restrict pointers, so that they vectorise across the
// channels; a tile of kTile rows is summed in float before its sums join
// the double ones (64 terms cost float about 6 bits, far below bfloat16's
// 16 and the tests' bounds).
constexpr int64_t kTile = 64;

template <typename S>
KK_INLINE void row_stats(const S *__restrict x, const float *__restrict k, float *__restrict f1,
                         float *__restrict f2, int64_t C) {
  for (int64_t c = 0; c < C; c++) {
    float d = kk::ld(x[c]) - k[c];
    f1[c] += d;
    f2[c] += d * d;
  }
}

template <typename S, int64_t A>
KK_INLINE void row_gsums(const S *__restrict x, const S *__restrict dy, const float *__restrict a,
                         const float *__restrict b, const float *__restrict m,
                         float *__restrict f1, float *__restrict f2, int64_t C) {
  for (int64_t c = 0; c < C; c++) {
    float xv = kk::ld(x[c]), dz = Activation<A>::df(xv * a[c] + b[c], kk::ld(dy[c]));
    f1[c] += dz;
    f2[c] += dz * (xv - m[c]);
  }
}

template <typename S, int64_t A>
KK_INLINE void row_apply(const S *__restrict x, S *__restrict y, const float *__restrict a,
                         const float *__restrict b, int64_t C) {
  for (int64_t c = 0; c < C; c++) kk::st(Activation<A>::f(kk::ld(x[c]) * a[c] + b[c]), y + c);
}

template <typename S, int64_t A>
KK_INLINE void row_gapply(const S *__restrict x, const S *__restrict dy, S *__restrict dx,
                          const float *__restrict a, const float *__restrict b,
                          const float *__restrict m, const float *__restrict p,
                          const float *__restrict q, const float *__restrict r, int64_t C) {
  for (int64_t c = 0; c < C; c++) {
    float xv = kk::ld(x[c]), dz = Activation<A>::df(xv * a[c] + b[c], kk::ld(dy[c]));
    kk::st(dz * p[c] + (xv - m[c]) * q[c] + r[c], dx + c);
  }
}

// stats: s1 += x - k, s2 += (x - k)² per channel, k the channel's pivot.
template <typename S, bool CL>
KK_INLINE void stats(const S *__restrict x, Geo g, int64_t lo, int64_t hi,
                     const float *__restrict k, double *__restrict s1, double *__restrict s2) {
  const int64_t C = g.C, len = g.len;
  if (CL) {
    // Rows of C channels: float sums over a tile of rows, each tile's
    // added to the double sums.
    std::vector<float> f(2 * C);
    for (int64_t t = lo; t < hi; t += kTile) {
      std::fill(f.begin(), f.end(), 0.0f);
      for (int64_t r = t; r < std::min(hi, t + kTile); r++) row_stats(x + r * C, k, f.data(), f.data() + C, C);
      for (int64_t c = 0; c < C; c++) s1[c] += f[c], s2[c] += f[C + c];
    }
    return;
  }
  constexpr int64_t L = 8;  // independent lanes: the loop vectorises without reassociating
  for (int64_t r = lo; r < hi; r++) {
    int64_t c = r % C;
    const S *xr = x + r * len;
    double l1[L] = {}, l2[L] = {}, t1 = 0, t2 = 0;
    float kc = k[c];
    int64_t s = 0;
    for (; s + L <= len; s += L)
      for (int64_t j = 0; j < L; j++) {
        double d = kk::ld(xr[s + j]) - kc;
        l1[j] += d;
        l2[j] += d * d;
      }
    for (; s < len; s++) {
      double d = kk::ld(xr[s]) - kc;
      t1 += d;
      t2 += d * d;
    }
    for (int64_t j = 0; j < L; j++) t1 += l1[j], t2 += l2[j];
    s1[c] += t1;
    s2[c] += t2;
  }
}

// apply: y = act(x·a + b).
template <typename S, bool CL, int64_t A>
KK_INLINE void apply(const S *__restrict x, S *__restrict y, Geo g, int64_t lo,
                     int64_t hi, const float *__restrict a, const float *__restrict b) {
  const int64_t C = g.C, len = g.len;
  for (int64_t r = lo; r < hi; r++) {
    const S *xr = x + r * len;
    S *yr = y + r * len;
    if (CL) {
      row_apply<S, A>(xr, yr, a, b, C);
    } else {
      int64_t c = r % C;
      float ac = a[c], bc = b[c];
      for (int64_t s = 0; s < len; s++) kk::st(Activation<A>::f(kk::ld(xr[s]) * ac + bc), yr + s);
    }
  }
}

// gsums: with dz = act'(x·a + b)·dy, sdz += dz and sdzx += dz·(x - m).
template <typename S, bool CL, int64_t A>
KK_INLINE void gsums(const S *__restrict x, const S *__restrict dy, Geo g, int64_t lo,
                     int64_t hi, const float *__restrict a, const float *__restrict b,
                     const float *__restrict m, double *__restrict sdz,
                     double *__restrict sdzx) {
  const int64_t C = g.C, len = g.len;
  if (CL) {
    std::vector<float> f(2 * C);
    for (int64_t t = lo; t < hi; t += kTile) {
      std::fill(f.begin(), f.end(), 0.0f);
      for (int64_t r = t; r < std::min(hi, t + kTile); r++)
        row_gsums<S, A>(x + r * C, dy + r * C, a, b, m, f.data(), f.data() + C, C);
      for (int64_t c = 0; c < C; c++) sdz[c] += f[c], sdzx[c] += f[C + c];
    }
    return;
  }
  constexpr int64_t L = 8;
  for (int64_t r = lo; r < hi; r++) {
    int64_t c = r % C;
    const S *xr = x + r * len, *dyr = dy + r * len;
    float ac = a[c], bc = b[c], mc = m[c];
    double l1[L] = {}, l2[L] = {}, t1 = 0, t2 = 0;
    int64_t s = 0;
    for (; s + L <= len; s += L)
      for (int64_t j = 0; j < L; j++) {
        float xv = kk::ld(xr[s + j]), dz = Activation<A>::df(xv * ac + bc, kk::ld(dyr[s + j]));
        l1[j] += dz;
        l2[j] += static_cast<double>(dz) * (xv - mc);
      }
    for (; s < len; s++) {
      float xv = kk::ld(xr[s]), dz = Activation<A>::df(xv * ac + bc, kk::ld(dyr[s]));
      t1 += dz;
      t2 += static_cast<double>(dz) * (xv - mc);
    }
    for (int64_t j = 0; j < L; j++) t1 += l1[j], t2 += l2[j];
    sdz[c] += t1;
    sdzx[c] += t2;
  }
}

// gapply: dx = dz·p + (x - m)·q + r, dz = act'(x·a + b)·dy (x centred
// first: x·q and r would cancel where the mean is large against the spread).
template <typename S, bool CL, int64_t A>
KK_INLINE void gapply(const S *__restrict x, const S *__restrict dy, S *__restrict dx,
                      Geo g, int64_t lo, int64_t hi, const float *__restrict a,
                      const float *__restrict b, const float *__restrict m,
                      const float *__restrict p,
                      const float *__restrict q, const float *__restrict rr) {
  const int64_t C = g.C, len = g.len;
  for (int64_t r = lo; r < hi; r++) {
    const S *xr = x + r * len, *dyr = dy + r * len;
    S *dxr = dx + r * len;
    if (CL) {
      row_gapply<S, A>(xr, dyr, dxr, a, b, m, p, q, rr, C);
    } else {
      int64_t c = r % C;
      float ac = a[c], bc = b[c], mc = m[c], pc = p[c], qc = q[c], rc = rr[c];
      for (int64_t s = 0; s < len; s++) {
        float xv = kk::ld(xr[s]), dz = Activation<A>::df(xv * ac + bc, kk::ld(dyr[s]));
        kk::st(dz * pc + (xv - mc) * qc + rc, dxr + s);
      }
    }
  }
}

// The entry points, per storage type (float: float32, uint16_t: bfloat16),
// layout and activation, each cloned per instruction set.
template <typename S>
struct Kernels {
  void (*stats)(const S *, Geo, int64_t, int64_t, const float *, double *, double *);
  void (*apply)(const S *, S *, Geo, int64_t, int64_t, const float *, const float *);
  void (*gsums)(const S *, const S *, Geo, int64_t, int64_t, const float *,
                const float *, const float *, double *, double *);
  void (*gapply)(const S *, const S *, S *, Geo, int64_t, int64_t, const float *,
                 const float *, const float *, const float *, const float *, const float *);
};

#define KK_BN_STATS(NAME, S, CL)                                                         \
  KK_CLONES void NAME##_stats(const S *x, Geo g, int64_t lo, int64_t hi,          \
                              const float *k, double *s1, double *s2) {                  \
    stats<S, CL>(x, g, lo, hi, k, s1, s2);                                               \
  }
#define KK_BN_ACT(NAME, S, CL, A)                                                        \
  KK_CLONES void NAME##_apply(const S *x, S *y, Geo g, int64_t lo, int64_t hi,    \
                              const float *a, const float *b) {                          \
    apply<S, CL, A>(x, y, g, lo, hi, a, b);                                              \
  }                                                                                      \
  KK_CLONES void NAME##_gsums(const S *x, const S *dy, Geo g, int64_t lo,         \
                              int64_t hi, const float *a, const float *b, const float *m, \
                              double *sdz, double *sdzx) {                               \
    gsums<S, CL, A>(x, dy, g, lo, hi, a, b, m, sdz, sdzx);                               \
  }                                                                                      \
  KK_CLONES void NAME##_gapply(const S *x, const S *dy, S *dx, Geo g, int64_t lo, \
                               int64_t hi, const float *a, const float *b, const float *m,   \
                               const float *p, const float *q, const float *r) {         \
    gapply<S, CL, A>(x, dy, dx, g, lo, hi, a, b, m, p, q, r);                               \
  }
#define KK_BN_LAYOUT(NAME, S, CL)    \
  KK_BN_STATS(NAME, S, CL)           \
  KK_BN_ACT(NAME##_none, S, CL, kNone) \
  KK_BN_ACT(NAME##_relu, S, CL, kReLU) \
  KK_BN_ACT(NAME##_silu, S, CL, kSiLU)
KK_BN_LAYOUT(nchw_f32, float, false)
KK_BN_LAYOUT(nhwc_f32, float, true)
KK_BN_LAYOUT(nchw_bf16, uint16_t, false)
KK_BN_LAYOUT(nhwc_bf16, uint16_t, true)

#define KK_BN_PICK(L)                                                          \
  switch (a) {                                                                 \
    case kReLU: return {L##_stats, L##_relu_apply, L##_relu_gsums, L##_relu_gapply}; \
    case kSiLU: return {L##_stats, L##_silu_apply, L##_silu_gsums, L##_silu_gapply}; \
    default: return {L##_stats, L##_none_apply, L##_none_gsums, L##_none_gapply};    \
  }
template <typename S>
Kernels<S> kernels(bool cl, int64_t a);
template <>
Kernels<float> kernels<float>(bool cl, int64_t a) {
  if (cl) KK_BN_PICK(nhwc_f32)
  KK_BN_PICK(nchw_f32)
}
template <>
Kernels<uint16_t> kernels<uint16_t>(bool cl, int64_t a) {
  if (cl) KK_BN_PICK(nhwc_bf16)
  KK_BN_PICK(nchw_bf16)
}

// rows_cl reports whether x is stored as rows of its channels: a
// channels-last image batch, or (N, C).
bool rows_cl(const at::Tensor &x) { return kk::channels_last(x) || x.dim() == 2; }

// layout is the memory format of rows_cl's x (a 2-d x is contiguous).
at::MemoryFormat layout(const at::Tensor &x, bool cl) { return kk::format(cl && x.dim() == 4); }

Geo geometry(const at::Tensor &x, bool cl) {
  int64_t C = x.size(1);
  if (cl) return Geo{C, x.numel() / C, C};
  return Geo{C, x.size(0) * C, x.numel() / (x.size(0) * C)};
}

// reduce runs f(lo, hi, acc) over the rows in blocks, one per thread, each
// block adding to its own n per-channel double accumulators, and returns
// their sum, n×C values, added in block order (deterministic for a thread
// count).
template <typename F>
std::vector<double> reduce(Geo g, int n, F f) {
  int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), g.rows));
  std::vector<double> part(blocks * n * g.C, 0.0);
  at::parallel_for(0, blocks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; k++)
      f(g.rows * k / blocks, g.rows * (k + 1) / blocks, part.data() + k * n * g.C);
  });
  std::vector<double> sum(n * g.C, 0.0);
  for (int64_t k = 0; k < blocks; k++)
    for (int64_t i = 0; i < n * g.C; i++) sum[i] += part[k * n * g.C + i];
  return sum;
}

// each runs f(lo, hi) over the rows in parallel, about 16 KiB of elements
// at a time.
template <typename F>
void each(Geo g, F f) {
  at::parallel_for(0, g.rows, std::max<int64_t>(1, 4096 / g.len), f);
}

// bn_forward normalises x into y with its batch statistics, returning their
// mean and 1/std per channel (float32) and the unbiased variance (double,
// for the running statistics).
template <typename S>
void bn_forward(const at::Tensor &x, at::Tensor &y, const at::Tensor &w, const at::Tensor &b,
                at::Tensor &mean, at::Tensor &rstd, at::Tensor &uvar, double eps, int64_t act,
                bool cl) {
  Geo g = geometry(x, cl);
  Kernels<S> k = kernels<S>(cl, act);
  const S *xp = static_cast<const S *>(x.data_ptr());
  S *yp = static_cast<S *>(y.data_ptr());
  int64_t C = g.C;
  // The pivot of channel c is its first element, so that sums of squares
  // are of deviations about a value near the mean.
  std::vector<float> pivot(C);
  for (int64_t c = 0; c < C; c++) pivot[c] = kk::ld(cl ? xp[c] : xp[c * g.len]);
  std::vector<double> s = reduce(g, 2, [&](int64_t lo, int64_t hi, double *acc) {
    k.stats(xp, g, lo, hi, pivot.data(), acc, acc + C);
  });
  double n = static_cast<double>(x.numel() / C);
  float *mp = mean.data_ptr<float>(), *rp = rstd.data_ptr<float>();
  double *vp = uvar.data_ptr<double>();
  const float *wp = w.data_ptr<float>(), *bp = b.data_ptr<float>();
  std::vector<float> sa(C), sb(C);
  for (int64_t c = 0; c < C; c++) {
    double d = s[c] / n, var = std::max(0.0, s[C + c] / n - d * d), mu = pivot[c] + d;
    double r = 1.0 / std::sqrt(var + eps);
    mp[c] = static_cast<float>(mu);
    rp[c] = static_cast<float>(r);
    vp[c] = var * n / (n - 1);
    sa[c] = static_cast<float>(r * wp[c]);
    sb[c] = static_cast<float>(bp[c] - mu * r * wp[c]);
  }
  each(g, [&](int64_t lo, int64_t hi) { k.apply(xp, yp, g, lo, hi, sa.data(), sb.data()); });
}

// bn_backward computes dx and the per-channel dw and db (double).
template <typename S>
void bn_backward(const at::Tensor &x, const at::Tensor &dy, at::Tensor &dx, const at::Tensor &w,
                 const at::Tensor &b, const at::Tensor &mean, const at::Tensor &rstd,
                 at::Tensor &dw, at::Tensor &db, int64_t act, bool cl) {
  Geo g = geometry(x, cl);
  Kernels<S> k = kernels<S>(cl, act);
  const S *xp = static_cast<const S *>(x.data_ptr()), *dyp = static_cast<const S *>(dy.data_ptr());
  S *dxp = static_cast<S *>(dx.data_ptr());
  const float *wp = w.data_ptr<float>(), *bp = b.data_ptr<float>();
  const float *mp = mean.data_ptr<float>(), *rp = rstd.data_ptr<float>();
  int64_t C = g.C;
  std::vector<float> sa(C), sb(C), p(C), q(C), r(C);
  for (int64_t c = 0; c < C; c++) {
    sa[c] = rp[c] * wp[c];
    sb[c] = bp[c] - mp[c] * rp[c] * wp[c];
  }
  std::vector<double> s = reduce(g, 2, [&](int64_t lo, int64_t hi, double *acc) {
    k.gsums(xp, dyp, g, lo, hi, sa.data(), sb.data(), mp, acc, acc + C);
  });
  // db = Σdz and dw = Σdz·x̂ = rstd·Σdz·(x - mean); with n values a channel,
  // dx = rstd·w·(dz - db/n - x̂·dw/n) = dz·p + (x - mean)·q + r per channel.
  double n = static_cast<double>(x.numel() / C);
  double *dwp = dw.data_ptr<double>(), *dbp = db.data_ptr<double>();
  for (int64_t c = 0; c < C; c++) {
    double rc = rp[c], pc = rc * wp[c];
    dbp[c] = s[c];
    dwp[c] = rc * s[C + c];
    p[c] = static_cast<float>(pc);
    q[c] = static_cast<float>(-pc * rc * dwp[c] / n);
    r[c] = static_cast<float>(-pc * dbp[c] / n);
  }
  each(g, [&](int64_t lo, int64_t hi) {
    k.gapply(xp, dyp, dxp, g, lo, hi, sa.data(), sb.data(), mp, p.data(), q.data(), r.data());
  });
}

struct BatchNormAct : public torch::autograd::Function<BatchNormAct> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, at::Tensor x, at::Tensor w,
                            at::Tensor b, at::Tensor rm, at::Tensor rv, double momentum,
                            double eps, int64_t a) {
    bool cl = rows_cl(x);
    x = x.contiguous(layout(x, cl));
    at::Tensor y = at::empty_like(x, layout(x, cl));
    auto f = x.options().dtype(at::kFloat);
    at::Tensor mean = at::empty({x.size(1)}, f), rstd = at::empty({x.size(1)}, f);
    at::Tensor uvar = at::empty({x.size(1)}, f.dtype(at::kDouble));
    if (x.scalar_type() == at::kFloat)
      bn_forward<float>(x, y, w, b, mean, rstd, uvar, eps, a, cl);
    else
      bn_forward<uint16_t>(x, y, w, b, mean, rstd, uvar, eps, a, cl);
    at::NoGradGuard ng;
    rm.mul_(1 - momentum).add_(mean, momentum);
    rv.mul_(1 - momentum).add_(uvar.to(at::kFloat), momentum);
    kk::NormState{x, w, b, mean, rstd, a, cl}.save(ctx);
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    auto [x, w, b, mean, rstd, a, cl] = kk::NormState::load(ctx);
    at::MemoryFormat fmt = layout(x, cl);
    at::Tensor dy = grads[0].to(x.scalar_type()).contiguous(fmt);
    at::Tensor dx = at::empty_like(x, fmt);
    auto d = x.options().dtype(at::kDouble);
    at::Tensor dw = at::empty({x.size(1)}, d), db = at::empty({x.size(1)}, d);
    if (x.scalar_type() == at::kFloat)
      bn_backward<float>(x, dy, dx, w, b, mean, rstd, dw, db, a, cl);
    else
      bn_backward<uint16_t>(x, dy, dx, w, b, mean, rstd, dw, db, a, cl);
    return {dx, dw.to(w.scalar_type()), db.to(b.scalar_type()), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// cpu_kernels reports whether the fused kernels take this call: training
// on the CPU, float32 or bfloat16 x of at least two values a channel, and
// float32 parameters (or none) and running statistics of one value a
// channel.
bool cpu_kernels(const at::Tensor &x, const at::Tensor &w, const at::Tensor &b,
                 const at::Tensor &rm, const at::Tensor &rv, bool training) {
  auto ok = [&](const at::Tensor &p) {
    return !p.defined() || (p.scalar_type() == at::kFloat && p.device().is_cpu() &&
                            p.dim() == 1 && p.size(0) == x.size(1) && p.is_contiguous());
  };
  return training && x.device().is_cpu() && x.dim() >= 2 && x.dim() <= 5 && x.size(1) > 0 &&
         x.numel() / x.size(1) > 1 && kk::float_or_bf16(x) && ok(w) && ok(b) && ok(rm) &&
         ok(rv) && rm.defined() && rv.defined();
}

}  // namespace

extern "C" {

void kk_batch_norm(kk_tensor x, kk_tensor w, kk_tensor b, kk_tensor running_mean,
                   kk_tensor running_var, int training, double momentum, double eps, int act,
                   kk_tensor *out, char **err) {
  KK_TRY(const at::Tensor &in = T(x); at::Tensor wt = Opt(w), bt = Opt(b);
         at::Tensor rm = Opt(running_mean), rv = Opt(running_var);
         if (act != kNone && act != kReLU && act != kSiLU)
           throw std::invalid_argument("batch_norm: unknown activation " + std::to_string(act));
         if (!(eps >= 0)) throw std::invalid_argument("batch_norm: eps must be >= 0");
         // As torch.nn.functional.batch_norm refuses it (ATen would return
         // the bias): batch statistics of one value are no statistics.
         if (training && in.dim() >= 2 && in.numel() == in.size(1))
           throw std::invalid_argument(
               "batch_norm: expected more than 1 value per channel when training, got input of size " +
               c10::str(in.sizes()));
         if (cpu_kernels(in, wt, bt, rm, rv, training != 0)) {
           // A custom autograd function takes defined tensors only: no
           // affine is w = 1, b = 0 (their gradients go nowhere).
           auto f = in.options().dtype(at::kFloat);
           if (!wt.defined()) wt = at::ones({in.size(1)}, f);
           if (!bt.defined()) bt = at::zeros({in.size(1)}, f);
           *out = kk::wrap(BatchNormAct::apply(in, wt, bt, rm, rv, momentum, eps, act));
         } else {
           at::Tensor y = at::batch_norm(in, wt, bt, rm, rv, training != 0, momentum, eps,
                                         /*cudnn_enabled=*/true);
           if (act == kSiLU) y = at::silu(y);
           if (act == kReLU) y = at::relu(y);
           *out = kk::wrap(y);
         })
}

}  // extern "C"
