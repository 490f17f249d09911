package torch

/*
#include "kakusan.h"
*/
import "C"

// SetRequiresGrad turns gradient tracking on or off for a leaf tensor; it returns t.
func (t *Tensor) SetRequiresGrad(on bool) *Tensor {
	var err *C.char
	C.kk_set_requires_grad(t.handle("SetRequiresGrad"), b2i(on), &err)
	check("SetRequiresGrad", err)
	return t
}

// RequiresGrad reports whether gradients flow to t.
func (t *Tensor) RequiresGrad() bool {
	var err *C.char
	r := C.kk_requires_grad(t.handle("RequiresGrad"), &err)
	check("RequiresGrad", err)
	return r != 0
}

// Backward accumulates d(t)/d(leaf) into every leaf's gradient; t must be a scalar.
func (t *Tensor) Backward() { t.BackwardWith(nil, false) }

// BackwardWith backpropagates the given output gradient (nil for a scalar),
// keeping the graph when retain is true.
func (t *Tensor) BackwardWith(grad *Tensor, retain bool) {
	var err *C.char
	C.kk_backward(t.handle("Backward"), grad.opt("Backward"), b2i(retain), &err)
	check("Backward", err)
}

// Grad is t's accumulated gradient, or nil when it has none. The result is a
// new handle sharing the gradient's storage.
func (t *Tensor) Grad() *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_grad(t.handle("Grad"), &out, &err)
	check("Grad", err)
	if out == nil {
		return nil
	}
	return wrap("Grad", out, nil)
}

// ZeroGrad fills t's gradient with zeros; ClearGrad drops it (set to none).
func (t *Tensor) ZeroGrad()  { t.clearGrad(false) }
func (t *Tensor) ClearGrad() { t.clearGrad(true) }

func (t *Tensor) clearGrad(none bool) {
	var err *C.char
	C.kk_clear_grad(t.handle("ClearGrad"), b2i(none), &err)
	check("ClearGrad", err)
}

// NoGrad runs f with gradient recording off, restoring the mode afterwards.
func NoGrad(f func()) {
	prev := C.kk_set_grad_enabled(0)
	defer C.kk_set_grad_enabled(prev)
	f()
}

// GradEnabled reports whether operations record gradients.
func GradEnabled() bool {
	prev := C.kk_set_grad_enabled(1)
	C.kk_set_grad_enabled(prev)
	return prev != 0
}

// Param makes a trainable parameter from t: kept (outside scopes) and
// requiring gradients.
func Param(t *Tensor) *Tensor { return t.Keep().SetRequiresGrad(true) }
