// Package torch is kakusan's binding of libtorch: tensors, autograd, the
// layers and losses the models need, optimizers and safetensors checkpoints.
//
// It calls a flat C ABI (csrc/kakusan.h) implemented by a small C++ shim,
// bin/libkakusan_torch.so, built by `make shim` against Debian's libtorch,
// an unpacked libtorch 2.x or a pip torch's. Go binaries link only that ABI.
//
// # Threads
//
// libtorch keeps grad mode, the current device and errors per OS thread, so
// every torch call runs on one goroutine locked to its thread. Do hands a
// function to that goroutine and waits for it:
//
//	err := torch.Do(func() error {
//		x := torch.Randn([]int64{2, 3})
//		fmt.Println(x.Sum().Item())
//		return nil
//	})
//
// A call from any other goroutine fails with an *Error instead of touching
// libtorch.
//
// # Errors
//
// Tensor operations return tensors, not (tensor, error) pairs, so models read
// like their equations. A failing operation (shape mismatch, wrong dtype,
// freed tensor, ...) panics with an *Error holding libtorch's message; Do and
// Try recover it and return it as an ordinary error. Other panics pass
// through untouched.
//
// # Memory
//
// Tensor memory is released deterministically. Every tensor belongs to the
// innermost open Scope when it is made and is freed when that scope closes;
// Do opens one around its function, and Scoped opens one around a block such
// as a training step. Scope.Escape moves a tensor to the enclosing scope;
// Tensor.Keep takes it out of scopes altogether (parameters, optimizer state)
// until Tensor.Free. Using a freed tensor is an *Error, never a crash.
// LiveTensors counts the handles alive in the shim.
package torch

