/* kakusan.h: the flat C ABI of kakusan's libtorch shim.
 *
 * Rules every function follows:
 *   - tensors cross the boundary as opaque kk_tensor handles; each handle a
 *     function returns is new and must be released with kk_free;
 *   - the last parameter, char **err, receives a malloc'd message when the call
 *     fails (every C++ exception is caught); the caller frees it; on success it
 *     is left untouched (callers set it to NULL first);
 *   - calls other than the kk_* thread, version and counter queries must come
 *     from the thread that called kk_bind_thread, since libtorch keeps grad
 *     mode and other state per thread.
 *
 * Go binaries link only this ABI, so a binary built on one machine runs
 * against a shim built elsewhere against another libtorch. Bump KK_ABI_VERSION
 * whenever a signature or an enum below changes.
 */
#ifndef KAKUSAN_H
#define KAKUSAN_H
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
#pragma GCC visibility push(default)

#define KK_ABI_VERSION 11

typedef struct kk_tensor_s *kk_tensor;

/* Device types follow c10::DeviceType. */
enum { KK_CPU = 0, KK_CUDA = 1 };

/* Element-wise ops of one tensor. */
enum {
  KK_NEG, KK_EXP, KK_LOG, KK_SQRT, KK_RSQRT, KK_SIN, KK_COS, KK_ABS, KK_SQUARE,
  KK_RELU, KK_SILU, KK_GELU, KK_SIGMOID, KK_TANH, KK_SOFTPLUS, KK_LOG1P,
  KK_EXPM1, KK_FLOOR, KK_ROUND, KK_SIGN, KK_RECIPROCAL, KK_LOGICAL_NOT,
  KK_ISNAN, KK_ISFINITE, KK_LOGSIGMOID
};

/* Element-wise ops of two operands (tensor-tensor or tensor-scalar). */
enum {
  KK_ADD, KK_SUB, KK_MUL, KK_DIV, KK_POW, KK_MAXIMUM, KK_MINIMUM, KK_EQ, KK_NE,
  KK_LT, KK_LE, KK_GT, KK_GE, KK_LOGICAL_AND, KK_LOGICAL_OR, KK_REMAINDER,
  KK_RSUB, KK_RDIV
};

/* Reductions. */
enum {
  KK_SUM, KK_MEAN, KK_MAX, KK_MIN, KK_ARGMAX, KK_ARGMIN, KK_PROD, KK_LOGSUMEXP,
  KK_VAR, KK_STD, KK_NORM, KK_ALL, KK_ANY
};

/* Random and constant creation kinds for kk_like / kk_random. */
enum { KK_ZEROS, KK_ONES, KK_RAND, KK_RANDN, KK_EMPTY };

/* Index kinds for kk_index / kk_index_put_. A slice bound equal to
 * KK_SLICE_NONE means "open". */
enum { KK_IDX_INT, KK_IDX_SLICE, KK_IDX_ELLIPSIS, KK_IDX_NEWAXIS, KK_IDX_TENSOR };
#define KK_SLICE_NONE INT64_MIN

/* Loss reductions follow at::Reduction. */
enum { KK_REDUCE_NONE = 0, KK_REDUCE_MEAN = 1, KK_REDUCE_SUM = 2 };

/* ---- library, thread, memory ---- */
int kk_abi_version(void);
void kk_torch_version(char *buf, int n); /* e.g. "1.13.0" */
void kk_bind_thread(void);
int kk_on_thread(void);
int64_t kk_live_tensors(void);
void kk_free(kk_tensor t);
void kk_free_many(const kk_tensor *ts, int n);
void kk_set_num_threads(int n, char **err);
int kk_get_num_threads(void);
void kk_manual_seed(uint64_t seed, char **err);
int kk_cuda_available(void);
int kk_cuda_device_count(void);
void kk_cuda_synchronize(char **err);
void kk_rng_state(kk_tensor *out, char **err);
void kk_set_rng_state(kk_tensor state, char **err);
/* The state of CUDA device i's default generator (a CPU uint8 tensor, as
 * torch.cuda.get_rng_state gives); both fail on a shim without CUDA. */
void kk_cuda_rng_state(int device, kk_tensor *out, char **err);
void kk_set_cuda_rng_state(int device, kk_tensor state, char **err);
/* How many calls so far made the host read tensor values or wait for a
 * device: kk_item, kk_copy_data, kk_allclose, kk_clip_grad_norm,
 * kk_cuda_synchronize, and kk_to / kk_copy_ from a device to the CPU. Any
 * thread may ask. */
