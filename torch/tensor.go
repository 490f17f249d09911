package torch

/*
#include <stdlib.h>
#include "kakusan.h"
*/
import "C"

import (
	"fmt"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"
)

// DType is a tensor element type. The zero value means "default" (Float32)
// where an option is expected.
type DType int

const (
	Float32 DType = iota + 1
	Float64
	BFloat16
	Float16
	Int64
	Int32
	Uint8
	Bool
)

var dtypes = []struct {
	code int // c10::ScalarType
	name string
	size int
}{
	{-1, "default", 0},
	{6, "float32", 4},
	{7, "float64", 8},
	{15, "bfloat16", 2},
	{5, "float16", 2},
	{4, "int64", 8},
	{3, "int32", 4},
	{0, "uint8", 1},
	{11, "bool", 1},
}

func (d DType) valid() bool { return d > 0 && int(d) < len(dtypes) }

func (d DType) String() string {
	if d == 0 || d.valid() {
		return dtypes[d].name
	}
	return "DType(" + strconv.Itoa(int(d)) + ")"
}

// Size is the number of bytes of one element.
func (d DType) Size() int {
	if !d.valid() {
		return 0
	}
	return dtypes[d].size
}

// IsFloat reports whether d is a floating-point type.
func (d DType) IsFloat() bool { return d >= Float32 && d <= Float16 }

func (d DType) code(op string) C.int {
	if d == 0 {
		d = Float32
	}
	if !d.valid() {
		fail(op, "unknown dtype %d", int(d))
	}
	return C.int(dtypes[d].code)
}

func dtypeFromCode(code int) DType {
	for i, d := range dtypes {
		if i > 0 && d.code == code {
			return DType(i)
		}
	}
	return 0
}

// ParseDType parses names such as "float32", "bf16", "fp16", "int64".
func ParseDType(s string) (DType, error) {
	switch strings.ToLower(s) {
	case "float32", "float", "fp32", "f32":
		return Float32, nil
	case "float64", "double", "fp64", "f64":
		return Float64, nil
	case "bfloat16", "bf16":
		return BFloat16, nil
	case "float16", "half", "fp16", "f16":
		return Float16, nil
	case "int64", "long", "i64":
		return Int64, nil
	case "int32", "int", "i32":
		return Int32, nil
	case "uint8", "byte", "u8":
		return Uint8, nil
	case "bool":
		return Bool, nil
	}
	return 0, fmt.Errorf("unknown dtype %q (want float32, float64, bfloat16, float16, int64, int32, uint8 or bool)", s)
}

// DeviceType is CPU or CUDA.
type DeviceType int

const (
	CPUDevice DeviceType = iota
	CUDADevice
)

// Device is where a tensor lives. The zero value is the CPU.
type Device struct {
	Type  DeviceType
	Index int
}

// CPU is the host.
var CPU = Device{}

// CUDA is the i-th CUDA device.
func CUDA(i int) Device { return Device{CUDADevice, i} }

func (d Device) String() string {
	if d.Type == CUDADevice {
		return "cuda:" + strconv.Itoa(d.Index)
	}
	return "cpu"
}

// ParseDevice parses "cpu", "cuda", "cuda:N" or "auto" (CUDA when available).
func ParseDevice(s string) (Device, error) {
	switch s {
	case "cpu":
		return CPU, nil
	case "auto", "":
		if CUDAAvailable() {
			return CUDA(0), nil
		}
		return CPU, nil
	case "cuda":
		return checkCUDA(s, 0)
	}
	if rest, ok := strings.CutPrefix(s, "cuda:"); ok {
		i, err := strconv.Atoi(rest)
		if err != nil || i < 0 {
			return CPU, fmt.Errorf("unknown device %q (want cpu, cuda, cuda:N or auto)", s)
		}
		return checkCUDA(s, i)
	}
	return CPU, fmt.Errorf("unknown device %q (want cpu, cuda, cuda:N or auto)", s)
}

func checkCUDA(s string, i int) (Device, error) {
	if !CUDAAvailable() {
		return CPU, fmt.Errorf("device %q: CUDA is not available (CPU-only shim or no GPU)", s)
	}
	if n := CUDADeviceCount(); i >= n {
		return CPU, fmt.Errorf("device %q: only %d CUDA device(s)", s, n)
	}
	return CUDA(i), nil
}

