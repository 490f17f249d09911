// core.cpp: handles, threads, seeds, devices, creation and data transfer.
#include <torch/cuda.h>
#include <torch/utils.h>
#include <ATen/CPUGeneratorImpl.h>

#include "internal.h"

namespace kk {
std::atomic<int64_t> live{0};
std::atomic<int64_t> host_reads{0};
thread_local bool bound = false;
}  // namespace kk

using kk::T;

namespace {
// cuda_generator is device i's default CUDA generator. It goes through
// libtorch's CUDA hooks, as torch::cuda::is_available does, so a shim built
// against a CPU-only libtorch links and reports the missing CUDA as an error
// (at::cuda::detail::getDefaultCUDAGenerator behind the hooks exists only in
// libtorch_cuda).
at::Generator cuda_generator(int device) {
  if (!torch::cuda::is_available())
    throw std::runtime_error(
        "CUDA generator state: CUDA is not available (the shim was built against a "
        "CPU-only libtorch, or no GPU is visible)");
  int n = static_cast<int>(torch::cuda::device_count());
  if (device < 0 || device >= n)
    throw std::invalid_argument("CUDA generator state: no device cuda:" + std::to_string(device) +
                                " (" + std::to_string(n) + " visible)");
  return at::globalContext().defaultGenerator(
      at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device)));
}
}  // namespace