int64_t kk_host_reads(void);

/* ---- creation and data ---- */
void kk_from_data(const void *data, const int64_t *shape, int nd, int dtype,
                  int dev, int dev_index, kk_tensor *out, char **err);
void kk_copy_data(kk_tensor t, void *dst, int64_t nbytes, char **err);
void kk_full(const int64_t *shape, int nd, double value, int dtype, int dev,
             int dev_index, kk_tensor *out, char **err);
void kk_random(int kind, const int64_t *shape, int nd, int dtype, int dev,
               int dev_index, kk_tensor *out, char **err);
void kk_randint(int64_t low, int64_t high, const int64_t *shape, int nd,
                int dev, int dev_index, kk_tensor *out, char **err);
void kk_arange(double start, double end, double step, int dtype, int dev,
               int dev_index, kk_tensor *out, char **err);
void kk_linspace(double start, double end, int64_t steps, int dtype, int dev,
                 int dev_index, kk_tensor *out, char **err);
void kk_like(int kind, kk_tensor a, kk_tensor *out, char **err);
/* n rows of standard normals on the CPU, row i drawn from its own generator
 * seeded with seeds[i]: row i depends on seeds[i] alone, never on the batch. */
void kk_randn_rows(const uint64_t *seeds, int n, const int64_t *row_shape, int nd,
                   int dtype, kk_tensor *out, char **err);

/* ---- metadata and conversion ---- */
int kk_dim(kk_tensor t, char **err);
void kk_shape(kk_tensor t, int64_t *dims, char **err);
int kk_dtype(kk_tensor t, char **err);
void kk_device(kk_tensor t, int *dev, int *index, char **err);
double kk_item(kk_tensor t, char **err);
void kk_to(kk_tensor t, int dtype, int dev, int dev_index, int copy,
           kk_tensor *out, char **err);
void kk_contiguous(kk_tensor t, kk_tensor *out, char **err);
void kk_clone(kk_tensor t, kk_tensor *out, char **err);
void kk_detach(kk_tensor t, kk_tensor *out, char **err);
int kk_allclose(kk_tensor a, kk_tensor b, double rtol, double atol, char **err);

/* ---- element-wise ---- */
void kk_unary(int op, kk_tensor a, kk_tensor *out, char **err);
/* a = op(a) in place: KK_RELU and KK_SILU only. */
void kk_unary_(int op, kk_tensor a, char **err);
void kk_binary(int op, kk_tensor a, kk_tensor b, kk_tensor *out, char **err);
void kk_binary_scalar(int op, kk_tensor a, double s, kk_tensor *out, char **err);
void kk_clamp(kk_tensor a, double lo, double hi, int has_lo, int has_hi,
              kk_tensor *out, char **err);
void kk_where(kk_tensor cond, kk_tensor a, kk_tensor b, kk_tensor *out, char **err);
void kk_lerp(kk_tensor a, kk_tensor b, double w, kk_tensor *out, char **err);

/* In place; a is modified and no new handle is returned. */
void kk_add_(kk_tensor a, kk_tensor b, double alpha, char **err);
void kk_mul_scalar_(kk_tensor a, double s, char **err);
void kk_copy_(kk_tensor dst, kk_tensor src, char **err);
void kk_fill_(kk_tensor a, double v, char **err);
void kk_lerp_(kk_tensor a, kk_tensor b, double w, char **err);

/* ---- reductions: nd == 0 reduces over every dimension ---- */
void kk_reduce(int op, kk_tensor a, const int64_t *dims, int nd, int keepdim,
               double arg, kk_tensor *out, char **err);

/* ---- shape ---- */
void kk_reshape(kk_tensor a, const int64_t *shape, int nd, int view,
                kk_tensor *out, char **err);
void kk_permute(kk_tensor a, const int64_t *dims, int nd, kk_tensor *out, char **err);
void kk_flip(kk_tensor a, const int64_t *dims, int nd, kk_tensor *out, char **err);
void kk_transpose(kk_tensor a, int64_t d0, int64_t d1, kk_tensor *out, char **err);
void kk_squeeze(kk_tensor a, int64_t dim, int all, kk_tensor *out, char **err);
void kk_unsqueeze(kk_tensor a, int64_t dim, kk_tensor *out, char **err);
void kk_flatten(kk_tensor a, int64_t start, int64_t end, kk_tensor *out, char **err);
void kk_expand(kk_tensor a, const int64_t *shape, int nd, kk_tensor *out, char **err);
void kk_repeat(kk_tensor a, const int64_t *reps, int nd, kk_tensor *out, char **err);
void kk_narrow(kk_tensor a, int64_t dim, int64_t start, int64_t len,
               kk_tensor *out, char **err);
