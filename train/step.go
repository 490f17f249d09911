package train

import (
	"fmt"

	"kakusan/models"
	"kakusan/torch"
)

// Batch is one training batch on the device: images (B, C, H, W) in [0, 1]
// and int64 labels (B).
type Batch struct{ X, Y *torch.Tensor }

// Stepper trains on one batch at a time. *Step is the step itself; what
// changes how a whole step runs is a Stepper wrapping a *Step (Graphed
// captures it in a CUDA graph and replays it).
type Stepper interface {
	// Run trains on one batch and returns its loss, detached, on the device.
	Run(b Batch) *torch.Tensor
	// SetLR sets the learning rate of the steps that follow.
	SetLR(lr float64)
}

// Step is the training step over a State's model, optimizer and moving
// average, with a precision policy: Run does one step on one batch:
// forward and loss, backward, gradient synchronisation, clipping, the
// optimizer's update and the moving average's. It reads nothing back from
// the device, so nothing in it waits for the device (a test counts the
// host reads): the precondition for capturing it in a CUDA graph.
//
// Its seams are fields that wrap parts of it, not edits inside it:
//   - Loss computes a batch's loss; NewStep runs the model's loss under a
//     precision policy (torch.Precision: TF32, bf16 autocast), and the
//     backward pass outside it, as torch.autocast is meant to be used.
//   - Sync runs between the backward pass and clipping; a distributed
//     strategy all-reduces the gradients there (nil on one process).
//   - NoSync pauses (true) and resumes (false) a synchronisation that runs
//     during the backward pass, around the micro-batches of an accumulated
//     step before the last (DDP's no_sync); nil: nothing to pause.
//
// With Accumulate K > 1 a batch is split into K micro-batches of equal size
// in order; each one's loss, divided by K, is back-propagated on its own
// (activations are kept for one micro-batch at a time) and the gradients
// add up, so the update is the one the whole batch would make, up to
// rounding, wherever the loss is a mean over the images and nothing in the
// model mixes images (batch norm normalises each micro-batch by its own
// statistics).
type Step struct {
	*State             // what it trains; the State owns and frees it
	Clip       float64 // the gradients' largest joint L2 norm; 0: no clipping
	Accumulate int     // micro-batches a batch is split into; 0 or 1: none
	Loss       func(b Batch) *torch.Tensor
	Sync       func(params []*torch.Tensor)
	NoSync     func(paused bool)

	// Precision is the policy in force on the model's device (auto
	// resolved); its TF32 setting holds through the backward pass too.
	Precision torch.Precision

	params []*torch.Tensor
}

// NewStep makes the training step of st's model with its optimizer over
// the model's parameters, computing the model's own loss at precision p.
func NewStep(st *State, clip float64, p torch.Precision) (*Step, error) {
	p, err := torch.ParsePrecision(string(p)) // "" is fp32
	if err != nil {
		return nil, fmt.Errorf("train.precision: %w", err)
	}
	m := st.Model
	s := &Step{State: st, Clip: clip, params: m.Module().ParamTensors()}
	if len(s.params) == 0 {
		return nil, fmt.Errorf("the model has no parameters to train")
	}
	dev := s.params[0].Device()
	s.Precision = p.On(dev)
	s.Loss = func(b Batch) (loss *torch.Tensor) {
		s.Precision.Run(dev, func() { loss = m.Loss(b.X, b.Y) })
		return loss.To(torch.Float32)
	}
	return s, nil
}

// Run trains on one batch; the returned loss is detached and stays on the
// device. Temporaries are freed when the caller's scope closes.
func (s *Step) Run(b Batch) *torch.Tensor {
	defer torch.SetTF32(torch.SetTF32(s.Precision != torch.FP32))
	var loss *torch.Tensor
	if s.Accumulate > 1 {
		loss = s.accumulate(b)
	} else {
		loss = s.Loss(b)
		s.Opt.ZeroGrad()
		loss.Backward()
	}
	if s.Sync != nil {
		s.Sync(s.params)
	}
	if s.Clip > 0 {
		torch.ClipGradNormTensor(s.params, s.Clip)
	}
	s.Opt.Step()
	if s.EMA != nil {
		torch.NoGrad(func() { s.EMA.Update(s.Model) })
	}
	return loss.Detach()
}

// accumulate back-propagates b's micro-batches one after another and
// returns the mean of their losses.
func (s *Step) accumulate(b Batch) *torch.Tensor {
	k := int64(s.Accumulate)
	n := b.X.Size(0)
	if n%k != 0 {
		panic(fmt.Sprintf("train: a batch of %d images does not split into %d micro-batches", n, k))
	}
	s.Opt.ZeroGrad()
	var sum *torch.Tensor
	for i := range k {
		last := i == k-1
		if s.NoSync != nil {
			s.NoSync(!last)
		}
		m := Batch{X: b.X.Narrow(0, i*n/k, n/k), Y: b.Y.Narrow(0, i*n/k, n/k)}
		loss := s.Loss(m).MulScalar(1 / float64(k))
		loss.Backward()
		if sum == nil {
			sum = loss.Detach()
		} else {
			sum = sum.Add(loss.Detach())
		}
	}
	return sum
}

// SetLR sets the optimizer's learning rate.
func (s *Step) SetLR(lr float64) { s.Opt.SetLR(lr) }

// EMA is an exponential moving average of a model's weights, used for
// sampling: avg += (1-d)(w - avg) after every update, with d ramped up as
// min(decay, (1+n)/(10+n)) over the first updates under warm-up.
// Floating-point buffers (batch-norm running statistics) are averaged with
// the same decay, as timm's ModelEmaV2 does, so the average normalises with
// statistics of the same era as its weights rather than the live model's;
// integer buffers (batch counts) are copied.
type EMA struct {
	Avg     models.Model
	Decay   float64
	Warmup  bool
	Updates int // updates so far; restored from a checkpoint's step
}

// Update moves the average towards m's weights.
func (e *EMA) Update(m models.Model) {
	d := e.Decay
	if e.Warmup {
		d = min(e.Decay, float64(1+e.Updates)/float64(10+e.Updates))
	}
	ps, avg := m.Module().Params(), e.Avg.Module().Params()
	for i := range ps {
		avg[i].T.LerpInPlace(ps[i].T, 1-d)
	}
	bs, avgBufs := m.Module().Buffers(), e.Avg.Module().Buffers()
	for i := range bs {
		if bs[i].T.DType().IsFloat() {
			avgBufs[i].T.LerpInPlace(bs[i].T, 1-d)
		} else {
			avgBufs[i].T.CopyFrom(bs[i].T)
		}
	}
	e.Updates++
}

// newOptimizer makes the configured optimizer over params.
func newOptimizer(o *models.OptimConfig, params []*torch.Tensor) torch.Optimizer {
	switch o.Name {
	case "sgd":
		return torch.NewSGD(params, torch.SGDConfig{LR: o.LR, Momentum: o.Momentum, WeightDecay: o.WeightDecay, Nesterov: o.Nesterov})
	case "adamw":
		return torch.NewAdamW(params, torch.AdamConfig{LR: o.LR, Beta1: o.Betas[0], Beta2: o.Betas[1], Eps: o.Eps, WeightDecay: o.WeightDecay})
	}
	return torch.NewAdam(params, torch.AdamConfig{LR: o.LR, Beta1: o.Betas[0], Beta2: o.Betas[1], Eps: o.Eps, WeightDecay: o.WeightDecay})
}
