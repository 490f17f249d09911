// nn.cpp: neural-network layers, losses and attention.
#include "internal.h"

using kk::Opt;
using kk::T;

namespace {
at::IntArrayRef pair(const int64_t *p) { return at::IntArrayRef(p, 2); }

// sdpa is softmax(q kᵀ/√d + mask) v. On the CPU it is the formula on every
// libtorch: libtorch 1.13 has no fused kernel, and on 2.6, forward and
// backward over the U-Net's q, k, v views, the formula took 3.5 ms against
// the fused kernels' 7.6 at 7×7 pixels in bfloat16 and 48 against 398 at
// 16×16, 34 against 44 at 7×7 in float32 and 540 against 440 at 16×16 (the
// colour network's whole float32 step was level either way); the formula
// is also what the PyTorch twins compute (scripts/sdpa_check.py checks the
// fused CPU kernel against it). CUDA gets libtorch's fused kernels (flash,
// memory-efficient) on 2.x.
at::Tensor sdpa(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                const at::Tensor &mask, bool causal) {
#if TORCH_AT_LEAST(2, 0)
  if (!q.device().is_cpu())
    return at::scaled_dot_product_attention(
        q, k, v, mask.defined() ? c10::optional<at::Tensor>(mask) : c10::nullopt, 0.0, causal);
#endif
  auto scores = at::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(-1)));
  if (causal) {
    auto keep = at::ones({q.size(-2), k.size(-2)}, q.options().dtype(at::kBool)).tril();
    scores = scores.masked_fill(keep.logical_not(), -std::numeric_limits<double>::infinity());
  }
  if (mask.defined()) {
    if (mask.scalar_type() == at::kBool)
      scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
    else
      scores = scores + mask;
  }
  return at::matmul(at::softmax(scores, -1), v);
}
}  // namespace

extern "C" {

void kk_matmul(kk_tensor a, kk_tensor b, kk_tensor *out, char **err) {
  KK_OUT(at::matmul(T(a), T(b)))
}

void kk_linear(kk_tensor x, kk_tensor w, kk_tensor b, kk_tensor *out, char **err) {
  KK_OUT(at::linear(T(x), T(w), Opt(b)))
}

void kk_conv2d(kk_tensor x, kk_tensor w, kk_tensor b, const int64_t *stride,
               const int64_t *padding, const int64_t *dilation, int64_t groups, kk_tensor *out,
               char **err) {
  KK_OUT(at::conv2d(T(x), T(w), Opt(b), pair(stride), pair(padding), pair(dilation), groups))
}

void kk_conv_transpose2d(kk_tensor x, kk_tensor w, kk_tensor b, const int64_t *stride,
                         const int64_t *padding, const int64_t *output_padding,
                         const int64_t *dilation, int64_t groups, kk_tensor *out, char **err) {
  KK_OUT(at::conv_transpose2d(T(x), T(w), Opt(b), pair(stride), pair(padding),
                              pair(output_padding), groups, pair(dilation)))
}

// A norm whose input's dtype differs from its affine parameters' (a bf16
// activation under CPU autocast, whose libtorch 1.13 kernels refuse mixed
// dtypes) computes in the parameters' dtype, float32: CUDA autocast's policy
// for the norms. (Group normalisation is in norm.cpp, batch normalisation
// in bnorm.cpp.)
static at::Tensor norm_input(kk_tensor x, kk_tensor w) {
  const at::Tensor &in = T(x);
  if (w != nullptr && T(w).scalar_type() != in.scalar_type()) return in.to(T(w).scalar_type());
  return in;
}

void kk_layer_norm(kk_tensor x, const int64_t *shape, int nd, kk_tensor w, kk_tensor b,
                   double eps, kk_tensor *out, char **err) {
  KK_OUT(at::layer_norm(norm_input(x, w), kk::dims(shape, nd), Opt(w), Opt(b), eps, true))
}

void kk_pool2d(int avg, kk_tensor x, const int64_t *kernel, const int64_t *stride,
               const int64_t *padding, kk_tensor *out, char **err) {
  KK_OUT(avg ? at::avg_pool2d(T(x), pair(kernel), pair(stride), pair(padding))
             : at::max_pool2d(T(x), pair(kernel), pair(stride), pair(padding)))
}

void kk_embedding(kk_tensor w, kk_tensor idx, kk_tensor *out, char **err) {
  KK_OUT(at::embedding(T(w), T(idx)))
}

void kk_dropout(kk_tensor x, double p, int train, kk_tensor *out, char **err) {
  KK_TRY(if (p < 0 || p > 1) throw std::invalid_argument("dropout probability must be in [0, 1]");
         *out = kk::wrap(at::dropout(T(x), p, train != 0));)
}

void kk_softmax(kk_tensor x, int64_t dim, int log, kk_tensor *out, char **err) {
  KK_OUT(log ? at::log_softmax(T(x), dim) : at::softmax(T(x), dim))
}

void kk_mse_loss(kk_tensor a, kk_tensor b, int reduction, kk_tensor *out, char **err) {
  KK_TRY(if (T(a).sizes() != T(b).sizes())
           throw std::invalid_argument("mse_loss: input " + c10::str(T(a).sizes()) +
                                       " and target " + c10::str(T(b).sizes()) + " differ in shape");
         *out = kk::wrap(at::mse_loss(T(a), T(b), reduction));)
}

void kk_bce_loss(kk_tensor p, kk_tensor y, int logits, int reduction, kk_tensor *out,
                 char **err) {
  KK_OUT(logits ? at::binary_cross_entropy_with_logits(T(p), T(y), {}, {}, reduction)
                : at::binary_cross_entropy(T(p), T(y), {}, reduction))
}

void kk_cross_entropy(kk_tensor logits, kk_tensor target, int reduction,
                      double label_smoothing, kk_tensor *out, char **err) {
  KK_OUT(at::cross_entropy_loss(T(logits), T(target), {}, reduction, -100, label_smoothing))
}

void kk_sdpa(kk_tensor q, kk_tensor k, kk_tensor v, kk_tensor mask, int causal,
             kk_tensor *out, char **err) {
  KK_OUT(sdpa(T(q), T(k), T(v), Opt(mask), causal != 0))
}

}  // extern "C"
