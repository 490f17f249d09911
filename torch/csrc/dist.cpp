// dist.cpp: data-parallel collectives on PyTorch's own engine, c10d: a
// TCPStore rendezvous and a process group (Gloo on the CPU, NCCL on CUDA),
// as torch.distributed.init_process_group makes them.
//
// Gloo and NCCL are compiled in when the build finds their headers
// (scripts/build_shim.sh defines USE_C10D_GLOO / USE_C10D_NCCL, the macros
// libtorch's own headers test); a shim without one says so when asked for it.
#include <chrono>
#include <cstdlib>
#include <memory>

#include <mutex>

#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "internal.h"

using kk::T;

// kk_dist_s is a process group behind the C ABI. The group classes differ
// between libtorch 1.13 (ProcessGroup) and 2.x (Backend) but share the
// collectives' signatures, so Group<PG> below holds whichever class it is.
struct kk_dist_s {
  virtual ~kk_dist_s() = default;
  virtual c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor> &ts) = 0;
  virtual c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor> &ts, int root) = 0;
  virtual c10::intrusive_ptr<c10d::Work> barrier() = 0;
  std::string backend;
  int rank = 0, world = 1;
  c10::intrusive_ptr<c10d::Store> store;
};

namespace {

template <class PG>
struct Group : kk_dist_s {
  c10::intrusive_ptr<PG> pg;
  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor> &ts) override {
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    return pg->allreduce(ts, o);
  }
  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor> &ts, int root) override {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.rootTensor = 0;
    return pg->broadcast(ts, o);
  }
  c10::intrusive_ptr<c10d::Work> barrier() override { return pg->barrier(c10d::BarrierOptions()); }
};

// wait waits for a collective and turns its failure (a peer gone, the
// group's timeout passed) into an exception naming the collective.
void wait(const c10::intrusive_ptr<c10d::Work> &w, const char *what) {
  try {
    w->wait();
  } catch (const c10::Error &e) {
    throw std::runtime_error(std::string(what) + ": " + e.what_without_backtrace());
  } catch (const std::exception &e) {
    throw std::runtime_error(std::string(what) + ": " + e.what());
  }
}

// bucketize splits the indices of ts into buckets of one dtype and device,
// in order (reversed when reverse is set), the first of at most first_cap
// bytes and the others of at most cap (a tensor larger than that is a
// bucket alone).
std::vector<std::vector<size_t>> bucketize(const std::vector<at::Tensor> &ts, bool reverse,
                                           int64_t first_cap, int64_t cap) {
  std::vector<std::vector<size_t>> out;
  int64_t bytes = 0, limit = first_cap;
  for (size_t k = 0; k < ts.size(); k++) {
    size_t i = reverse ? ts.size() - 1 - k : k;
    const at::Tensor &t = ts[i];
    int64_t b = t.numel() * static_cast<int64_t>(t.element_size());
    bool fresh = out.empty() || bytes + b > limit ||
                 ts[out.back()[0]].scalar_type() != t.scalar_type() ||
                 ts[out.back()[0]].device() != t.device();
    if (fresh) {
      if (!out.empty()) limit = cap;
      out.emplace_back();
      bytes = 0;
    }
    out.back().push_back(i);
    bytes += b;
  }
  return out;
}

// pick is the tensors of ts a bucket names.
std::vector<at::Tensor> pick(const std::vector<at::Tensor> &ts, const std::vector<size_t> &bucket) {
  std::vector<at::Tensor> out;
  for (size_t i : bucket) out.push_back(ts[i]);
  return out;
}

// flatten is a bucket's tensors as one buffer; unflatten copies a buffer
// back into them.
at::Tensor flatten(const std::vector<at::Tensor> &parts) {
  std::vector<at::Tensor> flat;
  for (const auto &t : parts) flat.push_back(t.reshape({-1}));
  return at::cat(flat);
}

void unflatten(const at::Tensor &flat, const std::vector<at::Tensor> &parts) {
  int64_t off = 0;
  for (const auto &t : parts) {
    int64_t k = t.numel();
    t.copy_(flat.narrow(0, off, k).view(t.sizes()));
    off += k;
  }
}

