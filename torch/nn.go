package torch

/*
#include "kakusan.h"
*/
import "C"

import "unsafe"

// Matmul is the matrix product with libtorch's broadcasting rules.
func Matmul(a, b *Tensor) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_matmul(a.handle("Matmul"), b.handle("Matmul"), &out, &err)
	return wrap("Matmul", out, err)
}

// Linear is x wᵀ + b (b may be nil), as torch.nn.functional.linear.
func Linear(x, w, b *Tensor) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_linear(x.handle("Linear"), w.handle("Linear"), b.opt("Linear"), &out, &err)
	return wrap("Linear", out, err)
}

// Conv2dOpts are a 2-D convolution's geometry. Zero Stride and Dilation mean 1,
// zero Groups means 1.
type Conv2dOpts struct {
	Stride, Padding, Dilation, OutputPadding [2]int64
	Groups                                   int64
}

func (o Conv2dOpts) norm() Conv2dOpts {
	for i := range 2 {
		if o.Stride[i] == 0 {
			o.Stride[i] = 1
		}
		if o.Dilation[i] == 0 {
			o.Dilation[i] = 1
		}
	}
	if o.Groups == 0 {
		o.Groups = 1
	}
	return o
}

func p2(a *[2]int64) *C.int64_t { return (*C.int64_t)(unsafe.Pointer(&a[0])) }

// Conv2d is torch.nn.functional.conv2d over NCHW input (b may be nil).
func Conv2d(x, w, b *Tensor, o Conv2dOpts) *Tensor {
	o = o.norm()
	var out C.kk_tensor
	var err *C.char
	C.kk_conv2d(x.handle("Conv2d"), w.handle("Conv2d"), b.opt("Conv2d"), p2(&o.Stride), p2(&o.Padding), p2(&o.Dilation), C.int64_t(o.Groups), &out, &err)
	return wrap("Conv2d", out, err)
}

// ConvTranspose2d is torch.nn.functional.conv_transpose2d (b may be nil).
func ConvTranspose2d(x, w, b *Tensor, o Conv2dOpts) *Tensor {
	o = o.norm()
	var out C.kk_tensor
	var err *C.char
	C.kk_conv_transpose2d(x.handle("ConvTranspose2d"), w.handle("ConvTranspose2d"), b.opt("ConvTranspose2d"), p2(&o.Stride), p2(&o.Padding), p2(&o.OutputPadding), p2(&o.Dilation), C.int64_t(o.Groups), &out, &err)
	return wrap("ConvTranspose2d", out, err)
}

// BatchNorm normalises over every dimension but the channel (dim 1). In
// training it uses the batch statistics and updates runningMean/runningVar in
// place with momentum; in evaluation it uses them. Any of w, b and the
// running statistics may be nil.
func BatchNorm(x, w, b, runningMean, runningVar *Tensor, training bool, momentum, eps float64) *Tensor {
	return BatchNormAct(x, w, b, runningMean, runningVar, training, momentum, eps, ActNone)
}

// BatchNormAct is act(BatchNorm(x, ...)). In training on the CPU, with
// float32 or bfloat16 x and the running statistics given, one kernel
// computes it (a pass for the statistics, one for the result) and one its
// gradients, in x's dtype and layout; elsewhere it is libtorch's batch
// norm and the activation.
func BatchNormAct(x, w, b, runningMean, runningVar *Tensor, training bool, momentum, eps float64, act Act) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_batch_norm(x.handle("BatchNorm"), w.opt("BatchNorm"), b.opt("BatchNorm"), runningMean.opt("BatchNorm"), runningVar.opt("BatchNorm"), b2i(training), C.double(momentum), C.double(eps), C.int(act), &out, &err)
	return wrap("BatchNorm", out, err)
}

// Act is an activation a normalisation may be fused with.
type Act int

const (
	ActNone Act = C.KK_ACT_NONE
	ActReLU Act = C.KK_ACT_RELU
	ActSiLU Act = C.KK_ACT_SILU
)

