package torch

/*
#include "kakusan.h"
*/
import "C"

import (
	"fmt"
	"slices"
	"strconv"
)

// Optimizer updates parameters from their gradients.
type Optimizer interface {
	// Step applies one update from the current gradients.
	Step()
	// ZeroGrad drops every parameter's gradient (set to none).
	ZeroGrad()
	// SetLR changes the learning rate (for schedules).
	SetLR(lr float64)
	// State is the optimizer's full state as named tensors plus the step
	// count, for checkpoints; LoadState restores it.
	State() (map[string]*Tensor, int64)
	LoadState(state map[string]*Tensor, step int64) error
	// Free releases the state tensors.
	Free()
}

// AdamConfig holds Adam's hyperparameters; zero Beta1, Beta2 and Eps take
// PyTorch's defaults (0.9, 0.999, 1e-8).
type AdamConfig struct {
	LR, Beta1, Beta2, Eps, WeightDecay float64
	// Decoupled applies weight decay to the weights directly (AdamW) rather
	// than through the gradient (Adam's L2 penalty).
	Decoupled bool
}

// Adam is torch.optim.Adam, or AdamW when Decoupled.
type Adam struct {
	cfg    AdamConfig
	params []*Tensor
	m, v   []*Tensor
	step   int64
	// stepT and lrT are the step count and the learning rate as 0-d float64
	// tensors on the parameters' device, after UseDeviceState; nil before.
	stepT, lrT *Tensor
}

// NewAdam makes an Adam optimizer over params; its moment tensors are kept
// until Free.
func NewAdam(params []*Tensor, cfg AdamConfig) *Adam {
	if cfg.Beta1 == 0 {
		cfg.Beta1 = 0.9
	}
	if cfg.Beta2 == 0 {
		cfg.Beta2 = 0.999
	}
	if cfg.Eps == 0 {
		cfg.Eps = 1e-8
	}
	o := &Adam{cfg: cfg, params: params}
	NoGrad(func() {
		for _, p := range params {
			o.m = append(o.m, ZerosLike(p).Keep())
			o.v = append(o.v, ZerosLike(p).Keep())
		}
	})
	return o
}

// NewAdamW is NewAdam with decoupled weight decay.
func NewAdamW(params []*Tensor, cfg AdamConfig) *Adam {
	cfg.Decoupled = true
	return NewAdam(params, cfg)
}

// UseDeviceState moves the step count and the learning rate onto the
// parameters' device as 0-d float64 tensors, as torch.optim.Adam's
// capturable mode does: from then on Step increments the count and computes
// the bias corrections 1-beta^step there, and SetLR fills the learning-rate
// tensor in place, so neither reads nor writes the host between steps (what
// CUDA graph capture needs). The update is the default mode's up to float
// rounding; the default mode is left as it is, bit for bit. Calling it
// again does nothing.
func (o *Adam) UseDeviceState() {
	if o.stepT != nil {
		return
	}
	d := CPU
	if len(o.params) > 0 {
		d = o.params[0].Device()
	}
	o.stepT = Full(nil, float64(o.step), Float64, d).Keep()
	o.lrT = Full(nil, o.cfg.LR, Float64, d).Keep()
}

func (o *Adam) Step() {
	o.step++
	ps, ms, vs := handles("Adam.Step", o.params), handles("Adam.Step", o.m), handles("Adam.Step", o.v)
	var err *C.char
	if o.stepT != nil {
		var p, m, v *C.kk_tensor
		if len(ps) > 0 {
			p, m, v = &ps[0], &ms[0], &vs[0]
		}
		C.kk_adam_step_t(p, m, v, C.int(len(ps)), o.lrT.handle("Adam.Step"), o.stepT.handle("Adam.Step"), C.double(o.cfg.Beta1), C.double(o.cfg.Beta2), C.double(o.cfg.Eps), C.double(o.cfg.WeightDecay), b2i(o.cfg.Decoupled), &err)
		check("Adam.Step", err)
		return
	}
	if len(ps) == 0 {
		return
	}
	C.kk_adam_step(&ps[0], &ms[0], &vs[0], C.int(len(ps)), C.double(o.cfg.LR), C.double(o.cfg.Beta1), C.double(o.cfg.Beta2), C.double(o.cfg.Eps), C.double(o.cfg.WeightDecay), b2i(o.cfg.Decoupled), C.int64_t(o.step), &err)
	check("Adam.Step", err)
}

func (o *Adam) ZeroGrad() { zeroGrads(o.params) }

// SetLR changes the learning rate; with device state it is written into the
// learning-rate tensor in place, on the device.
func (o *Adam) SetLR(lr float64) {
	o.cfg.LR = lr
	if o.lrT != nil {
		o.lrT.Fill(lr)
	}
}

