// norm.cpp: group normalisation fused with the activation that follows it.
//
// libtorch's CPU GroupNorm is slow where diffusion U-Nets use it: on
// channels-last activations its 1.13 forward kernel took 22% of a bf16
// training step of the CPU default (7 ms a call, against 0.8 for its
// backward), and under autocast every call also converts its bfloat16
// input to float32 and back, with the SiLU after it a pass of its own.
// Here one kernel per image computes the group statistics and writes
// act(norm(x)) in x's dtype and layout, and one kernel computes the three
// gradients, recomputing the activation rather than saving its input: one
// read of x forward, two of x and dy backward, statistics in double.
//
// FiLM's modulation after the norm (ADM's scale-shift norm: act(norm(x)·mul
// + add), mul and add per image and channel) is the same kernels with
// per-image affine parameters (GroupNormFiLMAct).
//
// The CPU kernels take float32 or bfloat16 activations, NCHW or NHWC
// (channels-last), and float32 affine parameters; they are compiled for
// AVX-512, AVX2 and baseline x86-64 alike (target_clones picks one at load
// time). Everything else (CUDA, other dtypes and layouts) takes libtorch's
// group_norm and the activation, with the same result dtype.
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "internal.h"
#include "kernels.h"

using kk::Opt;
using kk::T;