// Apply applies the activation alone.
func (a Act) Apply(x *Tensor) *Tensor {
	switch a {
	case ActReLU:
		return x.Relu()
	case ActSiLU:
		return x.Silu()
	}
	return x
}

// ApplyInPlace applies the activation to x in place and returns x: for a
// tensor nothing else reads, such as a convolution's fresh output, it saves
// allocating (and faulting in) a result the size of x.
func (a Act) ApplyInPlace(x *Tensor) *Tensor {
	if a == ActNone {
		return x
	}
	op := C.int(C.KK_RELU)
	if a == ActSiLU {
		op = C.KK_SILU
	}
	var err *C.char
	C.kk_unary_(op, x.handle("ApplyInPlace"), &err)
	check("ApplyInPlace", err)
	return x
}

// GroupNorm normalises channel groups (w and b may be nil). The result has
// x's dtype; a bfloat16 x is normalised in float32 or better.
func GroupNorm(x *Tensor, groups int64, w, b *Tensor, eps float64) *Tensor {
	return GroupNormAct(x, groups, w, b, eps, ActNone)
}

// GroupNormAct is act(GroupNorm(x, ...)) in one pass: on the CPU one kernel
// per image normalises and activates forward, and one computes the
// gradients, with no intermediate tensor (the shim's norm.cpp).
func GroupNormAct(x *Tensor, groups int64, w, b *Tensor, eps float64, act Act) *Tensor {
	return GroupNormFiLM(x, groups, w, b, nil, nil, eps, act)
}

// GroupNormFiLM is act(GroupNorm(x, ...)·mul + add), mul and add of shape
// (N, C) broadcast over each image's positions: FiLM's per-image
// modulation (ADM's scale-shift norm), in the same one pass as GroupNormAct
// on the CPU. mul and add are both nil or both given.
func GroupNormFiLM(x *Tensor, groups int64, w, b, mul, add *Tensor, eps float64, act Act) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_group_norm(x.handle("GroupNorm"), C.int64_t(groups), w.opt("GroupNorm"), b.opt("GroupNorm"), mul.opt("GroupNorm"), add.opt("GroupNorm"), C.double(eps), C.int(act), &out, &err)
	return wrap("GroupNorm", out, err)
}

// LayerNorm normalises over the trailing dimensions named by shape.
func LayerNorm(x *Tensor, shape []int64, w, b *Tensor, eps float64) *Tensor {
	p, n := shapeArg(shape)
	var out C.kk_tensor
	var err *C.char
	C.kk_layer_norm(x.handle("LayerNorm"), p, n, w.opt("LayerNorm"), b.opt("LayerNorm"), C.double(eps), &out, &err)
	return wrap("LayerNorm", out, err)
}

func pool(op string, avg bool, x *Tensor, kernel, stride, padding int64) *Tensor {
	if stride == 0 {
		stride = kernel
	}
	k, s, p := [2]int64{kernel, kernel}, [2]int64{stride, stride}, [2]int64{padding, padding}
	var out C.kk_tensor
	var err *C.char
	C.kk_pool2d(b2i(avg), x.handle(op), p2(&k), p2(&s), p2(&p), &out, &err)
	return wrap(op, out, err)
}

// MaxPool2d and AvgPool2d pool square windows (stride 0 means stride = kernel).
func MaxPool2d(x *Tensor, kernel, stride, padding int64) *Tensor {
	return pool("MaxPool2d", false, x, kernel, stride, padding)
}
func AvgPool2d(x *Tensor, kernel, stride, padding int64) *Tensor {
	return pool("AvgPool2d", true, x, kernel, stride, padding)
}

func upsample(op string, bilinear bool, x *Tensor, h, w int64, alignCorners bool) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_upsample2d(b2i(bilinear), x.handle(op), C.int64_t(h), C.int64_t(w), b2i(alignCorners), &out, &err)
	return wrap(op, out, err)
}

// UpsampleBilinear resizes NCHW input to h×w, as F.interpolate(mode="bilinear").
func UpsampleBilinear(x *Tensor, h, w int64, alignCorners bool) *Tensor {
	return upsample("UpsampleBilinear", true, x, h, w, alignCorners)
}

