// Package nn holds the building blocks the models are written in: a
// registry of named tensors whose names match the equivalent PyTorch
// module's state_dict, and layers initialised as PyTorch initialises them.
package nn

import (
	"fmt"
	"math"
	"sort"

	"kakusan/torch"
)

// Named is a tensor with its state_dict name.
type Named struct {
	Name string
	T    *torch.Tensor
}

// Module collects a model's parameters (trainable) and buffers (state such
// as batch-norm running statistics), in registration order.
type Module struct {
	params, buffers []Named
	training        bool
}

// NewModule starts an empty module in training mode.
func NewModule() *Module { return &Module{training: true} }

// Param registers t (kept, requiring gradients) under name.
func (m *Module) Param(name string, t *torch.Tensor) *torch.Tensor {
	m.params = append(m.params, Named{name, torch.Param(t)})
	return t
}

// Buffer registers t (kept, no gradients) under name.
func (m *Module) Buffer(name string, t *torch.Tensor) *torch.Tensor {
	m.buffers = append(m.buffers, Named{name, t.Keep()})
	return t
}

// Params are the trainable tensors.
func (m *Module) Params() []Named { return m.params }

// Buffers are the non-trainable state tensors.
func (m *Module) Buffers() []Named { return m.buffers }

// ParamTensors is Params without the names, for optimizers.
func (m *Module) ParamTensors() []*torch.Tensor {
	out := make([]*torch.Tensor, len(m.params))
	for i, p := range m.params {
		out[i] = p.T
	}
	return out
}

// StateDict is every parameter and buffer by name.
func (m *Module) StateDict() map[string]*torch.Tensor {
	out := map[string]*torch.Tensor{}
	for _, n := range append(append([]Named(nil), m.params...), m.buffers...) {
		out[n.Name] = n.T
	}
	return out
}

// Load copies tensors into the module's parameters and buffers, strictly:
// every name must be present with the same shape, and extra names other
// than those with one of the ignored prefixes are an error. The first
// problem is named.
func (m *Module) Load(sd map[string]*torch.Tensor, ignore ...string) error {
	own := m.StateDict()
	names := make([]string, 0, len(own))
	for name := range own {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		src, ok := sd[name]
		if !ok {
			return fmt.Errorf("missing tensor %q", name)
		}
		dst := own[name]
		if a, b := src.Shape(), dst.Shape(); !sameShape(a, b) {
			return fmt.Errorf("tensor %q has shape %v, the model wants %v", name, a, b)
		}
	}
	var extra []string
outer:
	for name := range sd {
		if _, ok := own[name]; ok {
			continue
		}
		for _, p := range ignore {
			if len(name) >= len(p) && name[:len(p)] == p {
				continue outer
			}
		}
		extra = append(extra, name)
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return fmt.Errorf("unexpected tensor %q (not part of this model)", extra[0])
	}
	torch.NoGrad(func() {
		for _, name := range names {
			own[name].CopyFrom(sd[name])
		}
	})
	return nil
}

func sameShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// SetTraining switches train/eval behaviour (batch norm, dropout).
func (m *Module) SetTraining(on bool) { m.training = on }

// Training reports the mode.
func (m *Module) Training() bool { return m.training }

// NumParams counts trainable scalars.
func (m *Module) NumParams() int64 {
	var n int64
	for _, p := range m.params {
		n += p.T.Numel()
	}
	return n
}

// Free releases every parameter and buffer.
func (m *Module) Free() {
	for _, n := range m.params {
		n.T.Free()
	}
	for _, n := range m.buffers {
		n.T.Free()
	}
}

// uniform draws U(-bound, bound) of the given shape.
func uniform(shape []int64, bound float64, dev torch.Device) *torch.Tensor {
	return torch.Rand(shape, dev).MulScalar(2 * bound).SubScalar(bound)
}

// Linear is torch.nn.Linear: y = x Wᵀ + b.
type Linear struct{ W, B *torch.Tensor }

// NewLinear registers name.weight (out×in) and name.bias, initialised as
// PyTorch does: U(-1/√in, 1/√in) for both.
func NewLinear(m *Module, name string, in, out int64, dev torch.Device) *Linear {
	bound := 1 / math.Sqrt(float64(in))
	var l Linear
	torch.NoGrad(func() {
		l.W = m.Param(name+".weight", uniform([]int64{out, in}, bound, dev))
		l.B = m.Param(name+".bias", uniform([]int64{out}, bound, dev))
	})
	return &l
}

// Forward applies the layer.
func (l *Linear) Forward(x *torch.Tensor) *torch.Tensor { return torch.Linear(x, l.W, l.B) }
