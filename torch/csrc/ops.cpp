// ops.cpp: element-wise ops, reductions and shape ops.
#include "internal.h"

using kk::T;

namespace {

at::Tensor unary(int op, const at::Tensor &a) {
  switch (op) {
    case KK_NEG: return at::neg(a);
    case KK_EXP: return at::exp(a);
    case KK_LOG: return at::log(a);
    case KK_SQRT: return at::sqrt(a);
    case KK_RSQRT: return at::rsqrt(a);
    case KK_SIN: return at::sin(a);
    case KK_COS: return at::cos(a);
    case KK_ABS: return at::abs(a);
    case KK_SQUARE: return at::square(a);
    case KK_RELU: return at::relu(a);
    case KK_SILU: return at::silu(a);
    case KK_GELU: return at::gelu(a);
    case KK_SIGMOID: return at::sigmoid(a);
    case KK_TANH: return at::tanh(a);
    case KK_SOFTPLUS: return at::softplus(a);
    case KK_LOG1P: return at::log1p(a);
    case KK_EXPM1: return at::expm1(a);
    case KK_FLOOR: return at::floor(a);
    case KK_ROUND: return at::round(a);
    case KK_SIGN: return at::sign(a);
    case KK_RECIPROCAL: return at::reciprocal(a);
    case KK_LOGICAL_NOT: return at::logical_not(a);
    case KK_ISNAN: return at::isnan(a);
    case KK_ISFINITE: return at::isfinite(a);
    case KK_LOGSIGMOID: return at::log_sigmoid(a);
  }
  throw std::invalid_argument("unknown unary op " + std::to_string(op));
}

// binary handles both tensor-tensor and tensor-scalar operands.
template <typename B>
at::Tensor binary(int op, const at::Tensor &a, const B &b) {
  switch (op) {
    case KK_ADD: return at::add(a, b);
    case KK_SUB: return at::sub(a, b);
    case KK_MUL: return at::mul(a, b);
    case KK_DIV: return at::div(a, b);
    case KK_POW: return at::pow(a, b);
    case KK_EQ: return at::eq(a, b);
    case KK_NE: return at::ne(a, b);
    case KK_LT: return at::lt(a, b);
    case KK_LE: return at::le(a, b);
    case KK_GT: return at::gt(a, b);
    case KK_GE: return at::ge(a, b);
    case KK_REMAINDER: return at::remainder(a, b);
  }
  throw std::invalid_argument("unknown binary op " + std::to_string(op));
}

at::Tensor binary_tensor(int op, const at::Tensor &a, const at::Tensor &b) {
  switch (op) {
    case KK_MAXIMUM: return at::maximum(a, b);
    case KK_MINIMUM: return at::minimum(a, b);
    case KK_LOGICAL_AND: return at::logical_and(a, b);
    case KK_LOGICAL_OR: return at::logical_or(a, b);
    case KK_RSUB: return at::sub(b, a);
    case KK_RDIV: return at::div(b, a);
  }
  return binary(op, a, b);
}

// scalar keeps integer tensors integral when the number is whole, as
// Python's `t - 1` does; otherwise libtorch would promote to float.
at::Scalar scalar(const at::Tensor &a, double s) {
  if (at::isIntegralType(a.scalar_type(), /*includeBool=*/false) && s == std::floor(s) &&
      std::fabs(s) < 9007199254740992.0)
    return at::Scalar(static_cast<int64_t>(s));
  return at::Scalar(s);
}

at::Tensor binary_scalar(int op, const at::Tensor &a, double d) {
  at::Scalar s = scalar(a, d);
  switch (op) {
    case KK_MAXIMUM: return at::clamp_min(a, s);
    case KK_MINIMUM: return at::clamp_max(a, s);
    case KK_RSUB: return at::rsub(a, s);
    case KK_RDIV: return at::mul(at::reciprocal(a), d);
    case KK_LOGICAL_AND:
    case KK_LOGICAL_OR:
      throw std::invalid_argument("logical ops take tensor operands");
  }
  return binary(op, a, s);
}

at::Tensor reduce(int op, const at::Tensor &a, at::IntArrayRef d, bool keep, double arg) {
  bool all = d.empty();
  auto one = [&](const char *name) {
    if (d.size() > 1)
      throw std::invalid_argument(std::string(name) + " takes at most one dimension");
    return d.empty() ? int64_t(0) : d[0];
  };
  switch (op) {
    case KK_SUM: return all ? at::sum(a) : at::sum(a, d, keep);
    case KK_MEAN: return all ? at::mean(a) : at::mean(a, d, keep);
    case KK_MAX: return all ? at::max(a) : at::amax(a, d, keep);
    case KK_MIN: return all ? at::min(a) : at::amin(a, d, keep);
    case KK_ARGMAX: return all ? at::argmax(a) : at::argmax(a, one("argmax"), keep);
    case KK_ARGMIN: return all ? at::argmin(a) : at::argmin(a, one("argmin"), keep);
    case KK_PROD: return all ? at::prod(a) : at::prod(a, one("prod"), keep);
    case KK_LOGSUMEXP: {
      if (!all) return at::logsumexp(a, d, keep);
      std::vector<int64_t> every(a.dim());
      for (int64_t i = 0; i < a.dim(); i++) every[i] = i;
      return at::logsumexp(a, every, keep);
    }
    case KK_VAR: return all ? at::var(a, static_cast<bool>(arg != 0))
                            : at::var(a, d, static_cast<bool>(arg != 0), keep);
    case KK_STD: return all ? at::std(a, static_cast<bool>(arg != 0))
                            : at::std(a, d, static_cast<bool>(arg != 0), keep);
    case KK_NORM: return all ? at::norm(a, arg) : at::norm(a, arg, d, keep);
    case KK_ALL: return all ? at::all(a) : at::all(a, one("all"), keep);
    case KK_ANY: return all ? at::any(a) : at::any(a, one("any"), keep);
  }
  throw std::invalid_argument("unknown reduction " + std::to_string(op));
}

std::vector<at::indexing::TensorIndex> indices(int n, const int *kinds, const int64_t *ints,
                                               const kk_tensor *ts) {
  using namespace at::indexing;
  std::vector<TensorIndex> v;
  v.reserve(n);
  auto bound = [](int64_t x) -> c10::optional<int64_t> {
    if (x == KK_SLICE_NONE) return c10::nullopt;
    return x;
  };
  for (int i = 0; i < n; i++) {
    const int64_t *p = ints + 3 * i;
    switch (kinds[i]) {
      case KK_IDX_INT: v.emplace_back(p[0]); break;
      case KK_IDX_SLICE: {
        if (p[2] == 0) throw std::invalid_argument("slice step cannot be zero");
        v.emplace_back(Slice(bound(p[0]), bound(p[1]), p[2]));
        break;
      }
      case KK_IDX_ELLIPSIS: v.emplace_back(Ellipsis); break;
      case KK_IDX_NEWAXIS: v.emplace_back(None); break;
      case KK_IDX_TENSOR: v.emplace_back(T(ts[i])); break;
      default: throw std::invalid_argument("unknown index kind");
    }
  }
  return v;
}

}  // namespace