// Option is a DType or a Device, given to creation functions.
type Option interface{ apply(*options) }

type options struct {
	dtype  DType
	device Device
}

func (d DType) apply(o *options)  { o.dtype = d }
func (d Device) apply(o *options) { o.device = d }

func opts(o []Option) options {
	r := options{dtype: Float32}
	for _, x := range o {
		x.apply(&r)
	}
	if r.dtype == 0 {
		r.dtype = Float32
	}
	return r
}

// Tensor is a handle to a libtorch tensor. It belongs to the scope that was
// innermost when it was made, unless kept.
type Tensor struct {
	h     C.kk_tensor
	scope *Scope // nil once kept or freed
}

var leaked atomic.Int64

// LeakedTensors counts kept tensors the garbage collector found unreachable
// without a Free: a leak report, not a release mechanism.
func LeakedTensors() int64 { return leaked.Load() }

func (t *Tensor) handle(op string) C.kk_tensor {
	if t == nil {
		fail(op, "nil tensor")
	}
	if t.h == nil {
		fail(op, "use of a freed tensor (its scope closed, or Free was called)")
	}
	return t.h
}

// opt returns an optional tensor's handle, NULL for nil.
func (t *Tensor) opt(op string) C.kk_tensor {
	if t == nil {
		return nil
	}
	return t.handle(op)
}

func wrap(op string, h C.kk_tensor, err *C.char) *Tensor {
	check(op, err)
	if interruptedNow() {
		C.kk_free(h)
		fail(op, MsgInterrupted)
	}
	s := current
	if s == nil {
		C.kk_free(h)
		fail(op, "no open scope: call torch from inside torch.Do")
	}
	t := &Tensor{h: h, scope: s}
	s.tensors = append(s.tensors, t)
	return t
}

// Keep takes t out of its scope: it lives until Free. Use it for
// parameters, buffers and optimizer state.
func (t *Tensor) Keep() *Tensor {
	t.handle("Keep")
	if t.scope != nil {
		t.scope = nil
		runtime.SetFinalizer(t, func(t *Tensor) {
			if t.h != nil {
				leaked.Add(1)
			}
		})
	}
	return t
}

// Free releases t now. Freeing twice is a no-op.
func (t *Tensor) Free() {
	if t == nil || t.h == nil {
		return
	}
	C.kk_free(t.h)
	t.h = nil
	t.scope = nil
}

// Freed reports whether t has been released.
func (t *Tensor) Freed() bool { return t == nil || t.h == nil }

// Scope owns the tensors made while it is the innermost open scope.
type Scope struct {
	parent  *Scope
	tensors []*Tensor
	closed  bool
}

var current *Scope // touched only on the torch thread

// NewScope opens a scope nested in the current one. Close it (defer s.Close()).
func NewScope() *Scope {
	if !onThread() {
		fail("NewScope", "called off the torch thread (use torch.Do)")
	}
	s := &Scope{parent: current}
	current = s
	return s
}

// Close frees every tensor the scope still owns, closing inner scopes left
// open first. Closing twice is a no-op.
func (s *Scope) Close() {
	if s.closed {
		return
	}
	for current != nil && current != s {
		current.Close()
	}
	handles := make([]C.kk_tensor, 0, len(s.tensors))
	for _, t := range s.tensors {
		if t.scope == s && t.h != nil {
			handles = append(handles, t.h)
			t.h = nil
			t.scope = nil
		}
	}
	if len(handles) > 0 {
		C.kk_free_many(&handles[0], C.int(len(handles)))
	}
	s.tensors = nil
	s.closed = true
	current = s.parent
}

// Escape moves t into the enclosing scope, so it outlives s. With no
// enclosing scope it is kept.
func (s *Scope) Escape(t *Tensor) *Tensor {
	if s.closed {
		fail("Escape", "scope is closed")
	}
	t.handle("Escape")
	if t.scope != s {
		return t
	}
	if s.parent == nil {
		return t.Keep()
	}
	t.scope = s.parent
	s.parent.tensors = append(s.parent.tensors, t)
	return t
}

