package torch

/*
#include "kakusan.h"
*/
import "C"

import (
	"math"
)

func (t *Tensor) unary(op string, code C.int) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_unary(code, t.handle(op), &out, &err)
	return wrap(op, out, err)
}

// Element-wise functions of one tensor.
func (t *Tensor) Neg() *Tensor        { return t.unary("Neg", C.KK_NEG) }
func (t *Tensor) Exp() *Tensor        { return t.unary("Exp", C.KK_EXP) }
func (t *Tensor) Log() *Tensor        { return t.unary("Log", C.KK_LOG) }
func (t *Tensor) Sqrt() *Tensor       { return t.unary("Sqrt", C.KK_SQRT) }
func (t *Tensor) Rsqrt() *Tensor      { return t.unary("Rsqrt", C.KK_RSQRT) }
func (t *Tensor) Sin() *Tensor        { return t.unary("Sin", C.KK_SIN) }
func (t *Tensor) Cos() *Tensor        { return t.unary("Cos", C.KK_COS) }
func (t *Tensor) Abs() *Tensor        { return t.unary("Abs", C.KK_ABS) }
func (t *Tensor) Square() *Tensor     { return t.unary("Square", C.KK_SQUARE) }
func (t *Tensor) Relu() *Tensor       { return t.unary("Relu", C.KK_RELU) }
func (t *Tensor) Silu() *Tensor       { return t.unary("Silu", C.KK_SILU) }
func (t *Tensor) Gelu() *Tensor       { return t.unary("Gelu", C.KK_GELU) }
func (t *Tensor) Sigmoid() *Tensor    { return t.unary("Sigmoid", C.KK_SIGMOID) }
func (t *Tensor) LogSigmoid() *Tensor { return t.unary("LogSigmoid", C.KK_LOGSIGMOID) }
func (t *Tensor) Tanh() *Tensor       { return t.unary("Tanh", C.KK_TANH) }
func (t *Tensor) Softplus() *Tensor   { return t.unary("Softplus", C.KK_SOFTPLUS) }
func (t *Tensor) Log1p() *Tensor      { return t.unary("Log1p", C.KK_LOG1P) }
func (t *Tensor) Expm1() *Tensor      { return t.unary("Expm1", C.KK_EXPM1) }
func (t *Tensor) Floor() *Tensor      { return t.unary("Floor", C.KK_FLOOR) }
func (t *Tensor) Round() *Tensor      { return t.unary("Round", C.KK_ROUND) }
func (t *Tensor) Sign() *Tensor       { return t.unary("Sign", C.KK_SIGN) }
func (t *Tensor) Reciprocal() *Tensor { return t.unary("Reciprocal", C.KK_RECIPROCAL) }
func (t *Tensor) LogicalNot() *Tensor { return t.unary("LogicalNot", C.KK_LOGICAL_NOT) }
func (t *Tensor) IsNaN() *Tensor      { return t.unary("IsNaN", C.KK_ISNAN) }
func (t *Tensor) IsFinite() *Tensor   { return t.unary("IsFinite", C.KK_ISFINITE) }

func (t *Tensor) binary(op string, code C.int, o *Tensor) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_binary(code, t.handle(op), o.handle(op), &out, &err)
	return wrap(op, out, err)
}

func (t *Tensor) scalar(op string, code C.int, s float64) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_binary_scalar(code, t.handle(op), C.double(s), &out, &err)
	return wrap(op, out, err)
}