// State returns the moments and the step count. With device state the count
// is read from the device (one host read): the device's count is the true
// one, since a captured CUDA graph replays steps without calling Step.
func (o *Adam) State() (map[string]*Tensor, int64) {
	s := map[string]*Tensor{}
	for i := range o.params {
		s["exp_avg."+strconv.Itoa(i)] = o.m[i]
		s["exp_avg_sq."+strconv.Itoa(i)] = o.v[i]
	}
	if o.stepT != nil {
		o.step = int64(o.stepT.Item())
	}
	return s, o.step
}

func (o *Adam) LoadState(state map[string]*Tensor, step int64) error {
	if err := loadInto("exp_avg", o.m, state); err != nil {
		return err
	}
	if err := loadInto("exp_avg_sq", o.v, state); err != nil {
		return err
	}
	o.step = step
	if o.stepT != nil {
		o.stepT.Fill(float64(step))
	}
	return nil
}

func (o *Adam) Free() { freeAll(o.m); freeAll(o.v); o.stepT.Free(); o.lrT.Free() }

// SGDConfig holds SGD's hyperparameters.
type SGDConfig struct {
	LR, Momentum, Dampening, WeightDecay float64
	Nesterov                             bool
}

// SGD is torch.optim.SGD with momentum.
type SGD struct {
	cfg    SGDConfig
	params []*Tensor
	buf    []*Tensor
	step   int64
}

// NewSGD makes an SGD optimizer over params.
func NewSGD(params []*Tensor, cfg SGDConfig) *SGD {
	o := &SGD{cfg: cfg, params: params}
	NoGrad(func() {
		for _, p := range params {
			o.buf = append(o.buf, ZerosLike(p).Keep())
		}
	})
	return o
}

func (o *SGD) Step() {
	o.step++
	ps, bs := handles("SGD.Step", o.params), handles("SGD.Step", o.buf)
	if len(ps) == 0 {
		return
	}
	var err *C.char
	C.kk_sgd_step(&ps[0], &bs[0], C.int(len(ps)), C.double(o.cfg.LR), C.double(o.cfg.Momentum), C.double(o.cfg.Dampening), C.double(o.cfg.WeightDecay), b2i(o.cfg.Nesterov), b2i(o.step == 1), &err)
	check("SGD.Step", err)
}

func (o *SGD) ZeroGrad()        { zeroGrads(o.params) }
func (o *SGD) SetLR(lr float64) { o.cfg.LR = lr }

func (o *SGD) State() (map[string]*Tensor, int64) {
	s := map[string]*Tensor{}
	for i, b := range o.buf {
		s["momentum_buffer."+strconv.Itoa(i)] = b
	}
	return s, o.step
}

func (o *SGD) LoadState(state map[string]*Tensor, step int64) error {
	if err := loadInto("momentum_buffer", o.buf, state); err != nil {
		return err
	}
	o.step = step
	return nil
}

func (o *SGD) Free() { freeAll(o.buf) }

func zeroGrads(ps []*Tensor) {
	for _, p := range ps {
		p.ClearGrad()
	}
}

func freeAll(ts []*Tensor) {
	for _, t := range ts {
		t.Free()
	}
}

func loadInto(prefix string, dst []*Tensor, state map[string]*Tensor) error {
	for i, d := range dst {
		name := prefix + "." + strconv.Itoa(i)
		src, ok := state[name]
		if !ok {
			return fmt.Errorf("optimizer state: missing %q", name)
		}
		if a, b := src.Shape(), d.Shape(); !slices.Equal(a, b) {
			return fmt.Errorf("optimizer state: %q has shape %v, parameter %d has %v", name, a, i, b)
		}
		NoGrad(func() { d.CopyFrom(src) })
	}
	return nil
}

// ClipGradNorm scales the parameters' gradients so their joint L2 norm is at
// most max, and returns the norm before clipping.
func ClipGradNorm(params []*Tensor, max float64) float64 {
	if len(params) == 0 {
		return 0
	}
	hs := handles("ClipGradNorm", params)
	var err *C.char
	n := C.kk_clip_grad_norm(&hs[0], C.int(len(hs)), C.double(max), &err)
	check("ClipGradNorm", err)
	return float64(n)
}

// ClipGradNormTensor is ClipGradNorm without a host read: it returns the
// norm before clipping as a 0-d tensor on the parameters' device and scales
// the gradients by clamp(max/(norm+1e-6), max=1) computed there, as
// torch.nn.utils.clip_grad_norm_ does, so a step that clips need not wait
// for the device. With no gradients the norm is zero.
func ClipGradNormTensor(params []*Tensor, max float64) *Tensor {
	if len(params) == 0 {
		return Scalar(0)
	}
	hs := handles("ClipGradNormTensor", params)
	var out C.kk_tensor
	var err *C.char
	C.kk_clip_grad_norm_t(&hs[0], C.int(len(hs)), C.double(max), &out, &err)
	return wrap("ClipGradNormTensor", out, err)
}
