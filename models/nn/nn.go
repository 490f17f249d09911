// Package nn holds the building blocks the models are written in: a
// registry of named tensors whose names match the equivalent PyTorch
// module's state_dict, and layers initialised as PyTorch initialises them.
package nn

import (
	"fmt"
	"math"
	"slices"
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
	frozen          []Named // saved and loaded with the module, never trained: frozen modules' tensors (Freeze), constants (Constant)
	training        bool
	sync            *torch.Group // batch norm's statistics over this group in training; nil: this process's batch
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

// Freeze makes sub part of m under prefix (its tensors are saved and
// loaded with m's, as "prefix" + their names) without training it: its
// parameters stop requiring gradients and are neither m's parameters nor
// its buffers, so optimizers, moving averages and the gradients'
// all-reduce leave them alone (a data-parallel run broadcasts them once,
// with the starting state). m takes sub over: m.Free frees it.
func (m *Module) Freeze(prefix string, sub *Module) {
	for _, n := range sub.all() {
		n.T.SetRequiresGrad(false)
		m.frozen = append(m.frozen, Named{prefix + n.Name, n.T})
	}
	sub.training = false
}

// Constant registers t (kept, no gradients) under name as a constant the
// model measured on its data (a latent scale): saved and loaded with the
// module, but, like a frozen module's tensors, neither trained nor
// averaged nor all-reduced; a data-parallel run broadcasts it once, with
// the starting state.
func (m *Module) Constant(name string, t *torch.Tensor) *torch.Tensor {
	m.frozen = append(m.frozen, Named{name, t.Keep()})
	return t
}

// all is every tensor of the module: parameters, buffers, frozen.
func (m *Module) all() []Named {
	return append(append(append([]Named(nil), m.params...), m.buffers...), m.frozen...)
}

// Frozen are the tensors of the modules frozen into m (Freeze) and its
// constants (Constant).
func (m *Module) Frozen() []Named { return m.frozen }

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

// StateDict is every parameter, buffer and frozen tensor by name.
func (m *Module) StateDict() map[string]*torch.Tensor {
	out := map[string]*torch.Tensor{}
	for _, n := range m.all() {
		out[n.Name] = n.T
	}
	return out
}

// NonFinite names the first parameter or buffer, in registration order,
// that holds NaN or an infinity ("" when all are finite): a training run
// checks it before it writes a checkpoint, so a diverged model is never
// saved as a good one. It reads one value per tensor from the device.
func (m *Module) NonFinite() string {
	bad := ""
	torch.NoGrad(func() {
		for _, n := range m.all() {
			if n.T.DType().IsFloat() && !n.T.IsFinite().All() {
				bad = n.Name
				return
			}
		}
	})
	return bad
}

// Load copies tensors into the module's parameters and buffers, strictly:
// every name must be present with the same shape, floating point where the
// module's is (and the other way round) and, if floating point, finite;
// extra names other than those with one of the ignored prefixes are an
// error. The first problem is named, and nothing is copied unless all is
// well.
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
		if a, b := src.Shape(), dst.Shape(); !slices.Equal(a, b) {
			return fmt.Errorf("tensor %q has shape %v, the model wants %v", name, a, b)
		}
		if a, b := src.DType(), dst.DType(); a.IsFloat() != b.IsFloat() {
			return fmt.Errorf("tensor %q is %s, the model wants %s", name, a, b)
		}
		if src.DType().IsFloat() && !src.IsFinite().All() {
			return fmt.Errorf("tensor %q holds NaN or infinite values", name)
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

// SetTraining switches train/eval behaviour (batch norm, dropout).
func (m *Module) SetTraining(on bool) { m.training = on }

// SetSyncBatchNorm makes the module's batch norms compute their training
// statistics over the group's whole batch (torch.nn.SyncBatchNorm); nil
// goes back to each process's own batch.
func (m *Module) SetSyncBatchNorm(g *torch.Group) { m.sync = g }

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

// Free releases every parameter, buffer and frozen tensor.
func (m *Module) Free() {
	for _, n := range m.all() {
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

// NewLinearNoBias is NewLinear with bias=False: name.weight only.
func NewLinearNoBias(m *Module, name string, in, out int64, dev torch.Device) *Linear {
	var l Linear
	torch.NoGrad(func() { l.W = m.Param(name+".weight", uniform([]int64{out, in}, 1/math.Sqrt(float64(in)), dev)) })
	return &l
}

// Forward applies the layer.
func (l *Linear) Forward(x *torch.Tensor) *torch.Tensor { return torch.Linear(x, l.W, l.B) }

// Conv2d is torch.nn.Conv2d with square kernels, stride 1 and the given padding.
type Conv2d struct {
	W, B *torch.Tensor
	Opts torch.Conv2dOpts
}

// NewConv2d registers name.weight (out×in×k×k) and name.bias, initialised
// as PyTorch does: U(-1/√fan_in, 1/√fan_in).
func NewConv2d(m *Module, name string, in, out, kernel, padding int64, dev torch.Device) *Conv2d {
	bound := 1 / math.Sqrt(float64(in*kernel*kernel))
	c := &Conv2d{Opts: torch.Conv2dOpts{Padding: [2]int64{padding, padding}}}
	torch.NoGrad(func() {
		c.W = m.Param(name+".weight", uniform([]int64{out, in, kernel, kernel}, bound, dev))
		c.B = m.Param(name+".bias", uniform([]int64{out}, bound, dev))
	})
	return c
}

// Forward applies the convolution.
func (c *Conv2d) Forward(x *torch.Tensor) *torch.Tensor { return torch.Conv2d(x, c.W, c.B, c.Opts) }

// Norm is a normalisation layer over channels.
type Norm interface {
	Forward(x *torch.Tensor) *torch.Tensor
}

// BatchNorm2d is torch.nn.BatchNorm2d: batch statistics in training (and
// running averages updated with momentum 0.1), running statistics in eval.
type BatchNorm2d struct {
	m                                      *Module
	W, B, RunningMean, RunningVar, Tracked *torch.Tensor
}

// NewBatchNorm2d registers name.weight, .bias, .running_mean, .running_var
// and .num_batches_tracked, as PyTorch's state_dict has them.
func NewBatchNorm2d(m *Module, name string, ch int64, dev torch.Device) *BatchNorm2d {
	return &BatchNorm2d{
		m:           m,
		W:           m.Param(name+".weight", torch.Ones([]int64{ch}, dev)),
		B:           m.Param(name+".bias", torch.Zeros([]int64{ch}, dev)),
		RunningMean: m.Buffer(name+".running_mean", torch.Zeros([]int64{ch}, dev)),
		RunningVar:  m.Buffer(name+".running_var", torch.Ones([]int64{ch}, dev)),
		Tracked:     m.Buffer(name+".num_batches_tracked", torch.Zeros([]int64{}, torch.Int64, dev)),
	}
}

// Forward normalises x (N, C, H, W).
func (b *BatchNorm2d) Forward(x *torch.Tensor) *torch.Tensor {
	return b.ForwardAct(x, torch.ActNone)
}

// ForwardAct is act(b.Forward(x)): in training on the CPU one fused kernel
// each way (torch.BatchNormAct); with synchronised statistics (data
// parallelism), the activation after them.
func (b *BatchNorm2d) ForwardAct(x *torch.Tensor, act torch.Act) *torch.Tensor {
	if b.m.training {
		torch.NoGrad(func() { b.Tracked.AddInPlace(torch.OnesLike(b.Tracked), 1) })
		if b.m.sync != nil {
			return act.Apply(b.m.sync.SyncBatchNorm(x, b.W, b.B, b.RunningMean, b.RunningVar, 0.1, normEps))
		}
	}
	return torch.BatchNormAct(x, b.W, b.B, b.RunningMean, b.RunningVar, b.m.training, 0.1, normEps, act)
}

// normEps is the ε of the normalisation layers, PyTorch's default.
const normEps = 1e-5

// ConvNorm is n(c(x)). When n is a BatchNorm2d in eval mode, its running
// statistics and affine are folded into the convolution's weights and
// bias, as inference compilers fold them: w' = w·s and b' = (b - mean)·s +
// beta per output channel, s = gamma/√(var + eps), one convolution and no
// normalisation pass over the activations. The fold costs a few ops on the
// small weight tensors each call, so it never goes stale.
func ConvNorm(x *torch.Tensor, c *Conv2d, n Norm) *torch.Tensor {
	b, ok := n.(*BatchNorm2d)
	if !ok || b.m.training {
		return n.Forward(c.Forward(x))
	}
	s := b.W.Mul(b.RunningVar.AddScalar(normEps).Rsqrt())
	bias := b.B.Sub(b.RunningMean.Mul(s))
	if c.B != nil {
		bias = bias.Add(c.B.Mul(s))
	}
	return torch.Conv2d(x, c.W.Mul(s.View(-1, 1, 1, 1)), bias, c.Opts)
}

// ConvNormAct is act(n(c(x))): ConvNorm, with the activation fused into a
// GroupNorm, or a BatchNorm2d in training (one kernel each way over the
// activations); an evaluated BatchNorm2d is folded into the convolution.
func ConvNormAct(x *torch.Tensor, c *Conv2d, n Norm, act torch.Act) *torch.Tensor {
	switch n := n.(type) {
	case *GroupNorm:
		return n.ForwardAct(c.Forward(x), act)
	case *BatchNorm2d:
		if n.m.training {
			return n.ForwardAct(c.Forward(x), act)
		}
	}
	// The result is fresh, read by nothing else (a convolution's backward
	// does not need it): the activation overwrites it.
	return act.ApplyInPlace(ConvNorm(x, c, n))
}

// GroupNorm is torch.nn.GroupNorm.
type GroupNorm struct {
	W, B   *torch.Tensor
	Groups int64
}

// NewGroupNorm registers name.weight and name.bias.
func NewGroupNorm(m *Module, name string, groups, ch int64, dev torch.Device) *GroupNorm {
	return &GroupNorm{m.Param(name+".weight", torch.Ones([]int64{ch}, dev)), m.Param(name+".bias", torch.Zeros([]int64{ch}, dev)), groups}
}

// Forward normalises x.
func (g *GroupNorm) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.GroupNorm(x, g.Groups, g.W, g.B, normEps)
}

// ForwardAct is act(g.Forward(x)), computed in one pass.
func (g *GroupNorm) ForwardAct(x *torch.Tensor, act torch.Act) *torch.Tensor {
	return torch.GroupNormAct(x, g.Groups, g.W, g.B, normEps, act)
}

// ForwardFiLM is act(g.Forward(x)·mul + add) with mul and add (N, C), in
// one pass.
func (g *GroupNorm) ForwardFiLM(x, mul, add *torch.Tensor, act torch.Act) *torch.Tensor {
	return torch.GroupNormFiLM(x, g.Groups, g.W, g.B, mul, add, normEps, act)
}

// Embedding is torch.nn.Embedding, initialised N(0, 1).
type Embedding struct{ W *torch.Tensor }

// NewEmbedding registers name.weight (n×dim).
func NewEmbedding(m *Module, name string, n, dim int64, dev torch.Device) *Embedding {
	return &Embedding{m.Param(name+".weight", torch.Randn([]int64{n, dim}, dev))}
}

// Forward looks up rows for int64 indices.
func (e *Embedding) Forward(idx *torch.Tensor) *torch.Tensor { return torch.Embedding(e.W, idx) }