constexpr int64_t kBucketBytes = 25 << 20;     // DDP's bucket_cap_mb
constexpr int64_t kFirstBucketBytes = 1 << 20;  // DDP's first_bucket_bytes_cap

// allreduce_sum sums t over the group in place and waits.
void allreduce_sum(kk_dist_s *d, at::Tensor &t, const char *what) {
  std::vector<at::Tensor> one{t};
  wait(d->allreduce(one), what);
}

// SyncBatchNorm is batch normalisation whose statistics are the whole
// group's batch, as torch.nn.SyncBatchNorm computes them: the forward pass
// all-reduces each channel's sum, sum of squares and count; the backward
// pass all-reduces the sums of dy and dy·x̂, so each rank's input gradient
// is its share of the one-batch gradient (the parameters' gradients stay
// local: the training step averages them with the rest). Statistics are
// reduced in float64; every rank's batch has the same shape.
struct SyncBatchNorm : public torch::autograd::Function<SyncBatchNorm> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, at::Tensor x, at::Tensor w,
                            at::Tensor b, at::Tensor rm, at::Tensor rv, double momentum,
                            double eps, int64_t group) {
    auto *d = reinterpret_cast<kk_dist_s *>(group);
    at::Tensor xf = x.to(w.scalar_type());
    std::vector<int64_t> dims{0, 2, 3};
    int64_t c = x.size(1);
    at::Tensor xd = xf.to(at::kDouble);
    at::Tensor stats = at::cat({xd.sum(dims), xd.square().sum(dims)});
    allreduce_sum(d, stats, "SyncBatchNorm statistics");
    // Every rank normalises a batch of the same shape (the loader's), so the
    // count needs no all-reduce and no read from the device.
    double count = static_cast<double>(x.numel() / c) * d->world;
    if (count < 2) throw std::invalid_argument("SyncBatchNorm: fewer than 2 values per channel over the group");
    at::Tensor mean = stats.narrow(0, 0, c) / count;
    at::Tensor var = (stats.narrow(0, c, c) / count - mean.square()).clamp_min(0);
    at::Tensor invstd = (var + eps).rsqrt();
    {
      at::NoGradGuard ng;
      rm.mul_(1 - momentum).add_(mean.to(rm.scalar_type()), momentum);
      rv.mul_(1 - momentum).add_((var * (count / (count - 1))).to(rv.scalar_type()), momentum);
    }
    at::Tensor m4 = mean.to(xf.scalar_type()).view({1, c, 1, 1});
    at::Tensor s4 = invstd.to(xf.scalar_type()).view({1, c, 1, 1});
    at::Tensor xhat = (xf - m4) * s4;
    ctx->save_for_backward({xhat, w, s4});
    ctx->saved_data["count"] = count;
    ctx->saved_data["group"] = group;
    ctx->saved_data["dtype"] = static_cast<int64_t>(x.scalar_type());
    return xhat * w.view({1, c, 1, 1}) + b.view({1, c, 1, 1});
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    at::Tensor xhat = saved[0], w = saved[1], s4 = saved[2];
    auto *d = reinterpret_cast<kk_dist_s *>(ctx->saved_data["group"].toInt());
    double count = ctx->saved_data["count"].toDouble();
    int64_t c = xhat.size(1);
    std::vector<int64_t> dims{0, 2, 3};
    at::Tensor dy = grads[0].to(xhat.scalar_type());
    at::Tensor sum_dy = dy.sum(dims), sum_dy_xhat = (dy * xhat).sum(dims);
    at::Tensor both = at::cat({sum_dy, sum_dy_xhat}).to(at::kDouble);
    allreduce_sum(d, both, "SyncBatchNorm gradients");
    at::Tensor mean_dy = (both.narrow(0, 0, c) / count).to(dy.scalar_type()).view({1, c, 1, 1});
    at::Tensor mean_dy_xhat = (both.narrow(0, c, c) / count).to(dy.scalar_type()).view({1, c, 1, 1});
    at::Tensor dx = (dy - mean_dy - xhat * mean_dy_xhat) * (s4 * w.view({1, c, 1, 1}));
    dx = dx.to(static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt()));
    return {dx, sum_dy_xhat, sum_dy, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

// kk_ddp_s all-reduces a model's gradients in buckets while the backward
// pass is still running, as DistributedDataParallel's Reducer does: a hook
// on each parameter's gradient accumulator counts the bucket's gradients
// down, and the bucket that completes is flattened and its all-reduce
// launched there and then; finish() launches what the pass left (unused
// parameters: zeros), waits for every bucket, averages and copies the
// results back into the gradients. Buckets take the parameters in reverse
// (the order the backward pass produces their gradients), the first at most
// 1 MiB (DDP's first_bucket_bytes_cap), the others bucket_bytes.
struct kk_ddp_s {
  kk_dist_s *d = nullptr;
  std::vector<at::Tensor> params;
  std::vector<std::vector<size_t>> buckets;
  std::vector<size_t> bucket_of, pending;
  std::vector<at::Tensor> flat;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  std::vector<std::shared_ptr<torch::autograd::Node>> accs;
  std::vector<uintptr_t> keys;
  std::mutex mu;
  size_t next = 0;    // the first bucket not launched yet: buckets launch in order
  int64_t early = 0;  // buckets launched by the hooks since the last finish
  bool paused = false;  // kk_ddp_pause: the hooks do nothing

  ~kk_ddp_s() {
    for (size_t i = 0; i < accs.size(); i++) accs[i]->del_post_hook(keys[i]);
  }

  // grads are bucket b's gradients, zeros for a parameter without one (it
  // takes part all the same, so every rank reduces the same buffers).
  std::vector<at::Tensor> grads(size_t b) {
    std::vector<at::Tensor> out;
    for (size_t i : buckets[b]) {
      at::Tensor &g = params[i].mutable_grad();
      if (!g.defined()) g = at::zeros_like(params[i]);
      out.push_back(g);
    }
    return out;
  }

  // launch_next flattens the next bucket's gradients and starts its
  // all-reduce; mu held.
  void launch_next() {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> one{flatten(grads(next))};
    works[next] = d->allreduce(one);
    flat[next] = one[0];
    next++;
  }

  // ready is parameter i's hook: its gradient is accumulated. Complete
  // buckets launch in bucket order, as DDP's do, so that every rank issues
  // its collectives in the same order whatever order its hooks ran in.
  void ready(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    if (paused) return;
    size_t b = bucket_of[i];
    if (pending[b] > 0) pending[b]--;
    while (next < buckets.size() && pending[next] == 0) {
      launch_next();
      early++;
    }
  }

  // reset arms the hooks for the next backward pass.
  void reset() {
    std::lock_guard<std::mutex> lock(mu);
    next = 0;
    early = 0;
    for (size_t b = 0; b < buckets.size(); b++) {
      pending[b] = buckets[b].size();
      works[b].reset();
      flat[b] = at::Tensor();
    }
  }

  int64_t finish() {
    int64_t e;
    try {
      {
        std::lock_guard<std::mutex> lock(mu);
        e = early;
        while (next < buckets.size()) launch_next();
      }
      for (size_t b = 0; b < buckets.size(); b++) {
        wait(works[b], "all-reduce");
        unflatten(flat[b].div_(d->world), grads(b));
      }
    } catch (...) {
      reset();
      throw;
    }
    reset();
    return e;
  }
};

int kk::dist_built_with() {
  int bits = 0;
#ifdef USE_C10D_GLOO
  bits |= KK_BUILT_GLOO;
#endif
#ifdef USE_C10D_NCCL
  bits |= KK_BUILT_NCCL;
#endif
  return bits;
}

extern "C" {

int kk_dist_has_backend(const char *backend) {
  std::string b = backend ? backend : "";
#ifdef USE_C10D_GLOO
  if (b == "gloo") return 1;
#endif
#ifdef USE_C10D_NCCL
  if (b == "nccl") return 1;
#endif
  return 0;
}

void kk_dist_new(const char *backend, const char *host, int port, int serve, const char *prefix,
                 int rank, int world, int64_t timeout_ms, int device, kk_dist *out, char **err) {
  KK_TRY(
      std::string b = backend ? backend : "";
      if (world < 1 || rank < 0 || rank >= world)
        throw std::invalid_argument("rank " + std::to_string(rank) + " of world size " +
                                    std::to_string(world) + ": want 0 <= rank < world size");
      if (port < 1 || port > 65535)
        throw std::invalid_argument("port " + std::to_string(port) + ": want 1-65535");
      if (timeout_ms < 1) throw std::invalid_argument("timeout must be positive");
      auto timeout = std::chrono::milliseconds(timeout_ms);

      // Rank 0 serves the store unless a launcher's agent already does
      // (torchrun's TORCHELASTIC_USE_AGENT_STORE); every rank is a client,
      // and a serving rank waits for all of them within the timeout.
      c10d::TCPStoreOptions so;
      so.port = static_cast<std::uint16_t>(port);
      so.isServer = serve && rank == 0;
      so.numWorkers = static_cast<std::size_t>(world);
      so.waitWorkers = true;
      so.timeout = timeout;
      c10::intrusive_ptr<c10d::TCPStore> tcp;
      try {
        tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host ? host : ""), so);
      } catch (const c10::Error &e) {
        // libtorch 2.4 serves the store on libuv by default; a libtorch
        // built without it (Debian's) refuses, and its classic server does
        // the same job (clients speak to either).
#if TORCH_AT_LEAST(2, 4)
        if (!so.useLibUV || std::string(e.what()).find("libuv") == std::string::npos) throw;
        so.useLibUV = false;
        tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host ? host : ""), so);
#else
        throw;
#endif
      }
      // The group's keys live under prefix, so a restarted attempt or another
      // tenant of the agent's store never reads stale ones.
      auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix ? prefix : "kakusan"), tcp);

      std::unique_ptr<kk_dist_s> d;
      if (b == "gloo") {
#ifdef USE_C10D_GLOO
        auto o = c10d::ProcessGroupGloo::Options::create(timeout);
        // GLOO_SOCKET_IFNAME picks the interfaces, as in PyTorch.
        const char *ifs = std::getenv("GLOO_SOCKET_IFNAME");
        if (ifs && *ifs) {
          std::string s(ifs);
          size_t start = 0;
          while (start <= s.size()) {
            size_t end = s.find(',', start);
            if (end == std::string::npos) end = s.size();
            if (end > start)
              o->devices.push_back(
                  c10d::ProcessGroupGloo::createDeviceForInterface(s.substr(start, end - start)));
            start = end + 1;
          }
        } else {
          o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
        }
        auto g = std::make_unique<Group<c10d::ProcessGroupGloo>>();
        g->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, o);
        d = std::move(g);