// Element-wise functions of two tensors, broadcasting as libtorch does.
func (t *Tensor) Add(o *Tensor) *Tensor        { return t.binary("Add", C.KK_ADD, o) }
func (t *Tensor) Sub(o *Tensor) *Tensor        { return t.binary("Sub", C.KK_SUB, o) }
func (t *Tensor) Mul(o *Tensor) *Tensor        { return t.binary("Mul", C.KK_MUL, o) }
func (t *Tensor) Div(o *Tensor) *Tensor        { return t.binary("Div", C.KK_DIV, o) }
func (t *Tensor) Pow(o *Tensor) *Tensor        { return t.binary("Pow", C.KK_POW, o) }
func (t *Tensor) Maximum(o *Tensor) *Tensor    { return t.binary("Maximum", C.KK_MAXIMUM, o) }
func (t *Tensor) Minimum(o *Tensor) *Tensor    { return t.binary("Minimum", C.KK_MINIMUM, o) }
func (t *Tensor) Remainder(o *Tensor) *Tensor  { return t.binary("Remainder", C.KK_REMAINDER, o) }
func (t *Tensor) Eq(o *Tensor) *Tensor         { return t.binary("Eq", C.KK_EQ, o) }
func (t *Tensor) Ne(o *Tensor) *Tensor         { return t.binary("Ne", C.KK_NE, o) }
func (t *Tensor) Lt(o *Tensor) *Tensor         { return t.binary("Lt", C.KK_LT, o) }
func (t *Tensor) Le(o *Tensor) *Tensor         { return t.binary("Le", C.KK_LE, o) }
func (t *Tensor) Gt(o *Tensor) *Tensor         { return t.binary("Gt", C.KK_GT, o) }
func (t *Tensor) Ge(o *Tensor) *Tensor         { return t.binary("Ge", C.KK_GE, o) }
func (t *Tensor) LogicalAnd(o *Tensor) *Tensor { return t.binary("LogicalAnd", C.KK_LOGICAL_AND, o) }
func (t *Tensor) LogicalOr(o *Tensor) *Tensor  { return t.binary("LogicalOr", C.KK_LOGICAL_OR, o) }

// Element-wise functions of a tensor and a number.
func (t *Tensor) AddScalar(s float64) *Tensor  { return t.scalar("AddScalar", C.KK_ADD, s) }
func (t *Tensor) SubScalar(s float64) *Tensor  { return t.scalar("SubScalar", C.KK_SUB, s) }
func (t *Tensor) MulScalar(s float64) *Tensor  { return t.scalar("MulScalar", C.KK_MUL, s) }
func (t *Tensor) DivScalar(s float64) *Tensor  { return t.scalar("DivScalar", C.KK_DIV, s) }
func (t *Tensor) PowScalar(s float64) *Tensor  { return t.scalar("PowScalar", C.KK_POW, s) }
func (t *Tensor) RSubScalar(s float64) *Tensor { return t.scalar("RSubScalar", C.KK_RSUB, s) } // s - t
func (t *Tensor) RDivScalar(s float64) *Tensor { return t.scalar("RDivScalar", C.KK_RDIV, s) } // s / t
func (t *Tensor) EqScalar(s float64) *Tensor   { return t.scalar("EqScalar", C.KK_EQ, s) }
func (t *Tensor) LtScalar(s float64) *Tensor   { return t.scalar("LtScalar", C.KK_LT, s) }
func (t *Tensor) GtScalar(s float64) *Tensor   { return t.scalar("GtScalar", C.KK_GT, s) }
func (t *Tensor) LeScalar(s float64) *Tensor   { return t.scalar("LeScalar", C.KK_LE, s) }
func (t *Tensor) GeScalar(s float64) *Tensor   { return t.scalar("GeScalar", C.KK_GE, s) }

// Clamp limits t to [lo, hi]; pass math.Inf to leave a side open.
func (t *Tensor) Clamp(lo, hi float64) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_clamp(t.handle("Clamp"), C.double(lo), C.double(hi), b2i(!math.IsInf(lo, -1)), b2i(!math.IsInf(hi, 1)), &out, &err)
	return wrap("Clamp", out, err)
}

// Where picks a where cond is true, else b.
func Where(cond, a, b *Tensor) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_where(cond.handle("Where"), a.handle("Where"), b.handle("Where"), &out, &err)
	return wrap("Where", out, err)
}

// Lerp is t + w*(o - t).
func (t *Tensor) Lerp(o *Tensor, w float64) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_lerp(t.handle("Lerp"), o.handle("Lerp"), C.double(w), &out, &err)
	return wrap("Lerp", out, err)
}

// In-place updates; each returns t.

// AddInPlace adds alpha*o to t.
func (t *Tensor) AddInPlace(o *Tensor, alpha float64) *Tensor {
	var err *C.char
	C.kk_add_(t.handle("AddInPlace"), o.handle("AddInPlace"), C.double(alpha), &err)
	check("AddInPlace", err)
	return t
}

// MulScalarInPlace multiplies t by s.
func (t *Tensor) MulScalarInPlace(s float64) *Tensor {
	var err *C.char
	C.kk_mul_scalar_(t.handle("MulScalarInPlace"), C.double(s), &err)
	check("MulScalarInPlace", err)
	return t
}

// CopyFrom copies src's values into t (broadcasting, converting dtype and device).
func (t *Tensor) CopyFrom(src *Tensor) *Tensor {
	var err *C.char
	C.kk_copy_(t.handle("CopyFrom"), src.handle("CopyFrom"), &err)
	check("CopyFrom", err)
	return t
}