namespace {

using kk::Activation;
using kk::kNone;
using kk::kReLU;
using kk::kSiLU;

// Shape of one image: C channels of S positions in G groups; CL: stored
// NHWC (rows of C channels), else NCHW (rows of S positions).
struct Geo {
  int64_t C, S, G;
};

// The per-element loops, each with per-channel coefficients (vectors
// along an NHWC row, scalars along an NCHW one).

// y = act(x·a + b).
template <bool CL, int64_t A>
KK_INLINE void affine_act(const Geo &g, const float *__restrict x, float *__restrict y,
                          const float *__restrict a, const float *__restrict b) {
  if (CL) {
    for (int64_t s = 0; s < g.S; s++)
      for (int64_t c = 0; c < g.C; c++)
        y[s * g.C + c] = Activation<A>::f(x[s * g.C + c] * a[c] + b[c]);
  } else {
    for (int64_t c = 0; c < g.C; c++) {
      const float ac = a[c], bc = b[c], *xr = x + c * g.S;
      float *yr = y + c * g.S;
      for (int64_t s = 0; s < g.S; s++) yr[s] = Activation<A>::f(xr[s] * ac + bc);
    }
  }
}

// dz = act'(x·a + b)·dy.
template <bool CL, int64_t A>
KK_INLINE void affine_dact(const Geo &g, const float *__restrict x, const float *__restrict dy,
                           float *__restrict dz, const float *__restrict a,
                           const float *__restrict b) {
  if (CL) {
    for (int64_t s = 0; s < g.S; s++)
      for (int64_t c = 0; c < g.C; c++) {
        int64_t i = s * g.C + c;
        dz[i] = Activation<A>::df(x[i] * a[c] + b[c], dy[i]);
      }
  } else {
    for (int64_t c = 0; c < g.C; c++) {
      const float ac = a[c], bc = b[c], *xr = x + c * g.S, *dyr = dy + c * g.S;
      float *dzr = dz + c * g.S;
      for (int64_t s = 0; s < g.S; s++) dzr[s] = Activation<A>::df(xr[s] * ac + bc, dyr[s]);
    }
  }
}

// out = u·p + v·q + r.
template <bool CL>
KK_INLINE void lin2(const Geo &g, const float *__restrict u, const float *__restrict v,
                    float *__restrict out, const float *__restrict p, const float *__restrict q,
                    const float *__restrict r) {
  if (CL) {
    for (int64_t s = 0; s < g.S; s++)
      for (int64_t c = 0; c < g.C; c++) {
        int64_t i = s * g.C + c;
        out[i] = u[i] * p[c] + v[i] * q[c] + r[c];
      }
  } else {
    for (int64_t c = 0; c < g.C; c++) {
      const float pc = p[c], qc = q[c], rc = r[c], *ur = u + c * g.S, *vr = v + c * g.S;
      float *o = out + c * g.S;
      for (int64_t s = 0; s < g.S; s++) o[s] = ur[s] * pc + vr[s] * qc + rc;
    }
  }
}

// Per-channel sums in double: of x, or of (x - mu)² (Centered), or of u and
// u·v (Dot, into acc and acc2). Along an NCHW row they run in 8
// independent lanes, so the loop vectorises without reassociating.
enum Sum { kPlain, kCentered, kDot };

template <Sum K>
KK_INLINE void sum_terms(double &a1, double &a2, float u, float v, double mu) {
  if (K == kPlain) a1 += u;
  if (K == kCentered) {
    double d = static_cast<double>(u) - mu;
    a1 += d * d;
  }
  if (K == kDot) {
    a1 += u;
    a2 += static_cast<double>(u) * v;
  }
}

template <bool CL, Sum K>
KK_INLINE void sums(const Geo &g, const float *__restrict u, const float *__restrict v,
                    const double *__restrict mu, double *__restrict acc,
                    double *__restrict acc2) {
  if (CL) {
    for (int64_t s = 0; s < g.S; s++)
      for (int64_t c = 0; c < g.C; c++) {
        int64_t i = s * g.C + c;
        sum_terms<K>(acc[c], acc2[c], u[i], K == kDot ? v[i] : 0.0f, K == kCentered ? mu[c] : 0.0);
      }
    return;
  }
  constexpr int64_t L = 8;
  for (int64_t c = 0; c < g.C; c++) {
    double l1[L] = {}, l2[L] = {}, t1 = 0, t2 = 0, m = K == kCentered ? mu[c] : 0.0;
    const float *ur = u + c * g.S, *vr = K == kDot ? v + c * g.S : nullptr;
    int64_t s = 0;
    for (; s + L <= g.S; s += L)
      for (int64_t k = 0; k < L; k++) sum_terms<K>(l1[k], l2[k], ur[s + k], K == kDot ? vr[s + k] : 0.0f, m);
    for (; s < g.S; s++) sum_terms<K>(t1, t2, ur[s], K == kDot ? vr[s] : 0.0f, m);
    for (int64_t k = 0; k < L; k++) t1 += l1[k], t2 += l2[k];
    acc[c] += t1;
    if (K == kDot) acc2[c] += t2;
  }
}

// group_mean spreads the sum of acc over each group's channels, divided by
// the group's element count, back to every channel of the group.
KK_INLINE void group_mean(const Geo &g, const double *acc, double *out) {
  int64_t cg = g.C / g.G;
  double n = static_cast<double>(cg * g.S);
  for (int64_t k = 0; k < g.G; k++) {
    double t = 0;
    for (int64_t c = k * cg; c < (k + 1) * cg; c++) t += acc[c];
    for (int64_t c = k * cg; c < (k + 1) * cg; c++) out[c] = t / n;
  }
}

// Scratch of one thread: per-channel rows, and whole images in float32:
// act'·dy (img2) and the bfloat16 kernels' staging copies of x, y or dy, dx.
struct Scratch {
  std::vector<double> d;
  std::vector<float> f, img0, img1, img2, img3;
  Scratch(int64_t C, int64_t per, bool staged, bool backward)
      : d(6 * C), f(8 * C), img0(staged ? per : 0), img1(staged ? per : 0),
        img2(backward ? per : 0), img3(staged && backward ? per : 0) {}
};

// forward normalises one image x (float32) into y and stores its groups'
// mean and 1/std.
template <bool CL, int64_t A>
KK_INLINE void forward(const float *__restrict x, float *__restrict y, const float *w,
                       const float *b, float *mean, float *rstd, Geo g, double eps,
                       Scratch &sc) {
  double *sum = sc.d.data(), *mu = sum + g.C, *sq = mu + g.C, *var = sq + g.C;
  float *scale = sc.f.data(), *shift = scale + g.C;
  std::fill(sum, sum + 4 * g.C, 0.0);
  sums<CL, kPlain>(g, x, nullptr, nullptr, sum, nullptr);
  group_mean(g, sum, mu);
  sums<CL, kCentered>(g, x, nullptr, mu, sq, nullptr);
  group_mean(g, sq, var);
  int64_t cg = g.C / g.G;
  for (int64_t k = 0; k < g.G; k++) {
    mean[k] = static_cast<float>(mu[k * cg]);
    rstd[k] = static_cast<float>(1.0 / std::sqrt(var[k * cg] + eps));
  }
  for (int64_t c = 0; c < g.C; c++) {
    float r = rstd[c / cg], wc = w[c], bc = b[c];
    scale[c] = r * wc;
    shift[c] = bc - mean[c / cg] * r * wc;
  }
  affine_act<CL, A>(g, x, y, scale, shift);
}

// backward computes dx for one image (float32) and stores its share of dw
// and db in dw_n and db_n (per channel).
template <bool CL, int64_t A>
KK_INLINE void backward(const float *__restrict x, const float *__restrict dy,
                        float *__restrict dx, const float *w, const float *b, const float *mean,
                        const float *rstd, double *dw_n, double *db_n, Geo g, Scratch &sc) {
  double *sdz = sc.d.data(), *sdzx = sdz + g.C, *gsum = sdzx + g.C, *gxsum = gsum + g.C,
         *ga = gxsum + g.C, *gb = ga + g.C;
  float *scale = sc.f.data(), *shift = scale + g.C, *p = shift + g.C, *q = p + g.C, *r = q + g.C;
  float *dz = sc.img2.data();
  int64_t cg = g.C / g.G;
  for (int64_t c = 0; c < g.C; c++) {
    float rc = rstd[c / cg], wc = w[c], bc = b[c];
    scale[c] = rc * wc;
    shift[c] = bc - mean[c / cg] * rc * wc;
  }
  affine_dact<CL, A>(g, x, dy, dz, scale, shift);
  std::fill(sdz, sdz + 2 * g.C, 0.0);
  sums<CL, kDot>(g, dz, x, nullptr, sdz, sdzx);
  // db = Σdz and dw = Σdz·x̂ = rstd·(Σdz·x - mean·Σdz) per channel. With
  // gi = dz·w the gradient of x̂, dx = rstd·(gi - mean(gi) - x̂·mean(gi·x̂))
  // over the group: dx = dz·p + x·q + r per channel.
  for (int64_t c = 0; c < g.C; c++) {
    double rc = rstd[c / cg], m = mean[c / cg], wc = w[c];
    db_n[c] = sdz[c];
    dw_n[c] = rc * (sdzx[c] - m * sdz[c]);
    gsum[c] = wc * db_n[c];
    gxsum[c] = wc * dw_n[c];
  }
  group_mean(g, gsum, ga);
  group_mean(g, gxsum, gb);
  for (int64_t c = 0; c < g.C; c++) {
    double rc = rstd[c / cg], m = mean[c / cg], wc = w[c];
    p[c] = static_cast<float>(rc * wc);
    q[c] = static_cast<float>(-rc * rc * gb[c]);
    r[c] = static_cast<float>(-rc * ga[c] + m * rc * rc * gb[c]);
  }
  lin2<CL>(g, dz, x, dx, p, q, r);
}

// The entry points for one image, per storage type (float for float32,
// uint16_t for bfloat16, staged through float32 copies), layout and
// activation, each cloned per instruction set.
#define KK_GN_KERNELS(NAME, CL, A)                                                                \
  KK_CLONES void NAME##_fwd_f32(const float *x, float *y, const float *w, const float *b,        \
                                float *mean, float *rstd, Geo g, double eps, Scratch &sc) {      \
    forward<CL, A>(x, y, w, b, mean, rstd, g, eps, sc);                                          \
  }                                                                                              \
  KK_CLONES void NAME##_fwd_bf16(const uint16_t *x, uint16_t *y, const float *w, const float *b, \
                                 float *mean, float *rstd, Geo g, double eps, Scratch &sc) {     \
    int64_t n = g.C * g.S;                                                                       \
    kk::to_float(x, sc.img0.data(), n);                                                              \
    forward<CL, A>(sc.img0.data(), sc.img1.data(), w, b, mean, rstd, g, eps, sc);                \
    kk::to_bf16(sc.img1.data(), y, n);                                                               \
  }                                                                                              \
  KK_CLONES void NAME##_bwd_f32(const float *x, const float *dy, float *dx, const float *w,      \
                                const float *b, const float *mean, const float *rstd,            \
                                double *dw, double *db, Geo g, Scratch &sc) {                    \
    backward<CL, A>(x, dy, dx, w, b, mean, rstd, dw, db, g, sc);                                 \
  }                                                                                              \
  KK_CLONES void NAME##_bwd_bf16(const uint16_t *x, const uint16_t *dy, uint16_t *dx,            \
                                 const float *w, const float *b, const float *mean,              \
                                 const float *rstd, double *dw, double *db, Geo g,               \
                                 Scratch &sc) {                                                  \
    int64_t n = g.C * g.S;                                                                       \
    kk::to_float(x, sc.img0.data(), n);                                                              \
    kk::to_float(dy, sc.img1.data(), n);                                                             \
    backward<CL, A>(sc.img0.data(), sc.img1.data(), sc.img3.data(), w, b, mean, rstd, dw, db, g, \
                    sc);                                                                         \
    kk::to_bf16(sc.img3.data(), dx, n);                                                              \
  }