void kk_cat(const kk_tensor *ts, int n, int64_t dim, int stack, kk_tensor *out,
            char **err);
void kk_index_select(kk_tensor a, int64_t dim, kk_tensor idx, kk_tensor *out, char **err);
void kk_gather(kk_tensor a, int64_t dim, kk_tensor idx, kk_tensor *out, char **err);
void kk_index(kk_tensor a, int n, const int *kinds, const int64_t *ints,
              const kk_tensor *ts, kk_tensor *out, char **err);
void kk_index_put_(kk_tensor a, int n, const int *kinds, const int64_t *ints,
                   const kk_tensor *ts, kk_tensor values, char **err);
void kk_masked_fill(kk_tensor a, kk_tensor mask, double v, kk_tensor *out, char **err);
void kk_one_hot(kk_tensor idx, int64_t classes, kk_tensor *out, char **err);
/* The k-th smallest values along dim (k counts from 1). */
void kk_kthvalue(kk_tensor a, int64_t k, int64_t dim, int keepdim, kk_tensor *out, char **err);

/* ---- neural-network ops; a NULL handle is an absent optional tensor ---- */
void kk_matmul(kk_tensor a, kk_tensor b, kk_tensor *out, char **err);
void kk_linear(kk_tensor x, kk_tensor w, kk_tensor b, kk_tensor *out, char **err);
void kk_conv2d(kk_tensor x, kk_tensor w, kk_tensor b, const int64_t *stride,
               const int64_t *padding, const int64_t *dilation, int64_t groups,
               kk_tensor *out, char **err);
void kk_conv_transpose2d(kk_tensor x, kk_tensor w, kk_tensor b,
                         const int64_t *stride, const int64_t *padding,
                         const int64_t *output_padding, const int64_t *dilation,
                         int64_t groups, kk_tensor *out, char **err);
/* act(batch_norm(x)), act one of KK_ACT_*; in training on the CPU one fused
 * kernel each way (bnorm.cpp). */
void kk_batch_norm(kk_tensor x, kk_tensor w, kk_tensor b, kk_tensor running_mean,
                   kk_tensor running_var, int training, double momentum,
                   double eps, int act, kk_tensor *out, char **err);
/* Activations a batch or group normalisation may be fused with. */
enum { KK_ACT_NONE = 0, KK_ACT_RELU = 1, KK_ACT_SILU = 2 };
/* act(group_norm(x)), in x's dtype (computed in float32 or better when x is
 * bfloat16); w and b may be NULL (norm.cpp). With mul and add, both (N, C):
 * act(group_norm(x)·mul + add), FiLM's per-image modulation. */
void kk_group_norm(kk_tensor x, int64_t groups, kk_tensor w, kk_tensor b,
                   kk_tensor mul, kk_tensor add, double eps, int act,
                   kk_tensor *out, char **err);
void kk_layer_norm(kk_tensor x, const int64_t *shape, int nd, kk_tensor w,
                   kk_tensor b, double eps, kk_tensor *out, char **err);
void kk_pool2d(int avg, kk_tensor x, const int64_t *kernel, const int64_t *stride,
               const int64_t *padding, kk_tensor *out, char **err);
void kk_upsample2d(int bilinear, kk_tensor x, int64_t out_h, int64_t out_w,
                   int align_corners, kk_tensor *out, char **err);
/* cat([upsample_bilinear(x, skip's H×W), skip], 1) + bias[:, :, None, None]
 * (align_corners=False; bias (N, C_x + C_skip) may be NULL) (upsample.cpp). */
void kk_upsample_cat(kk_tensor x, kk_tensor skip, kk_tensor bias, kk_tensor *out,
                     char **err);
void kk_embedding(kk_tensor w, kk_tensor idx, kk_tensor *out, char **err);
void kk_dropout(kk_tensor x, double p, int train, kk_tensor *out, char **err);
void kk_softmax(kk_tensor x, int64_t dim, int log, kk_tensor *out, char **err);
void kk_mse_loss(kk_tensor a, kk_tensor b, int reduction, kk_tensor *out, char **err);
void kk_bce_loss(kk_tensor p, kk_tensor y, int logits, int reduction,
                 kk_tensor *out, char **err);