// Fill sets every element to v.
func (t *Tensor) Fill(v float64) *Tensor {
	var err *C.char
	C.kk_fill_(t.handle("Fill"), C.double(v), &err)
	check("Fill", err)
	return t
}

// LerpInPlace moves t towards o by w: t += w*(o - t) (an EMA update).
func (t *Tensor) LerpInPlace(o *Tensor, w float64) *Tensor {
	var err *C.char
	C.kk_lerp_(t.handle("LerpInPlace"), o.handle("LerpInPlace"), C.double(w), &err)
	check("LerpInPlace", err)
	return t
}

// ---- reductions ----

func (t *Tensor) reduce(op string, code C.int, dims []int64, keep bool, arg float64) *Tensor {
	p, n := shapeArg(dims)
	var out C.kk_tensor
	var err *C.char
	C.kk_reduce(code, t.handle(op), p, n, b2i(keep), C.double(arg), &out, &err)
	return wrap(op, out, err)
}

// Sum, Mean, Max and Min reduce over every element to a 0-d tensor.
func (t *Tensor) Sum() *Tensor  { return t.reduce("Sum", C.KK_SUM, nil, false, 0) }
func (t *Tensor) Mean() *Tensor { return t.reduce("Mean", C.KK_MEAN, nil, false, 0) }
func (t *Tensor) Max() *Tensor  { return t.reduce("Max", C.KK_MAX, nil, false, 0) }
func (t *Tensor) Min() *Tensor  { return t.reduce("Min", C.KK_MIN, nil, false, 0) }

// SumDims, MeanDims, MaxDims and MinDims reduce over the given dimensions.
func (t *Tensor) SumDims(keep bool, dims ...int64) *Tensor {
	return t.reduce("SumDims", C.KK_SUM, dims, keep, 0)
}
func (t *Tensor) MeanDims(keep bool, dims ...int64) *Tensor {
	return t.reduce("MeanDims", C.KK_MEAN, dims, keep, 0)
}
func (t *Tensor) MaxDims(keep bool, dims ...int64) *Tensor {
	return t.reduce("MaxDims", C.KK_MAX, dims, keep, 0)
}
func (t *Tensor) MinDims(keep bool, dims ...int64) *Tensor {
	return t.reduce("MinDims", C.KK_MIN, dims, keep, 0)
}

// LogSumExp is log(sum(exp(t))) over dims (every dim when none), computed stably.
func (t *Tensor) LogSumExp(keep bool, dims ...int64) *Tensor {
	return t.reduce("LogSumExp", C.KK_LOGSUMEXP, dims, keep, 0)
}

// Argmax and Argmin are the int64 index of the extreme along dim.
func (t *Tensor) Argmax(dim int64, keep bool) *Tensor {
	return t.reduce("Argmax", C.KK_ARGMAX, []int64{dim}, keep, 0)
}
func (t *Tensor) Argmin(dim int64, keep bool) *Tensor {
	return t.reduce("Argmin", C.KK_ARGMIN, []int64{dim}, keep, 0)
}

// Var and Std over dims (every dim when none); unbiased divides by n-1.
func (t *Tensor) Var(unbiased, keep bool, dims ...int64) *Tensor {
	return t.reduce("Var", C.KK_VAR, dims, keep, float64(b2i(unbiased)))
}
func (t *Tensor) Std(unbiased, keep bool, dims ...int64) *Tensor {
	return t.reduce("Std", C.KK_STD, dims, keep, float64(b2i(unbiased)))
}

// Norm is the p-norm over dims (every dim when none).
func (t *Tensor) Norm(p float64, keep bool, dims ...int64) *Tensor {
	return t.reduce("Norm", C.KK_NORM, dims, keep, p)
}

// All and Any reduce a boolean tensor over every element.
func (t *Tensor) All() bool { return t.reduce("All", C.KK_ALL, nil, false, 0).Item() != 0 }
func (t *Tensor) Any() bool { return t.reduce("Any", C.KK_ANY, nil, false, 0).Item() != 0 }

// ---- shape ----

func (t *Tensor) shaped(op string, f func(C.kk_tensor, *C.int64_t, C.int, *C.kk_tensor, **C.char), shape []int64) *Tensor {
	p, n := shapeArg(shape)
	var out C.kk_tensor
	var err *C.char
	f(t.handle(op), p, n, &out, &err)
	return wrap(op, out, err)
}