#else
        throw std::runtime_error("this shim was built without Gloo (no gloo headers at build time)");
#endif
      } else if (b == "nccl") {
#ifdef USE_C10D_NCCL
        auto o = c10d::ProcessGroupNCCL::Options::create();
        o->timeout = timeout;
        c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
        auto g = std::make_unique<Group<c10d::ProcessGroupNCCL>>();
        g->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, o);
        d = std::move(g);
#else
        (void)device;
        throw std::runtime_error("this shim was built without NCCL (a CPU libtorch, or no nccl.h at build time)");
#endif
      } else {
        throw std::invalid_argument("unknown backend \"" + b + "\": want gloo or nccl");
      }
      d->backend = b;
      d->rank = rank;
      d->world = world;
      d->store = tcp;
      *out = d.release();)
}

void kk_dist_free(kk_dist d) { delete d; }

/* Average tensors in place over the group: each bucket of at most
 * bucket_bytes is flattened into one buffer and all-reduced, every bucket
 * launched before the first is waited for. */
void kk_dist_allreduce_mean(kk_dist d, const kk_tensor *ts, int n, int64_t bucket_bytes, char **err) {
  KK_TRY(
      if (!d) throw std::invalid_argument("nil process group");
      at::NoGradGuard no_grad;
      auto v = kk::list(ts, n);
      int64_t cap = bucket_bytes > 0 ? bucket_bytes : kBucketBytes;
      auto bs = bucketize(v, false, cap, cap);
      std::vector<at::Tensor> flat(bs.size());
      std::vector<c10::intrusive_ptr<c10d::Work>> works(bs.size());
      for (size_t b = 0; b < bs.size(); b++) {
        std::vector<at::Tensor> one{flatten(pick(v, bs[b]))};
        works[b] = d->allreduce(one);
        flat[b] = one[0];
      }
      for (size_t b = 0; b < bs.size(); b++) {
        wait(works[b], "all-reduce");
        unflatten(flat[b].div_(d->world), pick(v, bs[b]));
      })
}