/*
#cgo CFLAGS: -I${SRCDIR}/csrc
#cgo LDFLAGS: -L${SRCDIR}/../bin -lkakusan_torch -Wl,-rpath,${SRCDIR}/../bin -Wl,--enable-new-dtags
#include <stdlib.h>
#include "kakusan.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unsafe"
)

// Error is a failed torch operation.
type Error struct {
	Op  string // the Go operation, e.g. "Matmul"
	Msg string // libtorch's message, or the binding's
}

func (e *Error) Error() string { return "torch: " + e.Op + ": " + e.Msg }

func fail(op, format string, args ...any) {
	panic(&Error{Op: op, Msg: fmt.Sprintf(format, args...)})
}

// check turns a message from the shim into a panic with an *Error.
func check(op string, err *C.char) {
	if e := errFrom(op, err); e != nil {
		panic(e)
	}
}

// errFrom turns a message from the shim into an *Error (nil for none) and
// frees it: for calls whose failure is an ordinary outcome, not a panic.
func errFrom(op string, err *C.char) error {
	if err == nil {
		return nil
	}
	defer C.free(unsafe.Pointer(err))
	return &Error{Op: op, Msg: C.GoString(err)}
}

var (
	startOnce sync.Once
	startErr  error
	jobs      chan func()
)

func start() {
	jobs = make(chan func())
	ready := make(chan error)
	go worker(ready)
	startErr = <-ready
}

// worker is the torch thread: it binds itself, then runs jobs until a job
// ends the goroutine through runtime.Goexit, when it hands over to a new one.
func worker(ready chan<- error) {
	runtime.LockOSThread() // never unlocked: this goroutine is the torch thread
	if v := int(C.kk_abi_version()); v != C.KK_ABI_VERSION {
		ready <- fmt.Errorf("torch: shim speaks ABI %d, this binary ABI %d: rebuild one of them", v, C.KK_ABI_VERSION)
		return
	}
	C.kk_bind_thread()
	tuneMalloc()
	n, err := intraOpThreads(os.Getenv, currentMachine(), threadLog)
	if err != nil {
		ready <- err
		return
	}
	var cerr *C.char
	C.kk_set_num_threads(C.int(n), &cerr)
	if cerr != nil {
		ready <- fmt.Errorf("torch: set threads: %s", C.GoString(cerr))
		C.free(unsafe.Pointer(cerr))
		return
	}
	ready <- nil
	for f := range jobs {
		f()
	}
}

// intraOpThreads is the number of threads libtorch's kernels use:
// KAKUSAN_THREADS; else OMP_NUM_THREADS, as PyTorch takes it (torchrun sets
// it to 1 for each rank it starts); else the CPUs shared among the ranks on
// this machine (LOCAL_WORLD_SIZE, which torchrun sets), so that data-parallel
// ranks on one CPU do not oversubscribe it; else the CPUs. The CPUs are
// m's (runtime.NumCPU and the cgroup's CPU quota), and a request above them
// or above the threads the process may still create is lowered, with a
// line on log (machine.bound).
func intraOpThreads(getenv func(string) string, m machine, log io.Writer) (int, error) {
	if s := getenv("KAKUSAN_THREADS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > 1024 {
			return 0, fmt.Errorf("torch: KAKUSAN_THREADS=%q is not an integer between 1 and 1024", s)
		}
		return m.bound(v, "KAKUSAN_THREADS="+s, log), nil
	}
	if s := getenv("OMP_NUM_THREADS"); s != "" {
		if v, err := strconv.Atoi(s); err == nil && v >= 1 && v <= 1024 {
			return m.bound(v, "OMP_NUM_THREADS="+s, log), nil
		}
	}
	n := m.cpus
	if v, err := strconv.Atoi(getenv("LOCAL_WORLD_SIZE")); err == nil && v > 1 {
		n = max(n/v, 1)
	}
	return m.bound(n, "the default (the CPUs)", log), nil
}

// tuneMalloc makes glibc keep tensor-sized blocks for reuse (see
// kk_tune_malloc) unless KAKUSAN_MALLOC=system: with glibc's defaults each
// activation of a few MiB is a fresh mmap whose pages fault in as they are
// first written, and a U-Net forward pass on the CPU ran several times
// slower for it, PyTorch's own eager mode included (docs/performance.md). 32 MiB is the largest heap block
// glibc allows; the trim threshold keeps up to 1 GiB of freed memory
// mapped, so a training loop's working set is reused, not remapped, and
// the process's memory stays at its peak rather than growing.
func tuneMalloc() {
	if os.Getenv("KAKUSAN_MALLOC") == "system" {
		return
	}
	C.kk_tune_malloc(32<<20, 1<<30)
}

// TrimHeap returns the free memory of malloc's heaps to the system
// (glibc's malloc_trim): tensors of many sizes, freed, leave holes that
// tuneMalloc's high trim threshold keeps resident. A long-lived process
// whose tensor sizes vary (a server's batches) calls it now and then; it
// costs the page faults of the memory it returns when it is used again.
func TrimHeap() { C.kk_malloc_trim() }

// onThread reports whether the caller runs on the torch thread.
func onThread() bool { return C.kk_on_thread() != 0 }

// ThreadPanic is a panic other than *Error raised on the torch thread,
// re-raised by Do in its caller's goroutine with the torch thread's stack.
type ThreadPanic struct {
	Value any
	Stack string // where it was raised, on the torch thread
}

func (p *ThreadPanic) String() string { return fmt.Sprintf("%v (on the torch thread)", p.Value) }

// Do runs f on the torch thread inside a new Scope and returns its error, or
// the *Error of a torch operation that failed inside it. Nested calls run f
// directly. A panic other than *Error is re-raised in the caller's goroutine.
func Do(f func() error) error {
	if onThread() {
		return Try(f)
	}
	startOnce.Do(start)
	if startErr != nil {
		return startErr
	}
	type result struct {
		err   error
		panic any
	}
	done := make(chan result, 1)
	jobs <- func() {
		returned := false
		defer func() {
			if returned {
				return
			}
			if r := recover(); r != nil {
				done <- result{panic: &ThreadPanic{Value: r, Stack: string(debug.Stack())}}
				return
			}
			// runtime.Goexit (t.Fatal, say) ends this goroutine and its
			// thread: start a successor before reporting.
			ready := make(chan error)
			go worker(ready)
			<-ready
			done <- result{err: errors.New("torch: the function called runtime.Goexit on the torch thread (t.Fatal inside torch.Do?)")}
		}()
		err := Try(f)
		returned = true
		done <- result{err: err}
	}
	r := <-done
	if r.panic != nil {
		panic(r.panic)
	}
	return r.err
}

// Try runs f in a new Scope on the torch thread (it must already be there)
// and returns f's error or a recovered *Error.
func Try(f func() error) (err error) {
	s := NewScope()
	defer s.Close()
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(*Error)
			if !ok {
				panic(r)
			}
			err = e
		}
	}()
	return f()
}

// Version is the libtorch version the shim was built against, e.g. "1.13.0".
func Version() string {
	var buf [32]C.char
	C.kk_torch_version(&buf[0], C.int(len(buf)))
	return C.GoString(&buf[0])
}

// LiveTensors is the number of tensor handles alive in the shim.
func LiveTensors() int64 { return int64(C.kk_live_tensors()) }

// HostReads counts the calls so far that made the host read tensor values or
// wait for a device: Item, Values (Bytes, Float64s, ...), AllClose,
// ClipGradNorm, Synchronize, and To or CopyFrom from a device to the CPU.
// A training step meant to run without syncs (CUDA graphs) can assert that
// it leaves the count unchanged. It may be read from any goroutine.
func HostReads() int64 { return int64(C.kk_host_reads()) }

// SetNumThreads sets libtorch's intra-op threads (default: the CPUs, or
// KAKUSAN_THREADS), as the config key threads asks: n above what the
// machine allows (MaxThreads) is lowered to it with a line on stderr naming
// the key and both numbers.
func SetNumThreads(n int) {
	n = currentMachine().bound(n, "the config's threads", threadLog)
	var err *C.char
	C.kk_set_num_threads(C.int(n), &err)
	check("SetNumThreads", err)
}

// NumThreads is libtorch's intra-op thread count.
func NumThreads() int { return int(C.kk_get_num_threads()) }

// ManualSeed seeds the CPU and every CUDA generator.
func ManualSeed(seed uint64) {
	var err *C.char
	C.kk_manual_seed(C.uint64_t(seed), &err)
	check("ManualSeed", err)
}

// CUDAAvailable reports whether the shim was built with CUDA and a GPU is visible.
func CUDAAvailable() bool { return C.kk_cuda_available() != 0 }

// CUDADeviceCount is the number of visible CUDA devices.
func CUDADeviceCount() int { return int(C.kk_cuda_device_count()) }

// Synchronize waits for the current CUDA device's work to finish.
func Synchronize() {
	var err *C.char
	C.kk_cuda_synchronize(&err)
	check("Synchronize", err)
}

// RNGState returns a copy of the CPU generator's state (a uint8 tensor).
func RNGState() *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_rng_state(&out, &err)
	return wrap("RNGState", out, err)
}

// SetRNGState restores a state returned by RNGState.
func SetRNGState(state *Tensor) {
	var err *C.char
	C.kk_set_rng_state(state.handle("SetRNGState"), &err)
	check("SetRNGState", err)
}

// RNGStates returns the state of every generator: "cpu" and "cuda:N" for
// each visible CUDA device (tensors in the current scope), so a checkpoint
// can restore the random streams of every device, as
// torch.get_rng_state and torch.cuda.get_rng_state_all do.
func RNGStates() map[string]*Tensor {
	s := map[string]*Tensor{"cpu": RNGState()}
	if CUDAAvailable() {
		for i := range CUDADeviceCount() {
			s[CUDA(i).String()] = cudaRNGState(i)
		}
	}
	return s
}

// SetRNGStates restores every state it is given, keyed as RNGStates keys
// them. The keys are checked before anything is restored: an unknown key, or
// a CUDA device this machine does not have, is an *Error naming the key, as
// is a state the generator refuses.
func SetRNGStates(states map[string]*Tensor) error {
	keys := slices.Sorted(maps.Keys(states))
	devs := make([]int, len(keys))
	for i, k := range keys {
		d, err := rngDevice(k)
		if err != nil {
			return err
		}
		devs[i] = d
	}
	for i, k := range keys {
		err := Try(func() error {
			if devs[i] < 0 {
				SetRNGState(states[k])
			} else {
				setCUDARNGState(devs[i], states[k])
			}
			return nil
		})
		if e, ok := err.(*Error); ok {
			return &Error{Op: "SetRNGStates", Msg: fmt.Sprintf("%q: %s", k, e.Msg)}
		}
	}
	return nil
}

// rngDevice maps an RNGStates key to -1 for the CPU or a CUDA device index.
func rngDevice(key string) (int, error) {
	if key == "cpu" {
		return -1, nil
	}
	rest, ok := strings.CutPrefix(key, "cuda:")
	i, err := strconv.Atoi(rest)
	bad := func(format string, args ...any) (int, error) {
		return 0, &Error{Op: "SetRNGStates", Msg: fmt.Sprintf("%q: ", key) + fmt.Sprintf(format, args...)}
	}
	if !ok || err != nil || i < 0 || strconv.Itoa(i) != rest {
		return bad(`unknown generator (want "cpu" or "cuda:N")`)
	}
	if !CUDAAvailable() {
		return bad("CUDA is not available (CPU-only shim or no GPU)")
	}
	if n := CUDADeviceCount(); i >= n {
		return bad("only %d CUDA device(s)", n)
	}
	return i, nil
}

// cudaRNGState returns a copy of CUDA device i's generator state.
func cudaRNGState(i int) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_cuda_rng_state(C.int(i), &out, &err)
	return wrap("CUDARNGState", out, err)
}

// setCUDARNGState restores a state returned by cudaRNGState(i).
func setCUDARNGState(i int, state *Tensor) {
	var err *C.char
	C.kk_set_cuda_rng_state(C.int(i), state.handle("SetCUDARNGState"), &err)
	check("SetCUDARNGState", err)
}

// BuildInfo is what the shim was compiled with, whatever the machine it
// runs on has.
type BuildInfo struct {
	ABI        int    // the C ABI's version (kakusan.h's KK_ABI_VERSION)
	Libtorch   string // the libtorch version, e.g. "1.13.0"
	CUDA       bool   // against a CUDA libtorch
	CUDAGraphs bool   // CUDA graph capture compiled in
	NCCL, Gloo bool   // c10d's backends compiled in
}

// Build reports what the shim was compiled with.
func Build() BuildInfo {
	bits := int(C.kk_built_with())
	return BuildInfo{
		ABI:        int(C.kk_abi_version()),
		Libtorch:   Version(),
		CUDA:       bits&C.KK_BUILT_CUDA != 0,
		CUDAGraphs: bits&C.KK_BUILT_CUDA_GRAPHS != 0,
		NCCL:       bits&C.KK_BUILT_NCCL != 0,
		Gloo:       bits&C.KK_BUILT_GLOO != 0,
	}
}

// String is one line: "shim ABI 10, libtorch 1.13.0 (CPU build), CUDA
// graphs no, NCCL no, Gloo yes".
func (b BuildInfo) String() string {
	yes := map[bool]string{true: "yes", false: "no"}
	kind := "CPU build"
	if b.CUDA {
		kind = "CUDA build"
	}
	return fmt.Sprintf("shim ABI %d, libtorch %s (%s), CUDA graphs %s, NCCL %s, Gloo %s",
		b.ABI, b.Libtorch, kind, yes[b.CUDAGraphs], yes[b.NCCL], yes[b.Gloo])
}