// View reshapes without copying (fails if the memory layout does not allow it); -1 infers a size.
func (t *Tensor) View(shape ...int64) *Tensor {
	return t.shaped("View", func(h C.kk_tensor, p *C.int64_t, n C.int, o *C.kk_tensor, e **C.char) { C.kk_reshape(h, p, n, 1, o, e) }, shape)
}

// Reshape reshapes, copying when it must.
func (t *Tensor) Reshape(shape ...int64) *Tensor {
	return t.shaped("Reshape", func(h C.kk_tensor, p *C.int64_t, n C.int, o *C.kk_tensor, e **C.char) { C.kk_reshape(h, p, n, 0, o, e) }, shape)
}

// Flip reverses the order of elements along dims (a copy, as torch.flip).
func (t *Tensor) Flip(dims ...int64) *Tensor {
	return t.shaped("Flip", func(h C.kk_tensor, p *C.int64_t, n C.int, o *C.kk_tensor, e **C.char) { C.kk_flip(h, p, n, o, e) }, dims)
}

// Permute reorders the dimensions.
func (t *Tensor) Permute(dims ...int64) *Tensor {
	return t.shaped("Permute", func(h C.kk_tensor, p *C.int64_t, n C.int, o *C.kk_tensor, e **C.char) { C.kk_permute(h, p, n, o, e) }, dims)
}

// Expand broadcasts size-1 dimensions to shape without copying (-1 keeps a size).
func (t *Tensor) Expand(shape ...int64) *Tensor {
	return t.shaped("Expand", func(h C.kk_tensor, p *C.int64_t, n C.int, o *C.kk_tensor, e **C.char) { C.kk_expand(h, p, n, o, e) }, shape)
}

// Repeat tiles t reps times along each dimension.
func (t *Tensor) Repeat(reps ...int64) *Tensor {
	return t.shaped("Repeat", func(h C.kk_tensor, p *C.int64_t, n C.int, o *C.kk_tensor, e **C.char) { C.kk_repeat(h, p, n, o, e) }, reps)
}

// Transpose swaps two dimensions.
func (t *Tensor) Transpose(d0, d1 int64) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_transpose(t.handle("Transpose"), C.int64_t(d0), C.int64_t(d1), &out, &err)
	return wrap("Transpose", out, err)
}

// Squeeze drops every size-1 dimension; SqueezeDim drops dim if its size is 1.
func (t *Tensor) Squeeze() *Tensor { return t.squeeze(0, true) }
func (t *Tensor) SqueezeDim(dim int64) *Tensor {
	return t.squeeze(dim, false)
}

func (t *Tensor) squeeze(dim int64, all bool) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_squeeze(t.handle("Squeeze"), C.int64_t(dim), b2i(all), &out, &err)
	return wrap("Squeeze", out, err)
}

// Unsqueeze inserts a size-1 dimension at dim.
func (t *Tensor) Unsqueeze(dim int64) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_unsqueeze(t.handle("Unsqueeze"), C.int64_t(dim), &out, &err)
	return wrap("Unsqueeze", out, err)
}

// Flatten merges dimensions start..end (inclusive; -1 is the last).
func (t *Tensor) Flatten(start, end int64) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_flatten(t.handle("Flatten"), C.int64_t(start), C.int64_t(end), &out, &err)
	return wrap("Flatten", out, err)
}

// Narrow is the slice [start, start+length) of dim, sharing storage.
func (t *Tensor) Narrow(dim, start, length int64) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_narrow(t.handle("Narrow"), C.int64_t(dim), C.int64_t(start), C.int64_t(length), &out, &err)
	return wrap("Narrow", out, err)
}

func handles(op string, ts []*Tensor) []C.kk_tensor {
	hs := make([]C.kk_tensor, len(ts))
	for i, t := range ts {
		hs[i] = t.handle(op)
	}
	return hs
}

func joinTensors(op string, ts []*Tensor, dim int64, stack bool) *Tensor {
	if len(ts) == 0 {
		fail(op, "no tensors")
	}
	hs := handles(op, ts)
	var out C.kk_tensor
	var err *C.char
	C.kk_cat(&hs[0], C.int(len(hs)), C.int64_t(dim), b2i(stack), &out, &err)
	return wrap(op, out, err)
}

// Cat joins tensors along an existing dimension.
func Cat(ts []*Tensor, dim int64) *Tensor { return joinTensors("Cat", ts, dim, false) }

