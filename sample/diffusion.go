package sample

import (
	"fmt"
	"math"

	"kakusan/torch"
)

// Net is a noise-predicting network: x_t (B, C, H, W), timesteps (B, int64),
// labels (B, int64, or nil) and a keep mask (B, 1 = use the label, 0 = drop it).
type Net func(x, t, y, keep *torch.Tensor) *torch.Tensor

// Predictor gives ε̂(x_t, t) for the whole batch at timestep t.
type Predictor func(x *torch.Tensor, t int) *torch.Tensor

// Guided wraps net for classifier-free guidance: ε = ε_u + γ (ε_c - ε_u),
// the conditional and unconditional passes in one batched forward. γ = 1
// (or nil labels, an unconditional model) takes a single pass. With
// vPrediction the network's v is turned into ε.
func (s *Schedule) Guided(net Net, y *torch.Tensor, gamma float64, vPrediction bool) Predictor {
	return func(x *torch.Tensor, t int) *torch.Tensor {
		n := x.Size(0)
		ts := torch.Full([]int64{n}, float64(t), torch.Int64, x.Device())
		var out *torch.Tensor
		switch {
		case y == nil:
			out = net(x, ts, nil, nil)
		case gamma == 1:
			out = net(x, ts, y, nil)
		default:
			ones := torch.Ones([]int64{n}, x.Device())
			both := net(torch.Cat([]*torch.Tensor{x, x}, 0), torch.Cat([]*torch.Tensor{ts, ts}, 0),
				torch.Cat([]*torch.Tensor{y, y}, 0), torch.Cat([]*torch.Tensor{ones, torch.ZerosLike(ones)}, 0))
			cond, uncond := both.Narrow(0, 0, n), both.Narrow(0, n, n)
			out = uncond.Add(cond.Sub(uncond).MulScalar(gamma))
		}
		if vPrediction {
			ab := s.AlphaBar(t)
			out = out.MulScalar(math.Sqrt(ab)).Add(x.MulScalar(math.Sqrt(1 - ab)))
		}
		return out
	}
}

// Noise gives the fresh noise of sampling step i (0 is the starting x_T).
type Noise func(step int) *torch.Tensor

// DDPM is ancestral sampling over every timestep T..1:
// x_{t-1} = (x_t - β_t/√(1-ᾱ_t) ε̂)/√α_t + √β̃_t z, with no noise at t = 1.
func (s *Schedule) DDPM(eps Predictor, noise Noise) *torch.Tensor {
	x := noise(0)
	for t := s.T; t >= 1; t-- {
		x = advance(x, func() *torch.Tensor {
			return s.DDPMStep(x, eps(x, t), t, func() *torch.Tensor { return noise(s.T - t + 1) })
		})
	}
	return x
}

// advance computes the next state in a scope of its own, so each step's
// temporaries are freed at once, and frees the state it replaces.
func advance(x *torch.Tensor, step func() *torch.Tensor) *torch.Tensor {
	sc := torch.NewScope()
	next := sc.Escape(step())
	sc.Close()
	x.Free()
	return next
}

// DDPMStep is one ancestral step from x_t given ε̂; z draws the noise.
func (s *Schedule) DDPMStep(x, eps *torch.Tensor, t int, z func() *torch.Tensor) *torch.Tensor {
	beta, ab := s.Betas[t-1], s.AlphaBar(t)
	mean := x.Sub(eps.MulScalar(beta / math.Sqrt(1-ab))).DivScalar(math.Sqrt(s.Alphas[t-1]))
	if t == 1 {
		return mean
	}
	return mean.Add(z().MulScalar(math.Sqrt(s.PosteriorVariance(t))))
}

// DDIMTimesteps are the steps timesteps DDIM visits, from T down to 1,
// evenly spaced.
func (s *Schedule) DDIMTimesteps(steps int) ([]int, error) {
	if steps < 1 || steps > s.T {
		return nil, fmt.Errorf("steps must be between 1 and %d, got %d", s.T, steps)
	}
	ts := make([]int, steps)
	for i := range ts {
		ts[i] = (steps-1-i)*s.T/steps + 1
	}
	return ts, nil
}

// DDIM samples in the given number of steps; eta 0 is deterministic (the
// probability-flow ODE's discretisation), eta 1 matches DDPM's variance.
func (s *Schedule) DDIM(eps Predictor, noise Noise, steps int, eta float64) (*torch.Tensor, error) {
	ts, err := s.DDIMTimesteps(steps)
	if err != nil {
		return nil, err
	}
	if eta < 0 || eta > 1 {
		return nil, fmt.Errorf("eta must be between 0 and 1, got %g", eta)
	}
	x := noise(0)
	for i, t := range ts {
		prev := 0
		if i+1 < len(ts) {
			prev = ts[i+1]
		}
		x = advance(x, func() *torch.Tensor {
			return s.DDIMStep(x, eps(x, t), t, prev, eta, func() *torch.Tensor { return noise(i + 1) })
		})
	}
	return x, nil
}

// DDIMStep goes from x_t to x_prev given ε̂:
// x̂_0 = (x_t - √(1-ᾱ_t) ε̂)/√ᾱ_t,
// σ = η √((1-ᾱ_prev)/(1-ᾱ_t)) √(1-ᾱ_t/ᾱ_prev),
// x_prev = √ᾱ_prev x̂_0 + √(1-ᾱ_prev-σ²) ε̂ + σ z.
func (s *Schedule) DDIMStep(x, eps *torch.Tensor, t, prev int, eta float64, z func() *torch.Tensor) *torch.Tensor {
	ab, abPrev := s.AlphaBar(t), s.AlphaBar(prev)
	x0 := x.Sub(eps.MulScalar(math.Sqrt(1 - ab))).DivScalar(math.Sqrt(ab))
	sigma := eta * math.Sqrt((1-abPrev)/(1-ab)) * math.Sqrt(1-ab/abPrev)
	out := x0.MulScalar(math.Sqrt(abPrev)).Add(eps.MulScalar(math.Sqrt(math.Max(1-abPrev-sigma*sigma, 0))))
	if sigma > 0 {
		out = out.Add(z().MulScalar(sigma))
	}
	return out
}

// SplitMix is a 64-bit mixing function: per-image and per-step seeds are
// derived from the job's seed with it.
func SplitMix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// ImageNoise draws each image's noise from its own seed, so an image is the
// same whichever batch or shard it is generated in: image k of a job with
// seed s uses SplitMix(SplitMix(s ^ k) + step) at each step.
func ImageNoise(seed uint64, images []int, shape []int64, dev torch.Device) Noise {
	return func(step int) *torch.Tensor {
		seeds := make([]uint64, len(images))
		for i, k := range images {
			seeds[i] = SplitMix(SplitMix(seed^SplitMix(uint64(k))) + uint64(step))
		}
		return torch.RandnRows(seeds, shape).To(dev)
	}
}