// Scoped runs f inside a new scope: every tensor f makes and does not keep
// or escape is freed when f returns.
func Scoped(f func()) {
	s := NewScope()
	defer s.Close()
	f()
}

// ScopedValue is Scoped for a block that produces one tensor, which outlives it.
func ScopedValue(f func() *Tensor) *Tensor {
	s := NewScope()
	defer s.Close()
	return s.Escape(f())
}

// ---- creation ----

func shapeArg(shape []int64) (*C.int64_t, C.int) {
	if len(shape) == 0 {
		return nil, 0
	}
	return (*C.int64_t)(unsafe.Pointer(&shape[0])), C.int(len(shape))
}

func numel(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// Full returns a tensor of the given shape filled with v.
func Full(shape []int64, v float64, o ...Option) *Tensor {
	op := opts(o)
	p, n := shapeArg(shape)
	var out C.kk_tensor
	var err *C.char
	C.kk_full(p, n, C.double(v), op.dtype.code("Full"), C.int(op.device.Type), C.int(op.device.Index), &out, &err)
	return wrap("Full", out, err)
}

func create(op string, kind C.int, shape []int64, o []Option) *Tensor {
	x := opts(o)
	p, n := shapeArg(shape)
	var out C.kk_tensor
	var err *C.char
	C.kk_random(kind, p, n, x.dtype.code(op), C.int(x.device.Type), C.int(x.device.Index), &out, &err)
	return wrap(op, out, err)
}

// Zeros, Ones, Rand (uniform on [0,1)), Randn (standard normal) and Empty
// make tensors of the given shape (float32 on the CPU unless told).
func Zeros(shape []int64, o ...Option) *Tensor { return create("Zeros", C.KK_ZEROS, shape, o) }
func Ones(shape []int64, o ...Option) *Tensor  { return create("Ones", C.KK_ONES, shape, o) }
func Rand(shape []int64, o ...Option) *Tensor  { return create("Rand", C.KK_RAND, shape, o) }
func Randn(shape []int64, o ...Option) *Tensor { return create("Randn", C.KK_RANDN, shape, o) }
func Empty(shape []int64, o ...Option) *Tensor { return create("Empty", C.KK_EMPTY, shape, o) }

// Scalar is a 0-dimensional tensor holding v.
func Scalar(v float64, o ...Option) *Tensor { return Full(nil, v, o...) }

// RandInt draws int64 values uniformly from [low, high).
func RandInt(low, high int64, shape []int64, o ...Option) *Tensor {
	x := opts(o)
	p, n := shapeArg(shape)
	var out C.kk_tensor
	var err *C.char
	C.kk_randint(C.int64_t(low), C.int64_t(high), p, n, C.int(x.device.Type), C.int(x.device.Index), &out, &err)
	return wrap("RandInt", out, err)
}

// Arange is start, start+step, ... below end (float32 unless told).
func Arange(start, end, step float64, o ...Option) *Tensor {
	x := opts(o)
	var out C.kk_tensor
	var err *C.char
	C.kk_arange(C.double(start), C.double(end), C.double(step), x.dtype.code("Arange"), C.int(x.device.Type), C.int(x.device.Index), &out, &err)
	return wrap("Arange", out, err)
}

// Linspace is steps evenly spaced values from start to end inclusive.
func Linspace(start, end float64, steps int64, o ...Option) *Tensor {
	x := opts(o)
	var out C.kk_tensor
	var err *C.char
	C.kk_linspace(C.double(start), C.double(end), C.int64_t(steps), x.dtype.code("Linspace"), C.int(x.device.Type), C.int(x.device.Index), &out, &err)
	return wrap("Linspace", out, err)
}

// RandnRows draws len(seeds) rows of standard normals of rowShape on the
// CPU, row i from a generator of its own seeded with seeds[i], so a row's
// values depend on its seed alone, not on the other rows: per-image noise
// that batches and shards cannot change.
func RandnRows(seeds []uint64, rowShape []int64, o ...Option) *Tensor {
	if len(seeds) == 0 {
		fail("RandnRows", "no seeds")
	}
	x := opts(o)
	p, n := shapeArg(rowShape)
	var out C.kk_tensor
	var err *C.char
	C.kk_randn_rows((*C.uint64_t)(unsafe.Pointer(&seeds[0])), C.int(len(seeds)), p, n, x.dtype.code("RandnRows"), &out, &err)
	return wrap("RandnRows", out, err)
}

func like(op string, kind C.int, t *Tensor) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_like(kind, t.handle(op), &out, &err)
	return wrap(op, out, err)
}