// Stack joins tensors along a new dimension.
func Stack(ts []*Tensor, dim int64) *Tensor { return joinTensors("Stack", ts, dim, true) }

// IndexSelect picks the entries idx (int64) along dim.
func (t *Tensor) IndexSelect(dim int64, idx *Tensor) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_index_select(t.handle("IndexSelect"), C.int64_t(dim), idx.handle("IndexSelect"), &out, &err)
	return wrap("IndexSelect", out, err)
}

// Gather picks, along dim, the element idx names at each position.
func (t *Tensor) Gather(dim int64, idx *Tensor) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_gather(t.handle("Gather"), C.int64_t(dim), idx.handle("Gather"), &out, &err)
	return wrap("Gather", out, err)
}

// MaskedFill sets the elements where mask is true to v.
func (t *Tensor) MaskedFill(mask *Tensor, v float64) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_masked_fill(t.handle("MaskedFill"), mask.handle("MaskedFill"), C.double(v), &out, &err)
	return wrap("MaskedFill", out, err)
}

// KthValue is the k-th smallest value (k from 1) along dim.
func (t *Tensor) KthValue(k, dim int64, keep bool) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_kthvalue(t.handle("KthValue"), C.int64_t(k), C.int64_t(dim), b2i(keep), &out, &err)
	return wrap("KthValue", out, err)
}

// OneHot turns int64 class indices into int64 one-hot rows of width classes.
func (t *Tensor) OneHot(classes int64) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_one_hot(t.handle("OneHot"), C.int64_t(classes), &out, &err)
	return wrap("OneHot", out, err)
}

// Idx is one entry of an Index expression, as in Python's t[...].
type Idx struct {
	kind    C.int
	a, b, c int64
	t       *Tensor
}

// Open marks an open slice bound (t[:3] is Slice(Open, 3, 1)).
const Open = math.MinInt64

var (
	All      = Idx{kind: C.KK_IDX_SLICE, a: Open, b: Open, c: 1} // ":"
	Ellipsis = Idx{kind: C.KK_IDX_ELLIPSIS}                      // "..."
	NewAxis  = Idx{kind: C.KK_IDX_NEWAXIS}                       // "None"
)

// At is one position (dropping the dimension); negative counts from the end.
func At(i int64) Idx { return Idx{kind: C.KK_IDX_INT, a: i} }

// Slice is start:stop:step; use Open for a missing bound.
func Slice(start, stop, step int64) Idx { return Idx{kind: C.KK_IDX_SLICE, a: start, b: stop, c: step} }

// Tensors indexes with an int64 index tensor or a boolean mask.
func Tensors(t *Tensor) Idx { return Idx{kind: C.KK_IDX_TENSOR, t: t} }

func indexArgs(op string, idx []Idx) ([]C.int, []C.int64_t, []C.kk_tensor) {
	kinds := make([]C.int, len(idx))
	ints := make([]C.int64_t, 3*len(idx))
	ts := make([]C.kk_tensor, len(idx))
	for i, x := range idx {
		kinds[i] = x.kind
		ints[3*i], ints[3*i+1], ints[3*i+2] = C.int64_t(x.a), C.int64_t(x.b), C.int64_t(x.c)
		if x.kind == C.KK_IDX_TENSOR {
			ts[i] = x.t.handle(op)
		}
	}
	return kinds, ints, ts
}

// Index is t[idx...].
func (t *Tensor) Index(idx ...Idx) *Tensor {
	if len(idx) == 0 {
		fail("Index", "no indices")
	}
	kinds, ints, ts := indexArgs("Index", idx)
	var out C.kk_tensor
	var err *C.char
	C.kk_index(t.handle("Index"), C.int(len(idx)), &kinds[0], &ints[0], &ts[0], &out, &err)
	return wrap("Index", out, err)
}

// IndexPut is t[idx...] = values, in place; it returns t.
func (t *Tensor) IndexPut(values *Tensor, idx ...Idx) *Tensor {
	if len(idx) == 0 {
		fail("IndexPut", "no indices")
	}
	kinds, ints, ts := indexArgs("IndexPut", idx)
	var err *C.char
	C.kk_index_put_(t.handle("IndexPut"), C.int(len(idx)), &kinds[0], &ints[0], &ts[0], values.handle("IndexPut"), &err)
	check("IndexPut", err)
	return t
}

func b2i(b bool) C.int {
	if b {
		return 1
	}
	return 0
}
