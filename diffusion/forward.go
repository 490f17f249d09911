package diffusion

import (
	"math"

	"kakusan/torch"
)

// alphaBars is ᾱ_1..ᾱ_T as a float64 tensor on dev, copied from the host
// the first time dev is asked for and kept until Free.
func (s *Schedule) alphaBars(dev torch.Device) *torch.Tensor {
	k := dev.String()
	if ab := s.onDevice[k]; !ab.Freed() {
		return ab
	}
	if s.onDevice == nil {
		s.onDevice = map[string]*torch.Tensor{}
	}
	ab := torch.FromSlice(s.AlphaBars, nil, dev).Keep()
	s.onDevice[k] = ab
	return ab
}

// Free releases the copies of ᾱ the forward process made on devices. The
// schedule stays usable: a later call copies ᾱ again. Call it on the torch
// thread.
func (s *Schedule) Free() {
	for k, ab := range s.onDevice {
		ab.Free()
		delete(s.onDevice, k)
	}
}

// gatherAB returns ᾱ_t for a batch of int64 timesteps t (B) as (B, 1, 1, 1),
// in float64: the callers cast it.
func (s *Schedule) gatherAB(t *torch.Tensor) *torch.Tensor {
	return s.alphaBars(t.Device()).IndexSelect(0, t.SubScalar(1)).View(-1, 1, 1, 1)
}

// QSample is the forward process: x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε, for int64
// timesteps t (B) in 1..T.
func (s *Schedule) QSample(x0, t, eps *torch.Tensor) *torch.Tensor {
	ab := s.gatherAB(t).To(x0.DType())
	return x0.Mul(ab.Sqrt()).Add(eps.Mul(ab.RSubScalar(1).Sqrt()))
}

// VTarget is the v-prediction target √ᾱ_t ε - √(1-ᾱ_t) x_0.
func (s *Schedule) VTarget(x0, t, eps *torch.Tensor) *torch.Tensor {
	ab := s.gatherAB(t).To(x0.DType())
	return eps.Mul(ab.Sqrt()).Sub(x0.Mul(ab.RSubScalar(1).Sqrt()))
}

// LossWeight is Hang et al.'s min-SNR-γ weighting (2023) of a per-image
// squared error for int64 timesteps t (B), as (B, 1, 1, 1) float64: with
// SNR_t = ᾱ_t/(1-ᾱ_t), min(SNR, γ)/SNR for an ε target, min(SNR, γ)/(SNR+1)
// for v and min(SNR, γ) for x_0, which all weigh the x_0 error alike.
func (s *Schedule) LossWeight(kind Prediction, t *torch.Tensor, gamma float64) *torch.Tensor {
	ab := s.gatherAB(t)
	snr := ab.Div(ab.RSubScalar(1))
	w := snr.Clamp(math.Inf(-1), gamma)
	switch kind {
	case Eps:
		return w.Div(snr)
	case V:
		return w.Div(snr.AddScalar(1))
	case X0:
		return w
	}
	badPrediction("diffusion.LossWeight", kind)
	return nil
}