// ZerosLike, OnesLike, RandLike and RandnLike match t's shape, dtype and device.
func ZerosLike(t *Tensor) *Tensor { return like("ZerosLike", C.KK_ZEROS, t) }
func OnesLike(t *Tensor) *Tensor  { return like("OnesLike", C.KK_ONES, t) }
func RandLike(t *Tensor) *Tensor  { return like("RandLike", C.KK_RAND, t) }
func RandnLike(t *Tensor) *Tensor { return like("RandnLike", C.KK_RANDN, t) }

// Element is a Go type that maps to a tensor dtype.
type Element interface {
	~float32 | ~float64 | ~int64 | ~int32 | ~uint8 | ~bool
}

func elementDType[E Element]() DType {
	switch reflect.TypeFor[E]().Kind() {
	case reflect.Float32:
		return Float32
	case reflect.Float64:
		return Float64
	case reflect.Int64:
		return Int64
	case reflect.Int32:
		return Int32
	case reflect.Uint8:
		return Uint8
	}
	return Bool
}

// FromSlice copies data into a new tensor of the given shape (1-D when shape
// is nil). A DType option converts after the copy; a Device option moves it.
func FromSlice[E Element](data []E, shape []int64, o ...Option) *Tensor {
	if shape == nil {
		shape = []int64{int64(len(data))}
	}
	if numel(shape) != int64(len(data)) {
		fail("FromSlice", "%d values do not fill shape %v", len(data), shape)
	}
	var e E
	size := int(unsafe.Sizeof(e))
	var b []byte
	if len(data) > 0 {
		b = unsafe.Slice((*byte)(unsafe.Pointer(&data[0])), len(data)*size)
	}
	t := FromBytes(b, elementDType[E](), shape, opts(o).device)
	if want := opts(o); hasDType(o) && want.dtype != t.DType() {
		return t.To(want.dtype)
	}
	return t
}

func hasDType(o []Option) bool {
	for _, x := range o {
		if _, ok := x.(DType); ok {
			return true
		}
	}
	return false
}

// FromBytes makes a tensor from raw little-endian element bytes.
func FromBytes(b []byte, d DType, shape []int64, dev Device) *Tensor {
	if d.valid() && int64(len(b)) != numel(shape)*int64(d.Size()) {
		fail("FromBytes", "%d bytes do not fill shape %v of %s", len(b), shape, d)
	}
	p, n := shapeArg(shape)
	var data unsafe.Pointer
	if len(b) > 0 {
		data = unsafe.Pointer(&b[0])
	}
	var out C.kk_tensor
	var err *C.char
	C.kk_from_data(data, p, n, d.code("FromBytes"), C.int(dev.Type), C.int(dev.Index), &out, &err)
	return wrap("FromBytes", out, err)
}

// Bytes copies t's elements to host memory as raw little-endian bytes.
func (t *Tensor) Bytes() []byte {
	b := make([]byte, t.Numel()*int64(t.DType().Size()))
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	var err *C.char
	C.kk_copy_data(t.handle("Bytes"), p, C.int64_t(len(b)), &err)
	check("Bytes", err)
	return b
}

// Values copies t's elements into a new Go slice, converting the dtype to
// E's when they differ.
func Values[E Element](t *Tensor) []E {
	want := elementDType[E]()
	src := t
	if t.DType() != want {
		src = t.To(want)
		defer src.Free()
	}
	out := make([]E, src.Numel())
	if len(out) == 0 {
		return out
	}
	var err *C.char
	var e E
	C.kk_copy_data(src.handle("Values"), unsafe.Pointer(&out[0]), C.int64_t(len(out)*int(unsafe.Sizeof(e))), &err)
	check("Values", err)
	return out
}