/* Overwrite tensors with root's, in buckets as above. */
void kk_dist_broadcast(kk_dist d, const kk_tensor *ts, int n, int root, char **err) {
  KK_TRY(
      if (!d) throw std::invalid_argument("nil process group");
      if (root < 0 || root >= d->world) throw std::invalid_argument("broadcast root out of range");
      at::NoGradGuard no_grad;
      auto v = kk::list(ts, n);
      for (auto &b : bucketize(v, false, kBucketBytes, kBucketBytes)) {
        auto parts = pick(v, b);
        std::vector<at::Tensor> one{flatten(parts)};
        wait(d->broadcast(one, root), "broadcast");
        unflatten(one[0], parts);
      })
}

void kk_sync_batch_norm(kk_dist d, kk_tensor x, kk_tensor w, kk_tensor b, kk_tensor running_mean,
                        kk_tensor running_var, double momentum, double eps, kk_tensor *out,
                        char **err) {
  KK_TRY(if (!d) throw std::invalid_argument("nil process group");
         if (T(x).dim() != 4) throw std::invalid_argument("SyncBatchNorm: want (N, C, H, W) input");
         *out = kk::wrap(SyncBatchNorm::apply(T(x), T(w), T(b), T(running_mean), T(running_var), momentum,
                                              eps, reinterpret_cast<int64_t>(d)));)
}

