package torch

/*
#include "csrc/kakusan.h"
*/
import "C"

import (
	"fmt"
)

// Autocast runs f with automatic mixed precision for devices of type dev,
// as torch.autocast(dev, dtype): inside f, matrix products and
// convolutions on such a device compute in dtype (BFloat16, or Float16 on
// CUDA; Float32 turns autocast off, see WithoutAutocast) while precision-sensitive ops stay in float32, by the lists
// libtorch keeps for each device. Parameters stay float32 (their casts are
// cached until the outermost Autocast returns) and gradients reach them in
// float32. Regions nest; the previous state is restored however f returns.
func Autocast(dev DeviceType, dtype DType, f func()) {
	var on, prev C.int
	var err *C.char
	C.kk_autocast_push(C.int(dev), dtype.code("Autocast"), &on, &prev, &err)
	check("Autocast", err)
	defer func() {
		var err *C.char
		C.kk_autocast_pop(C.int(dev), on, prev, &err)
		check("Autocast", err)
	}()
	f()
}

// WithoutAutocast runs f with autocast off for devices of type dev, as
// torch.autocast(dev, enabled=False): a float32 island inside a
// mixed-precision region (a frozen encoder whose outputs must not depend
// on the training precision). The previous state is restored after.
func WithoutAutocast(dev DeviceType, f func()) { Autocast(dev, Float32, f) }

// SetTF32 allows (or forbids) TensorFloat-32 in CUDA's float32 matrix
// products and convolutions, as torch.backends.cuda.matmul.allow_tf32 and
// torch.backends.cudnn.allow_tf32 together, and returns the previous
// setting. It is process-wide and does nothing without CUDA.
func SetTF32(on bool) (prev bool) { return C.kk_set_tf32(b2i(on)) != 0 }

// SetCuDNNBenchmark turns cuDNN's search for the fastest convolution
// algorithm of each new shape on or off, as torch.backends.cudnn.benchmark,
// and returns the previous setting. Process-wide; nothing without CUDA.
func SetCuDNNBenchmark(on bool) (prev bool) { return C.kk_set_cudnn_benchmark(b2i(on)) != 0 }

// MemoryFormat is how a 4-d tensor's elements are laid out in memory.
type MemoryFormat int

const (
	// ContiguousFormat is NCHW, row-major: the default.
	ContiguousFormat MemoryFormat = C.KK_CONTIGUOUS_FORMAT
	// ChannelsLast is NHWC in memory with NCHW sizes (torch.channels_last),
	// the layout oneDNN and cuDNN's fastest convolutions work in.
	ChannelsLast MemoryFormat = C.KK_CHANNELS_LAST
)

// ContiguousAs returns t laid out in format f (t itself, as a new handle,
// when it already is). A tensor that is not 4-d is made plainly contiguous.
func (t *Tensor) ContiguousAs(f MemoryFormat) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_contiguous_as(t.handle("ContiguousAs"), C.int(f), &out, &err)
	return wrap("ContiguousAs", out, err)
}

// IsContiguousAs reports whether t is laid out in format f.
func (t *Tensor) IsContiguousAs(f MemoryFormat) bool {
	var err *C.char
	r := C.kk_is_contiguous_as(t.handle("IsContiguousAs"), C.int(f), &err)
	check("IsContiguousAs", err)
	return r != 0
}

// SetMemoryFormat lays t's storage out in format f in place: the handle,
// its values, its autograd identity and requires_grad stay, so a parameter
// converted before its optimizer is made remains that parameter. Tensors
// that are not 4-d are left as they are.
func (t *Tensor) SetMemoryFormat(f MemoryFormat) *Tensor {
	var err *C.char
	C.kk_set_memory_format_(t.handle("SetMemoryFormat"), C.int(f), &err)
	check("SetMemoryFormat", err)
	return t
}

// PinMemory returns a copy of a CPU tensor in page-locked memory, from
// which ToAsync copies to CUDA without waiting. It needs a CUDA build.
func (t *Tensor) PinMemory() *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_pin_memory(t.handle("PinMemory"), &out, &err)
	return wrap("PinMemory", out, err)
}

// ToAsync copies t to dev without waiting for the copy when that is
// possible (a pinned CPU tensor to CUDA); otherwise it is To(dev). Work
// queued on dev afterwards sees the copied values.
func (t *Tensor) ToAsync(dev Device) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_to_async(t.handle("ToAsync"), C.int(dev.Type), C.int(dev.Index), &out, &err)
	return wrap("ToAsync", out, err)
}

// Precision is a compute policy for a float32 model, by the name configs
// use. Weights, optimizer state and checkpoints stay float32 under every
// policy; only how products are computed changes.
//
//	fp32  float32 throughout (TF32 off on CUDA, though cuDNN allows it by default)
//	tf32  TensorFloat-32 in CUDA's matrix products and convolutions; fp32 on the CPU
//	bf16  autocast to bfloat16 on the model's device, CPU or CUDA, with TF32
//	      allowed for what autocast keeps in float32
//	auto  bf16 on CUDA; on a CPU with bfloat16 instructions (AMX or
//	      AVX512-BF16) whichever of fp32 and bf16 runs the actual work
//	      faster, measured once and cached (Measured); fp32 on other CPUs,
//	      where libtorch emulates bfloat16, slowly. Where nothing was
//	      measured (On alone), a CPU's guess is bf16 with AMX, else fp32.
type Precision string

// The policies.
const (
	FP32 Precision = "fp32"
	TF32 Precision = "tf32"
	BF16 Precision = "bf16"
	Auto Precision = "auto"
)

// Precisions lists the policies.
var Precisions = []Precision{FP32, TF32, BF16, Auto}

// ParsePrecision checks a policy's name; "" is fp32.
func ParsePrecision(s string) (Precision, error) {
	if s == "" {
		return FP32, nil
	}
	for _, p := range Precisions {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("unknown precision %q (want fp32, tf32, bf16 or auto)", s)
}

// UnmarshalText parses a policy's name ("" is fp32), so a config key or a
// flag of type Precision holds only known policies.
func (p *Precision) UnmarshalText(b []byte) error {
	if _, err := ParsePrecision(string(b)); err != nil {
		return err
	}
	*p = Precision(b)
	return nil
}

// On is the policy p is on dev, auto resolved without measuring (bf16 on
// CUDA and on a CPU with AMX, else fp32); the others are themselves.
func (p Precision) On(dev Device) Precision {
	if p != Auto {
		return p
	}
	if dev.Type == CUDADevice || cpuHasAMX() {
		return BF16
	}
	return FP32
}

// Run runs f under the policy for a model on dev, restoring the previous
// TF32 and autocast settings however f returns. Tensors f returns may be
// bfloat16 under bf16: convert what leaves the model (To(Float32)).
func (p Precision) Run(dev Device, f func()) {
	p = p.On(dev)
	prev := SetTF32(p != FP32 && p != "")
	defer SetTF32(prev)
	if p == BF16 {
		Autocast(dev.Type, BFloat16, f)
		return
	}
	f()
}