// Float32s, Float64s and Int64s are Values for the common types.
func (t *Tensor) Float32s() []float32 { return Values[float32](t) }
func (t *Tensor) Float64s() []float64 { return Values[float64](t) }
func (t *Tensor) Int64s() []int64     { return Values[int64](t) }

// Item is the value of a one-element tensor.
func (t *Tensor) Item() float64 {
	var err *C.char
	v := C.kk_item(t.handle("Item"), &err)
	check("Item", err)
	return float64(v)
}

// ---- metadata ----

// Dim is the number of dimensions.
func (t *Tensor) Dim() int {
	var err *C.char
	d := C.kk_dim(t.handle("Dim"), &err)
	check("Dim", err)
	return int(d)
}

// Shape is the size of each dimension.
func (t *Tensor) Shape() []int64 {
	s := make([]int64, t.Dim())
	if len(s) == 0 {
		return s
	}
	var err *C.char
	C.kk_shape(t.h, (*C.int64_t)(unsafe.Pointer(&s[0])), &err)
	check("Shape", err)
	return s
}

// Size is the size of dimension d (negative counts from the end).
func (t *Tensor) Size(d int) int64 {
	s := t.Shape()
	if d < 0 {
		d += len(s)
	}
	if d < 0 || d >= len(s) {
		fail("Size", "dimension %d out of range for shape %v", d, s)
	}
	return s[d]
}

// Numel is the number of elements.
func (t *Tensor) Numel() int64 { return numel(t.Shape()) }

// DType is the element type.
func (t *Tensor) DType() DType {
	var err *C.char
	c := C.kk_dtype(t.handle("DType"), &err)
	check("DType", err)
	return dtypeFromCode(int(c))
}

// Device is where t lives.
func (t *Tensor) Device() Device {
	var dev, idx C.int
	var err *C.char
	C.kk_device(t.handle("Device"), &dev, &idx, &err)
	check("Device", err)
	return Device{DeviceType(dev), int(idx)}
}

func (t *Tensor) String() string {
	if t == nil || t.h == nil {
		return "Tensor(freed)"
	}
	return fmt.Sprintf("Tensor(%v, %s, %s)", t.Shape(), t.DType(), t.Device())
}

// ---- conversion ----

// To converts t to a dtype and/or device; with nothing to change it returns
// a new handle to the same storage.
func (t *Tensor) To(o ...Option) *Tensor {
	x := options{dtype: t.DType(), device: t.Device()}
	for _, v := range o {
		v.apply(&x)
	}
	var out C.kk_tensor
	var err *C.char
	C.kk_to(t.handle("To"), x.dtype.code("To"), C.int(x.device.Type), C.int(x.device.Index), 0, &out, &err)
	return wrap("To", out, err)
}

func (t *Tensor) unaryHandle(op string, f func(C.kk_tensor, *C.kk_tensor, **C.char)) *Tensor {
	var out C.kk_tensor
	var err *C.char
	f(t.handle(op), &out, &err)
	return wrap(op, out, err)
}

// Contiguous, Clone and Detach are libtorch's.
func (t *Tensor) Contiguous() *Tensor {
	return t.unaryHandle("Contiguous", func(h C.kk_tensor, o *C.kk_tensor, e **C.char) { C.kk_contiguous(h, o, e) })
}
func (t *Tensor) Clone() *Tensor {
	return t.unaryHandle("Clone", func(h C.kk_tensor, o *C.kk_tensor, e **C.char) { C.kk_clone(h, o, e) })
}
func (t *Tensor) Detach() *Tensor {
	return t.unaryHandle("Detach", func(h C.kk_tensor, o *C.kk_tensor, e **C.char) { C.kk_detach(h, o, e) })
}

// AllClose reports |t - o| <= atol + rtol*|o| element-wise.
func (t *Tensor) AllClose(o *Tensor, rtol, atol float64) bool {
	var err *C.char
	r := C.kk_allclose(t.handle("AllClose"), o.handle("AllClose"), C.double(rtol), C.double(atol), &err)
	check("AllClose", err)
	return r != 0
}