#define KK_GN_ACTS(NAME, CL)             \
  KK_GN_KERNELS(NAME##_none, CL, kNone) \
  KK_GN_KERNELS(NAME##_relu, CL, kReLU) \
  KK_GN_KERNELS(NAME##_silu, CL, kSiLU)
KK_GN_ACTS(nchw, false)
KK_GN_ACTS(nhwc, true)

template <typename S>
using FwdFn = void (*)(const S *, S *, const float *, const float *, float *, float *, Geo,
                       double, Scratch &);
template <typename S>
using BwdFn = void (*)(const S *, const S *, S *, const float *, const float *, const float *,
                       const float *, double *, double *, Geo, Scratch &);

template <typename S>
struct Kernels {
  FwdFn<S> fwd;
  BwdFn<S> bwd;
};

#define KK_PICK(L, T)                                                \
  switch (a) {                                                       \
    case kReLU: return {L##_relu_fwd_##T, L##_relu_bwd_##T};         \
    case kSiLU: return {L##_silu_fwd_##T, L##_silu_bwd_##T};         \
    default: return {L##_none_fwd_##T, L##_none_bwd_##T};            \
  }
template <typename S>
Kernels<S> kernels(bool cl, int64_t a);
template <>
Kernels<float> kernels<float>(bool cl, int64_t a) {
  if (cl) KK_PICK(nhwc, f32)
  KK_PICK(nchw, f32)
}
template <>
Kernels<uint16_t> kernels<uint16_t>(bool cl, int64_t a) {
  if (cl) KK_PICK(nhwc, bf16)
  KK_PICK(nchw, bf16)
}

Geo geometry(const at::Tensor &x, int64_t groups) {
  return Geo{x.size(1), x.numel() / (x.size(0) * x.size(1)), groups};
}

// per_image reports whether affine parameters are (N, C), one set an image
// (a FiLM-modulated norm), rather than (C).
bool per_image(const at::Tensor &p) { return p.dim() == 2; }

// The CPU path: forward kernels over the batch, images in parallel; w and
// b are defined, (C) or (N, C).
template <typename S>
void run_forward(const at::Tensor &x, at::Tensor &y, const at::Tensor &w, const at::Tensor &b,
                 at::Tensor &mean, at::Tensor &rstd, int64_t groups, double eps, int64_t a,
                 bool cl) {
  Geo g = geometry(x, groups);
  FwdFn<S> k = kernels<S>(cl, a).fwd;
  const S *xp = static_cast<const S *>(x.data_ptr());
  S *yp = static_cast<S *>(y.data_ptr());
  const float *wp = w.data_ptr<float>(), *bp = b.data_ptr<float>();
  int64_t wstep = per_image(w) ? g.C : 0;
  float *mp = mean.data_ptr<float>(), *rp = rstd.data_ptr<float>();
  int64_t per = g.C * g.S;
  at::parallel_for(0, x.size(0), 1, [&](int64_t lo, int64_t hi) {
    Scratch sc(g.C, per, !std::is_same<S, float>::value, false);
    for (int64_t n = lo; n < hi; n++)
      k(xp + n * per, yp + n * per, wp + n * wstep, bp + n * wstep, mp + n * g.G, rp + n * g.G, g,
        eps, sc);
  });
}

template <typename S>
void run_backward(const at::Tensor &x, const at::Tensor &dy, at::Tensor &dx, const at::Tensor &w,
                  const at::Tensor &b, const at::Tensor &mean, const at::Tensor &rstd,
                  at::Tensor &dw, at::Tensor &db, int64_t groups, int64_t a, bool cl) {
  Geo g = geometry(x, groups);
  BwdFn<S> k = kernels<S>(cl, a).bwd;
  const S *xp = static_cast<const S *>(x.data_ptr());
  const S *dyp = static_cast<const S *>(dy.data_ptr());
  S *dxp = static_cast<S *>(dx.data_ptr());
  const float *wp = w.data_ptr<float>(), *bp = b.data_ptr<float>();
  int64_t wstep = per_image(w) ? g.C : 0;
  const float *mp = mean.data_ptr<float>(), *rp = rstd.data_ptr<float>();
  double *dwp = dw.data_ptr<double>(), *dbp = db.data_ptr<double>();
  int64_t per = g.C * g.S;
  at::parallel_for(0, x.size(0), 1, [&](int64_t lo, int64_t hi) {
    Scratch sc(g.C, per, !std::is_same<S, float>::value, true);
    for (int64_t n = lo; n < hi; n++)
      k(xp + n * per, dyp + n * per, dxp + n * per, wp + n * wstep, bp + n * wstep, mp + n * g.G,
        rp + n * g.G, dwp + n * g.C, dbp + n * g.C, g, sc);
  });
}

// cpu_kernels reports whether the CPU kernels take x with parameters w, b.
bool cpu_kernels(const at::Tensor &x, const at::Tensor &w, const at::Tensor &b) {
  auto affine_ok = [&](const at::Tensor &p) {
    return !p.defined() || (p.scalar_type() == at::kFloat && p.device().is_cpu() &&
                            p.dim() == 1 && p.size(0) == x.size(1));
  };
  return x.device().is_cpu() && x.dim() >= 3 && x.numel() > 0 &&
         (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16) && affine_ok(w) &&
         affine_ok(b);
}

// gn_forward runs the forward kernels on x with affine parameters w and b,
// (C) or (N, C), and returns act(GroupNorm(x)) and what its backward reads.
std::pair<at::Tensor, kk::NormState> gn_forward(at::Tensor x, const at::Tensor &w,
                                                const at::Tensor &b, int64_t groups, double eps,
                                                int64_t a) {
  bool cl = kk::channels_last(x);
  x = x.contiguous(kk::format(cl));
  at::Tensor wc = w.contiguous(), bc = b.contiguous();
  at::Tensor y = at::empty_like(x, kk::format(cl));
  auto st = x.options().dtype(at::kFloat);
  at::Tensor mean = at::empty({x.size(0), groups}, st), rstd = at::empty({x.size(0), groups}, st);
  if (x.scalar_type() == at::kFloat)
    run_forward<float>(x, y, wc, bc, mean, rstd, groups, eps, a, cl);
  else
    run_forward<uint16_t>(x, y, wc, bc, mean, rstd, groups, eps, a, cl);
  return {y, kk::NormState{x, wc, bc, mean, rstd, a, cl}};
}

// gn_backward returns dx and, per image and channel (N, C, double), the
// sums Σdz·x̂ and Σdz, dz the gradient of GroupNorm(x)·w + b.
std::tuple<at::Tensor, at::Tensor, at::Tensor> gn_backward(const kk::NormState &st,
                                                           int64_t groups,
                                                           const at::Tensor &grad) {
  const at::Tensor &x = st.x;
  at::Tensor dy = grad.to(x.scalar_type()).contiguous(kk::format(st.cl));
  at::Tensor dx = at::empty_like(x, kk::format(st.cl));
  auto d = x.options().dtype(at::kDouble);
  at::Tensor dw = at::empty({x.size(0), x.size(1)}, d), db = at::empty({x.size(0), x.size(1)}, d);
  if (x.scalar_type() == at::kFloat)
    run_backward<float>(x, dy, dx, st.w, st.b, st.mean, st.rstd, dw, db, groups, st.act, st.cl);
  else
    run_backward<uint16_t>(x, dy, dx, st.w, st.b, st.mean, st.rstd, dw, db, groups, st.act, st.cl);
  return {dx, dw, db};
}

struct GroupNormAct : public torch::autograd::Function<GroupNormAct> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, at::Tensor x, at::Tensor w,
                            at::Tensor b, int64_t groups, double eps, int64_t a) {
    auto [y, st] = gn_forward(x, w, b, groups, eps, a);
    st.save(ctx);
    ctx->saved_data["groups"] = groups;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    kk::NormState st = kk::NormState::load(ctx);
    auto [dx, dw, db] = gn_backward(st, ctx->saved_data["groups"].toInt(), grads[0]);
    return {dx, dw.sum(0).to(st.w.scalar_type()), db.sum(0).to(st.b.scalar_type()), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

// GroupNormFiLMAct is act(GroupNorm(x)·mul + add) with mul and add (N, C),
// FiLM's modulation per image (ADM's scale-shift norm): the kernels run with
// the per-image affine parameters w·mul and b·mul + add, and the per-image
// sums of the backward give all five gradients (with s = Σdz·x̂, t = Σdz per
// image: dw = Σ_n s·mul, db = Σ_n t·mul, dmul = s·w + t·b, dadd = t).
struct GroupNormFiLMAct : public torch::autograd::Function<GroupNormFiLMAct> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, at::Tensor x, at::Tensor w,
                            at::Tensor b, at::Tensor mul, at::Tensor add, int64_t groups,
                            double eps, int64_t a) {
    at::Tensor m = mul.to(at::kFloat);
    auto [y, st] = gn_forward(x, w.unsqueeze(0) * m, b.unsqueeze(0) * m + add.to(at::kFloat),
                              groups, eps, a);
    st.save(ctx, {w, b, m});
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["mul"] = static_cast<int64_t>(mul.scalar_type());
    ctx->saved_data["add"] = static_cast<int64_t>(add.scalar_type());
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    std::vector<at::Tensor> extra;
    kk::NormState st = kk::NormState::load(ctx, &extra);
    const at::Tensor &w = extra[0], &b = extra[1], &m = extra[2];
    auto [dx, s, t] = gn_backward(st, ctx->saved_data["groups"].toInt(), grads[0]);
    auto type = [&](const char *k) { return static_cast<at::ScalarType>(ctx->saved_data[k].toInt()); };
    return {dx,
            (s * m).sum(0).to(w.scalar_type()),
            (t * m).sum(0).to(b.scalar_type()),
            (s * w.unsqueeze(0) + t * b.unsqueeze(0)).to(type("mul")),
            t.to(type("add")),
            at::Tensor(),
            at::Tensor(),
            at::Tensor()};
  }
};

// composite is libtorch's group_norm and the activation, computing in the
// affine parameters' dtype when x's differs (autocast's policy for the
// norms: libtorch 1.13's CPU kernels refuse mixed dtypes) and returning
// x's dtype, as the CPU kernels do.
// With mul and add (N, C) it is act(group_norm(x)·mul + add).
at::Tensor composite(const at::Tensor &x, int64_t groups, const at::Tensor &w,
                     const at::Tensor &b, const at::Tensor &mul, const at::Tensor &add,
                     double eps, int64_t a) {
  at::Tensor in = w.defined() && w.scalar_type() != x.scalar_type() ? x.to(w.scalar_type()) : x;
  at::Tensor y = at::group_norm(in, groups, w, b, eps, /*cudnn_enabled=*/true);
  if (mul.defined()) {
    std::vector<int64_t> shape(x.dim(), 1);
    shape[0] = x.size(0), shape[1] = x.size(1);
    y = y * mul.to(y.scalar_type()).reshape(shape) + add.to(y.scalar_type()).reshape(shape);
  }
  if (a == kSiLU) y = at::silu(y);
  if (a == kReLU) y = at::relu(y);
  return y.to(x.scalar_type());
}

}  // namespace

extern "C" {

void kk_group_norm(kk_tensor x, int64_t groups, kk_tensor w, kk_tensor b, kk_tensor mul,
                   kk_tensor add, double eps, int act, kk_tensor *out, char **err) {
  KK_TRY(const at::Tensor &in = T(x); at::Tensor wt = Opt(w), bt = Opt(b);
         at::Tensor mt = Opt(mul), at_ = Opt(add);
         if (act != kNone && act != kReLU && act != kSiLU)
           throw std::invalid_argument("group_norm: unknown activation " + std::to_string(act));
         if (in.dim() < 2 || groups < 1 || in.size(1) % groups != 0)
           throw std::invalid_argument("group_norm: " + std::to_string(groups) +
                                       " groups must divide the channels of input " +
                                       c10::str(in.sizes()));
         if (!(eps >= 0)) throw std::invalid_argument("group_norm: eps must be >= 0");
         auto film_ok = [&](const at::Tensor &t) {
           return t.dim() == 2 && t.size(0) == in.size(0) && t.size(1) == in.size(1) &&
                  at::isFloatingType(t.scalar_type()) && t.device() == in.device();
         };
         if (mt.defined() != at_.defined() || (mt.defined() && !(film_ok(mt) && film_ok(at_))))
           throw std::invalid_argument("group_norm: mul and add must both be given, floating "
                                       "point on the input's device, shaped (batch, channels) " +
                                       c10::str(in.sizes().slice(0, 2)));
         if (!cpu_kernels(in, wt, bt)) {
           *out = kk::wrap(composite(in, groups, wt, bt, mt, at_, eps, act));
         } else {
           // A custom autograd function takes defined tensors only: no
           // affine is w = 1, b = 0 (their gradients go nowhere).
           auto f = in.options().dtype(at::kFloat);
           if (!wt.defined()) wt = at::ones({in.size(1)}, f);
           if (!bt.defined()) bt = at::zeros({in.size(1)}, f);
           *out = kk::wrap(mt.defined() ? GroupNormFiLMAct::apply(in, wt, bt, mt, at_, groups, eps, act)
                                        : GroupNormAct::apply(in, wt, bt, groups, eps, act));
         })
}

}  // extern "C"