// UpsampleCat is a U-Net up block's input, cat([UpsampleBilinear(x, skip's
// H×W, false), skip], 1) plus bias (B, C_x + C_skip; nil: none) broadcast
// over the pixels: on the CPU, for channels-last tensors of one dtype, one
// pass forward and one backward (the shim's upsample.cpp).
func UpsampleCat(x, skip, bias *Tensor) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_upsample_cat(x.handle("UpsampleCat"), skip.handle("UpsampleCat"), bias.opt("UpsampleCat"), &out, &err)
	return wrap("UpsampleCat", out, err)
}

// UpsampleNearest resizes NCHW input to h×w, as F.interpolate(mode="nearest").
func UpsampleNearest(x *Tensor, h, w int64) *Tensor {
	return upsample("UpsampleNearest", false, x, h, w, false)
}

// Embedding looks up rows of w for int64 indices.
func Embedding(w, idx *Tensor) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_embedding(w.handle("Embedding"), idx.handle("Embedding"), &out, &err)
	return wrap("Embedding", out, err)
}

// Dropout zeroes elements with probability p and rescales the rest when training.
func Dropout(x *Tensor, p float64, training bool) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_dropout(x.handle("Dropout"), C.double(p), b2i(training), &out, &err)
	return wrap("Dropout", out, err)
}

func softmax(op string, x *Tensor, dim int64, log bool) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_softmax(x.handle(op), C.int64_t(dim), b2i(log), &out, &err)
	return wrap(op, out, err)
}

// Softmax and LogSoftmax along dim.
func Softmax(x *Tensor, dim int64) *Tensor    { return softmax("Softmax", x, dim, false) }
func LogSoftmax(x *Tensor, dim int64) *Tensor { return softmax("LogSoftmax", x, dim, true) }

// Reduction says how a loss combines its per-element terms.
type Reduction int

const (
	ReduceMean Reduction = C.KK_REDUCE_MEAN
	ReduceSum  Reduction = C.KK_REDUCE_SUM
	ReduceNone Reduction = C.KK_REDUCE_NONE
)

// MSELoss is the squared error between input and target of the same shape.
func MSELoss(input, target *Tensor, r Reduction) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_mse_loss(input.handle("MSELoss"), target.handle("MSELoss"), C.int(r), &out, &err)
	return wrap("MSELoss", out, err)
}

// BCELoss is the binary cross entropy of probabilities p against targets y.
func BCELoss(p, y *Tensor, r Reduction) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_bce_loss(p.handle("BCELoss"), y.handle("BCELoss"), 0, C.int(r), &out, &err)
	return wrap("BCELoss", out, err)
}

// BCEWithLogitsLoss is BCELoss of sigmoid(logits), computed stably.
func BCEWithLogitsLoss(logits, y *Tensor, r Reduction) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_bce_loss(logits.handle("BCEWithLogitsLoss"), y.handle("BCEWithLogitsLoss"), 1, C.int(r), &out, &err)
	return wrap("BCEWithLogitsLoss", out, err)
}

// CrossEntropyLoss of logits (N×C) against int64 class targets (N).
func CrossEntropyLoss(logits, target *Tensor, r Reduction, labelSmoothing float64) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_cross_entropy(logits.handle("CrossEntropyLoss"), target.handle("CrossEntropyLoss"), C.int(r), C.double(labelSmoothing), &out, &err)
	return wrap("CrossEntropyLoss", out, err)
}

// ScaledDotProductAttention is softmax(q kᵀ/√d + mask) v over the last two
// dimensions. mask may be nil, boolean (true = attend) or additive. On the
// CPU it is the formula, on every libtorch; on CUDA libtorch 2.x's fused
// kernels.
func ScaledDotProductAttention(q, k, v, mask *Tensor, causal bool) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_sdpa(q.handle("ScaledDotProductAttention"), k.handle("ScaledDotProductAttention"), v.handle("ScaledDotProductAttention"), mask.opt("ScaledDotProductAttention"), b2i(causal), &out, &err)
	return wrap("ScaledDotProductAttention", out, err)
}
