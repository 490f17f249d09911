// autograd.cpp: gradients, grad mode, optimizers and gradient clipping.
#include "internal.h"

using kk::T;

namespace {
// A Group holds the parameters that have a gradient (p), their gradients
// (g) and their optimizer state tensors (a, b) at the same positions;
// collect gathers it, skipping parameters without a gradient.
struct Group {
  std::vector<at::Tensor> p, g, a, b;
};

Group collect(const kk_tensor *params, const kk_tensor *s1, const kk_tensor *s2, int n) {
  Group grp;
  for (int i = 0; i < n; i++) {
    const at::Tensor &p = T(params[i]);
    const at::Tensor &g = p.grad();
    if (!g.defined()) continue;
    if (g.is_sparse()) throw std::invalid_argument("sparse gradients are not supported");
    grp.p.push_back(p);
    grp.g.push_back(g);
    if (s1) grp.a.push_back(T(s1[i]));
    if (s2) grp.b.push_back(T(s2[i]));
  }
  return grp;
}

// adam_moments updates Adam's moments in place from the gradients:
// m = beta1 m + (1 - beta1) grad; v = beta2 v + (1 - beta2) grad^2.
void adam_moments(Group &g, const std::vector<at::Tensor> &grads, double beta1, double beta2) {
  at::_foreach_mul_(g.a, beta1);
  at::_foreach_add_(g.a, grads, 1 - beta1);
  at::_foreach_mul_(g.b, beta2);
  at::_foreach_addcmul_(g.b, grads, grads, 1 - beta2);
}
}  // namespace