void kk_cross_entropy(kk_tensor logits, kk_tensor target, int reduction,
                      double label_smoothing, kk_tensor *out, char **err);
void kk_sdpa(kk_tensor q, kk_tensor k, kk_tensor v, kk_tensor mask, int causal,
             kk_tensor *out, char **err);

/* ---- autograd ---- */
void kk_set_requires_grad(kk_tensor t, int on, char **err);
int kk_requires_grad(kk_tensor t, char **err);
void kk_backward(kk_tensor t, kk_tensor grad, int retain_graph, char **err);
/* *out is NULL when t has no gradient. */
void kk_grad(kk_tensor t, kk_tensor *out, char **err);
void kk_clear_grad(kk_tensor t, int set_to_none, char **err);
int kk_set_grad_enabled(int on); /* returns the previous mode */

/* ---- optimizers over lists of parameters (state tensors owned by caller) ---- */
void kk_adam_step(const kk_tensor *params, const kk_tensor *exp_avg,
                  const kk_tensor *exp_avg_sq, int n, double lr, double beta1,
                  double beta2, double eps, double weight_decay, int decoupled,
                  int64_t step, char **err);
void kk_sgd_step(const kk_tensor *params, const kk_tensor *momentum_buf, int n,
                 double lr, double momentum, double dampening,
                 double weight_decay, int nesterov, int first, char **err);
double kk_clip_grad_norm(const kk_tensor *params, int n, double max_norm, char **err);
/* Adam with the learning rate and the step count as 0-d floating tensors on
 * the parameters' device: step is incremented in place and the bias
 * corrections are computed there, so the host neither reads nor writes
 * anything (CUDA graph capture). Otherwise the update of kk_adam_step. */
void kk_adam_step_t(const kk_tensor *params, const kk_tensor *exp_avg,
                    const kk_tensor *exp_avg_sq, int n, kk_tensor lr, kk_tensor step,
                    double beta1, double beta2, double eps, double weight_decay,
                    int decoupled, char **err);
/* kk_clip_grad_norm with no host read: *out is the norm as a 0-d tensor on
 * the gradients' device and the scale clamp(max_norm/(norm+1e-6), max=1) is
 * applied there. */
void kk_clip_grad_norm_t(const kk_tensor *params, int n, double max_norm,
                         kk_tensor *out, char **err);

/* ---- precision and memory format ----
 * Autocast is per thread and per device type (KK_CPU, KK_CUDA), as
 * torch.autocast: kk_autocast_push enables it with dtype (a reduced floating
 * type: bfloat16, or float16 on CUDA), or with float32 turns it off as
 * torch.autocast(enabled=False) does, and returns the state it replaced;
 * kk_autocast_pop restores that state, clearing the cache of cast weights
 * when the outermost region ends. */
void kk_autocast_push(int dev, int dtype, int *prev_on, int *prev_dtype, char **err);
void kk_autocast_pop(int dev, int prev_on, int prev_dtype, char **err);
/* Turns autocast's cache of cast weights on or off (off under CUDA graph
 * capture, as PyTorch requires); returns the previous setting. */
int kk_autocast_cache(int on);
/* Process-wide CUDA switches, as torch.backends: TF32 in cuBLAS and cuDNN
 * matrix products and convolutions, and cuDNN's per-shape algorithm search.
 * Each returns the previous setting (harmless without CUDA). */
int kk_set_tf32(int on);
/* Tunes glibc's malloc for tensor-sized blocks (any thread may call it):
 * blocks up to mmap_threshold bytes come from the heap, and up to
 * trim_threshold bytes of freed memory stay mapped for reuse, instead of
 * glibc's default of a fresh mmap (and a page fault per 4 KiB) for most
 * activations. Returns 0 when glibc refused a value. */
int kk_tune_malloc(int64_t mmap_threshold, int64_t trim_threshold);
/* Returns the free memory of malloc's heaps to the system (glibc's
 * malloc_trim(0)); 1 when some was. */
int kk_malloc_trim(void);
int kk_set_cudnn_benchmark(int on);
/* Memory formats follow at::MemoryFormat's order of the two used here. */
enum { KK_CONTIGUOUS_FORMAT = 0, KK_CHANNELS_LAST = 1 };
void kk_contiguous_as(kk_tensor t, int format, kk_tensor *out, char **err);
int kk_is_contiguous_as(kk_tensor t, int format, char **err);
/* Re-lays t's storage out in format in place, keeping the handle, its
 * autograd identity and requires_grad (a parameter stays the parameter). */