void kk_ddp_new(kk_dist d, const kk_tensor *params, int n, int64_t bucket_bytes, kk_ddp *out,
                char **err) {
  KK_TRY(
      if (!d) throw std::invalid_argument("nil process group");
      auto r = std::make_unique<kk_ddp_s>();
      r->d = d;
      r->params = kk::list(params, n);
      for (int i = 0; i < n; i++)
        if (!r->params[i].requires_grad() || !r->params[i].is_leaf())
          throw std::invalid_argument("parameter " + std::to_string(i) + " is not a leaf requiring gradients");
      r->buckets = bucketize(r->params, true, kFirstBucketBytes, bucket_bytes > 0 ? bucket_bytes : kBucketBytes);
      r->bucket_of.resize(n);
      for (size_t b = 0; b < r->buckets.size(); b++) {
        r->pending.push_back(r->buckets[b].size());
        for (size_t i : r->buckets[b]) r->bucket_of[i] = b;
      }
      r->flat.resize(r->buckets.size());
      r->works.resize(r->buckets.size());
      kk_ddp_s *self = r.get();
      for (int i = 0; i < n; i++) {
        auto acc = torch::autograd::impl::grad_accumulator(r->params[i]);
        if (!acc) throw std::runtime_error("parameter " + std::to_string(i) + " has no gradient accumulator");
        size_t idx = static_cast<size_t>(i);
        r->keys.push_back(acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
            [self, idx](const torch::autograd::variable_list &outputs,
                        const torch::autograd::variable_list &) {
              self->ready(idx);
              return outputs;
            })));
        r->accs.push_back(std::move(acc));
      }
      *out = r.release();)
}

void kk_ddp_finish(kk_ddp r, int64_t *early, int64_t *buckets, char **err) {
  KK_TRY(if (!r) throw std::invalid_argument("nil reducer");
         *buckets = static_cast<int64_t>(r->buckets.size()); *early = r->finish();)
}

void kk_ddp_pause(kk_ddp r, int paused, char **err) {
  KK_TRY(if (!r) throw std::invalid_argument("nil reducer");
         std::lock_guard<std::mutex> lock(r->mu); r->paused = paused != 0;)
}

void kk_ddp_free(kk_ddp r) { delete r; }

void kk_dist_barrier(kk_dist d, char **err) {
  KK_TRY(if (!d) throw std::invalid_argument("nil process group");
         wait(d->barrier(), "barrier");)
}

}  // extern "C"