extern "C" {

int kk_abi_version(void) { return KK_ABI_VERSION; }

void kk_torch_version(char *buf, int n) {
  snprintf(buf, n, "%d.%d.%d", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR,
           TORCH_VERSION_PATCH);
}

void kk_bind_thread(void) { kk::bound = true; }
int kk_on_thread(void) { return kk::bound; }
int64_t kk_live_tensors(void) { return kk::live.load(); }
int64_t kk_host_reads(void) { return kk::host_reads.load(); }

void kk_free(kk_tensor t) {
  if (!t) return;
  delete t;
  kk::live.fetch_sub(1, std::memory_order_relaxed);
}

void kk_free_many(const kk_tensor *ts, int n) {
  for (int i = 0; i < n; i++) kk_free(ts[i]);
}

void kk_set_num_threads(int n, char **err) {
  KK_TRY(if (n < 1) throw std::invalid_argument("threads must be at least 1");
         at::set_num_threads(n);)
}

int kk_get_num_threads(void) { return at::get_num_threads(); }

void kk_manual_seed(uint64_t seed, char **err) { KK_TRY(torch::manual_seed(seed);) }

int kk_cuda_available(void) {
  try { return torch::cuda::is_available(); } catch (...) { return 0; }
}

int kk_cuda_device_count(void) {
  try { return static_cast<int>(torch::cuda::device_count()); } catch (...) { return 0; }
}

void kk_cuda_synchronize(char **err) { KK_TRY(torch::cuda::synchronize(); kk::host_read();) }

void kk_rng_state(kk_tensor *out, char **err) {
  KK_OUT(at::detail::getDefaultCPUGenerator().get_state())
}

void kk_set_rng_state(kk_tensor state, char **err) {
  KK_TRY(auto gen = at::detail::getDefaultCPUGenerator();
         std::lock_guard<std::mutex> lock(gen.mutex());
         gen.set_state(T(state));)
}

// The generator's mutex is held as torch.cuda.get_rng_state/set_rng_state
// hold it: the state is the seed and the Philox offset, read and written
// together.
void kk_cuda_rng_state(int device, kk_tensor *out, char **err) {
  KK_TRY(auto gen = cuda_generator(device);
         std::lock_guard<std::mutex> lock(gen.mutex());
         *out = kk::wrap(gen.get_state());)
}

void kk_set_cuda_rng_state(int device, kk_tensor state, char **err) {
  KK_TRY(const at::Tensor &s = T(state); auto gen = cuda_generator(device);
         std::lock_guard<std::mutex> lock(gen.mutex());
         gen.set_state(s);)
}

void kk_from_data(const void *data, const int64_t *shape, int nd, int dtype,
                  int dev, int dev_index, kk_tensor *out, char **err) {
  KK_OUT(at::from_blob(const_cast<void *>(data), kk::dims(shape, nd),
                       at::TensorOptions().dtype(kk::dtype(dtype)))
             .to(kk::device(dev, dev_index), /*non_blocking=*/false, /*copy=*/true))
}

void kk_copy_data(kk_tensor t, void *dst, int64_t nbytes, char **err) {
  KK_TRY(at::Tensor c = T(t).detach().to(at::kCPU).contiguous();
         int64_t have = c.numel() * static_cast<int64_t>(c.element_size());
         if (have != nbytes)
           throw std::invalid_argument("copy_data: tensor holds " + std::to_string(have) +
                                       " bytes, destination " + std::to_string(nbytes));
         kk::host_read();
         if (nbytes) memcpy(dst, c.data_ptr(), nbytes);)
}

void kk_full(const int64_t *shape, int nd, double value, int dtype, int dev,
             int dev_index, kk_tensor *out, char **err) {
  KK_OUT(at::full(kk::dims(shape, nd), value, kk::options(dtype, dev, dev_index)))
}

void kk_random(int kind, const int64_t *shape, int nd, int dtype, int dev,
               int dev_index, kk_tensor *out, char **err) {
  KK_TRY(auto o = kk::options(dtype, dev, dev_index); auto s = kk::dims(shape, nd);
         at::Tensor r;
         switch (kind) {
           case KK_ZEROS: r = at::zeros(s, o); break;
           case KK_ONES: r = at::ones(s, o); break;
           case KK_RAND: r = at::rand(s, o); break;
           case KK_RANDN: r = at::randn(s, o); break;
           case KK_EMPTY: r = at::empty(s, o); break;
           default: throw std::invalid_argument("unknown creation kind");
         } *out = kk::wrap(r);)
}

void kk_randint(int64_t low, int64_t high, const int64_t *shape, int nd, int dev,
                int dev_index, kk_tensor *out, char **err) {
  KK_OUT(at::randint(low, high, kk::dims(shape, nd), kk::options(static_cast<int>(at::kLong), dev, dev_index)))
}

void kk_arange(double start, double end, double step, int dtype, int dev,
               int dev_index, kk_tensor *out, char **err) {
  KK_OUT(at::arange(start, end, step, kk::options(dtype, dev, dev_index)))
}

void kk_linspace(double start, double end, int64_t steps, int dtype, int dev,
                 int dev_index, kk_tensor *out, char **err) {
  KK_OUT(at::linspace(start, end, steps, kk::options(dtype, dev, dev_index)))
}

void kk_like(int kind, kk_tensor a, kk_tensor *out, char **err) {
  KK_TRY(const at::Tensor &x = T(a); at::Tensor r;
         switch (kind) {
           case KK_ZEROS: r = at::zeros_like(x); break;
           case KK_ONES: r = at::ones_like(x); break;
           case KK_RAND: r = at::rand_like(x); break;
           case KK_RANDN: r = at::randn_like(x); break;
           case KK_EMPTY: r = at::empty_like(x); break;
           default: throw std::invalid_argument("unknown creation kind");
         } *out = kk::wrap(r);)
}

void kk_randn_rows(const uint64_t *seeds, int n, const int64_t *row_shape, int nd, int dtype,
                   kk_tensor *out, char **err) {
  KK_TRY(std::vector<int64_t> shape{n};
         for (int i = 0; i < nd; i++) shape.push_back(row_shape[i]);
         auto o = kk::options(dtype, KK_CPU, 0);
         at::Tensor r = at::empty(shape, o);
         for (int i = 0; i < n; i++) {
           auto gen = at::make_generator<at::CPUGeneratorImpl>(seeds[i]);
           r[i].normal_(0, 1, gen);
         } *out = kk::wrap(r);)
}

int kk_dim(kk_tensor t, char **err) {
  KK_TRY(return static_cast<int>(T(t).dim());)
  return 0;
}

void kk_shape(kk_tensor t, int64_t *dims, char **err) {
  KK_TRY(auto s = T(t).sizes(); for (size_t i = 0; i < s.size(); i++) dims[i] = s[i];)
}

int kk_dtype(kk_tensor t, char **err) {
  KK_TRY(return static_cast<int>(T(t).scalar_type());)
  return -1;
}

void kk_device(kk_tensor t, int *dev, int *index, char **err) {
  KK_TRY(auto d = T(t).device(); *dev = d.is_cuda() ? KK_CUDA : KK_CPU;
         *index = d.has_index() ? d.index() : 0;)
}

double kk_item(kk_tensor t, char **err) {
  KK_TRY(double v = T(t).item<double>(); kk::host_read(); return v;)
  return 0;
}

void kk_to(kk_tensor t, int dtype, int dev, int dev_index, int copy, kk_tensor *out,
           char **err) {
  KK_TRY(const at::Tensor &x = T(t); at::Device d = kk::device(dev, dev_index);
         at::Tensor r = x.to(d, kk::dtype(dtype), false, copy != 0);
         if (!x.is_cpu() && d.is_cpu()) kk::host_read();
         *out = kk::wrap(r);)
}

void kk_contiguous(kk_tensor t, kk_tensor *out, char **err) { KK_OUT(T(t).contiguous()) }
void kk_clone(kk_tensor t, kk_tensor *out, char **err) { KK_OUT(T(t).clone()) }
void kk_detach(kk_tensor t, kk_tensor *out, char **err) { KK_OUT(T(t).detach()) }

int kk_allclose(kk_tensor a, kk_tensor b, double rtol, double atol, char **err) {
  KK_TRY(bool r = at::allclose(T(a), T(b), rtol, atol); kk::host_read(); return r;)
  return 0;
}

void kk_bench_add_loop(kk_tensor a, kk_tensor b, int64_t n, char **err) {
  KK_TRY(const at::Tensor &x = T(a); const at::Tensor &y = T(b);
         for (int64_t i = 0; i < n; i++) {
           // The same work a Go call does: a new heap handle per result.
           kk_tensor r = kk::wrap(at::add(x, y));
           kk_free(r);
         })
}

}  // extern "C"