extern "C" {

void kk_unary(int op, kk_tensor a, kk_tensor *out, char **err) { KK_OUT(unary(op, T(a))) }

void kk_unary_(int op, kk_tensor a, char **err) {
  KK_TRY(at::Tensor t = T(a); switch (op) {
    case KK_RELU: at::relu_(t); break;
    case KK_SILU: at::silu_(t); break;
    default: throw std::invalid_argument("unary_: op " + std::to_string(op) + " has no in-place form here");
  })
}

void kk_binary(int op, kk_tensor a, kk_tensor b, kk_tensor *out, char **err) {
  KK_OUT(binary_tensor(op, T(a), T(b)))
}

void kk_binary_scalar(int op, kk_tensor a, double s, kk_tensor *out, char **err) {
  KK_OUT(binary_scalar(op, T(a), s))
}

void kk_clamp(kk_tensor a, double lo, double hi, int has_lo, int has_hi, kk_tensor *out,
              char **err) {
  KK_OUT(at::clamp(T(a), has_lo ? c10::optional<at::Scalar>(lo) : c10::nullopt,
                   has_hi ? c10::optional<at::Scalar>(hi) : c10::nullopt))
}

void kk_where(kk_tensor cond, kk_tensor a, kk_tensor b, kk_tensor *out, char **err) {
  KK_OUT(at::where(T(cond), T(a), T(b)))
}

void kk_lerp(kk_tensor a, kk_tensor b, double w, kk_tensor *out, char **err) {
  KK_OUT(at::lerp(T(a), T(b), w))
}

void kk_add_(kk_tensor a, kk_tensor b, double alpha, char **err) {
  KK_TRY(T(a).add_(T(b), scalar(T(a), alpha));)
}
void kk_mul_scalar_(kk_tensor a, double s, char **err) { KK_TRY(T(a).mul_(s);) }
void kk_copy_(kk_tensor dst, kk_tensor src, char **err) {
  KK_TRY(T(dst).copy_(T(src)); if (T(dst).is_cpu() && !T(src).is_cpu()) kk::host_read();)
}
void kk_fill_(kk_tensor a, double v, char **err) { KK_TRY(T(a).fill_(v);) }
void kk_lerp_(kk_tensor a, kk_tensor b, double w, char **err) { KK_TRY(T(a).lerp_(T(b), w);) }

void kk_reduce(int op, kk_tensor a, const int64_t *dims, int nd, int keepdim, double arg,
               kk_tensor *out, char **err) {
  KK_OUT(reduce(op, T(a), kk::dims(dims, nd), keepdim != 0, arg))
}

void kk_reshape(kk_tensor a, const int64_t *shape, int nd, int view, kk_tensor *out,
                char **err) {
  KK_OUT(view ? T(a).view(kk::dims(shape, nd)) : T(a).reshape(kk::dims(shape, nd)))
}

void kk_permute(kk_tensor a, const int64_t *dims, int nd, kk_tensor *out, char **err) {
  KK_OUT(T(a).permute(kk::dims(dims, nd)))
}

void kk_flip(kk_tensor a, const int64_t *dims, int nd, kk_tensor *out, char **err) {
  KK_OUT(T(a).flip(kk::dims(dims, nd)))
}

void kk_transpose(kk_tensor a, int64_t d0, int64_t d1, kk_tensor *out, char **err) {
  KK_OUT(T(a).transpose(d0, d1))
}

void kk_squeeze(kk_tensor a, int64_t dim, int all, kk_tensor *out, char **err) {
  KK_OUT(all ? T(a).squeeze() : T(a).squeeze(dim))
}

void kk_unsqueeze(kk_tensor a, int64_t dim, kk_tensor *out, char **err) {
  KK_OUT(T(a).unsqueeze(dim))
}

void kk_flatten(kk_tensor a, int64_t start, int64_t end, kk_tensor *out, char **err) {
  KK_OUT(T(a).flatten(start, end))
}

void kk_expand(kk_tensor a, const int64_t *shape, int nd, kk_tensor *out, char **err) {
  KK_OUT(T(a).expand(kk::dims(shape, nd)))
}

void kk_repeat(kk_tensor a, const int64_t *reps, int nd, kk_tensor *out, char **err) {
  KK_OUT(T(a).repeat(kk::dims(reps, nd)))
}

void kk_narrow(kk_tensor a, int64_t dim, int64_t start, int64_t len, kk_tensor *out,
               char **err) {
  KK_OUT(T(a).narrow(dim, start, len))
}

void kk_cat(const kk_tensor *ts, int n, int64_t dim, int stack, kk_tensor *out, char **err) {
  KK_TRY(auto v = kk::list(ts, n);
         if (v.empty()) throw std::invalid_argument("cat/stack of no tensors");
         *out = kk::wrap(stack ? at::stack(v, dim) : at::cat(v, dim));)
}

void kk_index_select(kk_tensor a, int64_t dim, kk_tensor idx, kk_tensor *out, char **err) {
  KK_OUT(at::index_select(T(a), dim, T(idx)))
}

void kk_gather(kk_tensor a, int64_t dim, kk_tensor idx, kk_tensor *out, char **err) {
  KK_OUT(at::gather(T(a), dim, T(idx)))
}

void kk_index(kk_tensor a, int n, const int *kinds, const int64_t *ints, const kk_tensor *ts,
              kk_tensor *out, char **err) {
  KK_OUT(T(a).index(indices(n, kinds, ints, ts)))
}

void kk_index_put_(kk_tensor a, int n, const int *kinds, const int64_t *ints,
                   const kk_tensor *ts, kk_tensor values, char **err) {
  KK_TRY(kk::M(a).index_put_(indices(n, kinds, ints, ts), T(values));)
}

void kk_masked_fill(kk_tensor a, kk_tensor mask, double v, kk_tensor *out, char **err) {
  KK_OUT(at::masked_fill(T(a), T(mask), v))
}

void kk_kthvalue(kk_tensor a, int64_t k, int64_t dim, int keepdim, kk_tensor *out, char **err) {
  KK_OUT(std::get<0>(at::kthvalue(T(a), k, dim, keepdim != 0)))
}

void kk_one_hot(kk_tensor idx, int64_t classes, kk_tensor *out, char **err) {
  KK_OUT(at::one_hot(T(idx), classes))
}

}  // extern "C"