extern "C" {

void kk_set_requires_grad(kk_tensor t, int on, char **err) {
  KK_TRY(T(t).set_requires_grad(on != 0);)
}

int kk_requires_grad(kk_tensor t, char **err) {
  KK_TRY(return T(t).requires_grad();)
  return 0;
}

void kk_backward(kk_tensor t, kk_tensor grad, int retain_graph, char **err) {
  KK_TRY(at::Tensor g = kk::Opt(grad);
         T(t).backward(g, retain_graph ? c10::optional<bool>(true) : c10::nullopt);)
}

void kk_grad(kk_tensor t, kk_tensor *out, char **err) {
  KK_TRY(const at::Tensor &g = T(t).grad(); *out = g.defined() ? kk::wrap(g) : nullptr;)
}

void kk_clear_grad(kk_tensor t, int set_to_none, char **err) {
  KK_TRY(at::Tensor &g = T(t).mutable_grad(); if (!g.defined()) return;
         if (set_to_none) {
           g.reset();
         } else {
           g.detach_();
           g.zero_();
         })
}

int kk_set_grad_enabled(int on) {
  bool prev = at::GradMode::is_enabled();
  at::GradMode::set_enabled(on != 0);
  return prev;
}

// Adam (decoupled = 0) and AdamW (decoupled = 1), as torch.optim does them,
// over whole lists at once with the _foreach kernels (one launch per list on
// CUDA). step counts from 1.
void kk_adam_step(const kk_tensor *params, const kk_tensor *exp_avg,
                  const kk_tensor *exp_avg_sq, int n, double lr, double beta1, double beta2,
                  double eps, double weight_decay, int decoupled, int64_t step, char **err) {
  KK_TRY(
      if (step < 1) throw std::invalid_argument("adam: step counts from 1");
      at::NoGradGuard no_grad; Group g = collect(params, exp_avg, exp_avg_sq, n);
      if (g.p.empty()) return;
      std::vector<at::Tensor> grads = g.g;
      if (weight_decay != 0) {
        if (decoupled)
          at::_foreach_mul_(g.p, 1 - lr * weight_decay);
        else
          grads = at::_foreach_add(g.g, g.p, weight_decay);
      }
      adam_moments(g, grads, beta1, beta2);
      double bc1 = 1 - std::pow(beta1, static_cast<double>(step));
      double bc2 = 1 - std::pow(beta2, static_cast<double>(step));
      // p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
      auto denom = at::_foreach_sqrt(g.b);
      at::_foreach_div_(denom, std::sqrt(bc2));
      at::_foreach_add_(denom, eps);
      at::_foreach_addcdiv_(g.p, g.a, denom, -lr / bc1);)
}

// kk_adam_step with the learning rate and the step count as 0-d tensors on
// the parameters' device, as torch.optim.Adam(capturable=True) keeps them:
// nothing here reads or writes the host, so a CUDA graph can capture it and
// a schedule changes lr by filling its tensor. step is incremented even when
// no parameter has a gradient, as the host's count is for kk_adam_step.
void kk_adam_step_t(const kk_tensor *params, const kk_tensor *exp_avg,
                    const kk_tensor *exp_avg_sq, int n, kk_tensor lr, kk_tensor step,
                    double beta1, double beta2, double eps, double weight_decay, int decoupled,
                    char **err) {
  KK_TRY(
      at::NoGradGuard no_grad; at::Tensor &st = kk::M(step); const at::Tensor &lr_t = T(lr);
      auto scalar_on = [](const at::Tensor &x, const at::Tensor *p) {
        if (x.dim() != 0 || !at::isFloatingType(x.scalar_type()))
          throw std::invalid_argument("adam: lr and step must be 0-d floating-point tensors");
        if (p && x.device() != p->device())
          throw std::invalid_argument("adam: lr and step are on " + x.device().str() +
                                      ", the parameters on " + p->device().str());
      };
      Group g = collect(params, exp_avg, exp_avg_sq, n);
      const at::Tensor *p0 = g.p.empty() ? nullptr : &g.p[0];
      scalar_on(st, p0); scalar_on(lr_t, p0);
      st.add_(1);
      if (g.p.empty()) return;
      std::vector<at::Tensor> grads = g.g;
      if (weight_decay != 0) {
        if (decoupled)
          kk::foreach_mul_(g.p, at::rsub(at::mul(lr_t, weight_decay), 1));
        else
          grads = at::_foreach_add(g.g, g.p, weight_decay);
      }
      adam_moments(g, grads, beta1, beta2);
      at::Tensor bc1 = at::rsub(at::pow(beta1, st), 1);
      at::Tensor bc2 = at::rsub(at::pow(beta2, st), 1);
      // p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps), with -lr/bc1 folded into
      // the denominator because addcdiv takes its factor only as a number.
      auto denom = at::_foreach_sqrt(g.b);
      kk::foreach_mul_(denom, at::rsqrt(bc2));
      at::_foreach_add_(denom, eps);
      kk::foreach_mul_(denom, at::div(bc1, lr_t).neg_());
      at::_foreach_addcdiv_(g.p, g.a, denom, 1);)
}

// SGD with momentum, dampening, weight decay and Nesterov, as torch.optim.SGD.
// first = 1 on the step that initialises the momentum buffers.
void kk_sgd_step(const kk_tensor *params, const kk_tensor *momentum_buf, int n, double lr,
                 double momentum, double dampening, double weight_decay, int nesterov,
                 int first, char **err) {
  KK_TRY(
      at::NoGradGuard no_grad;
      Group g = collect(params, momentum != 0 ? momentum_buf : nullptr, nullptr, n);
      if (g.p.empty()) return;
      std::vector<at::Tensor> d = g.g;
      if (weight_decay != 0) d = at::_foreach_add(g.g, g.p, weight_decay);
      if (momentum != 0) {
        if (first) {
          for (size_t i = 0; i < d.size(); i++) g.a[i].copy_(d[i]);
        } else {
          at::_foreach_mul_(g.a, momentum);
          at::_foreach_add_(g.a, d, 1 - dampening);
        }
        d = nesterov ? at::_foreach_add(d, g.a, momentum) : g.a;
      }
      at::_foreach_add_(g.p, d, -lr);)
}

// Scales every gradient so their joint L2 norm is at most max_norm; returns the
// norm before clipping, as torch.nn.utils.clip_grad_norm_ does.
double kk_clip_grad_norm(const kk_tensor *params, int n, double max_norm, char **err) {
  KK_TRY(
      at::NoGradGuard no_grad; Group g = collect(params, nullptr, nullptr, n);
      if (g.g.empty()) return 0.0;
      auto norms = at::_foreach_norm(g.g, 2);
      double total = at::stack(norms).norm(2).item<double>();
      kk::host_read();
      double coef = max_norm / (total + 1e-6);
      if (coef < 1) at::_foreach_mul_(g.g, coef);
      return total;)
  return 0.0;
}

// kk_clip_grad_norm as torch.nn.utils.clip_grad_norm_ does it since 1.13:
// the coefficient stays a tensor, clamped to 1 rather than tested on the
// host, so clipping never waits for the device.
void kk_clip_grad_norm_t(const kk_tensor *params, int n, double max_norm, kk_tensor *out,
                         char **err) {
  KK_TRY(
      at::NoGradGuard no_grad; Group g = collect(params, nullptr, nullptr, n);
      if (g.g.empty()) {
        *out = kk::wrap(n > 0 ? at::zeros({}, T(params[0]).options()) : at::zeros({}));
        return;
      }
      auto norms = at::_foreach_norm(g.g, 2);
      at::Tensor total = at::stack(norms).norm(2);
      // max_norm / (total + 1e-6) as Python's Tensor.__rtruediv__ computes it.
      at::Tensor coef = at::add(total, 1e-6).reciprocal_().mul_(max_norm).clamp_max_(1.0);
      kk::foreach_mul_(g.g, coef);
      *out = kk::wrap(total);)
}

}  // extern "C"