void kk_set_memory_format_(kk_tensor t, int format, char **err);
/* A copy of a CPU tensor in page-locked memory, for asynchronous copies to
 * CUDA; kk_to_async copies without waiting when the source is pinned. */
void kk_pin_memory(kk_tensor t, kk_tensor *out, char **err);
void kk_to_async(kk_tensor t, int dev, int dev_index, kk_tensor *out, char **err);

/* ---- CUDA graphs ----
 * kk_graph_begin starts capturing the calling thread's CUDA work on device
 * dev_index on a side stream (random numbers come from the default
 * generator, registered with the graph so that each replay draws anew);
 * kk_graph_end ends it; kk_graph_replay launches the whole graph on the
 * current stream. Tensors made during capture keep their memory for the
 * replays. Without a CUDA build every call fails and
 * kk_cuda_graphs_available is 0. */
typedef struct kk_graph_s *kk_graph;
int kk_cuda_graphs_available(void);
/* What this shim was compiled with, as KK_BUILT_* bits (whatever the
 * machine it runs on has): a CUDA libtorch, CUDA graphs, NCCL, Gloo. */
#define KK_BUILT_CUDA 1
#define KK_BUILT_CUDA_GRAPHS 2
#define KK_BUILT_NCCL 4
#define KK_BUILT_GLOO 8
int kk_built_with(void);
void kk_graph_begin(int dev_index, kk_graph *out, char **err);
void kk_graph_end(kk_graph g, char **err);
void kk_graph_replay(kk_graph g, char **err);
void kk_graph_free(kk_graph g);

/* ---- data parallelism on c10d ----
 * A process group as torch.distributed.init_process_group makes it: a
 * TCPStore at host:port (served by rank 0 when serve is set, else by the
 * launcher), keys under prefix, every rank joining within timeout_ms; the
 * group (backend "gloo" or "nccl"; device is the CUDA index for NCCL) fails
 * any collective that a peer leaves unfinished past timeout_ms. */
typedef struct kk_dist_s *kk_dist;
int kk_dist_has_backend(const char *backend);
void kk_dist_new(const char *backend, const char *host, int port, int serve, const char *prefix,
                 int rank, int world, int64_t timeout_ms, int device, kk_dist *out, char **err);
void kk_dist_free(kk_dist d);
/* Average tensors in place over the group, in flattened buckets of at most
 * bucket_bytes (<= 0: 25 MiB). */
void kk_dist_allreduce_mean(kk_dist d, const kk_tensor *ts, int n, int64_t bucket_bytes, char **err);
void kk_dist_broadcast(kk_dist d, const kk_tensor *ts, int n, int root, char **err);
void kk_dist_barrier(kk_dist d, char **err);
/* A model's gradient all-reduce overlapped with the backward pass
 * (DistributedDataParallel's Reducer): hooks on the parameters' gradient
 * accumulators launch each bucket's all-reduce as the backward pass
 * completes it; kk_ddp_finish, after the pass, launches the rest, waits,
 * and leaves the averaged gradients in .grad (early: the buckets launched
 * during the pass; buckets: all of them). kk_ddp_free removes the hooks. */
typedef struct kk_ddp_s *kk_ddp;
void kk_ddp_new(kk_dist d, const kk_tensor *params, int n, int64_t bucket_bytes, kk_ddp *out,
                char **err);
void kk_ddp_finish(kk_ddp r, int64_t *early, int64_t *buckets, char **err);
/* kk_ddp_pause(r, 1) makes the hooks do nothing, so backward passes only
 * accumulate gradients (DDP's no_sync, for the micro-batches of gradient
 * accumulation before the last); kk_ddp_pause(r, 0) arms them again. */
void kk_ddp_pause(kk_ddp r, int paused, char **err);
void kk_ddp_free(kk_ddp r);
/* Batch norm in training with the group's batch statistics
 * (torch.nn.SyncBatchNorm): w, b, running_mean, running_var required. */
void kk_sync_batch_norm(kk_dist d, kk_tensor x, kk_tensor w, kk_tensor b, kk_tensor running_mean,
                        kk_tensor running_var, double momentum, double eps, kk_tensor *out,
                        char **err);

/* ---- a peer for per-op overhead: runs a + b n times in a C++ loop ---- */
void kk_bench_add_loop(kk_tensor a, kk_tensor b, int64_t n, char **err);

#pragma GCC visibility pop
#ifdef __cplusplus
}
#endif
#endif
