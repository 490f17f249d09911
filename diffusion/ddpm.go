package diffusion

import (
	"math"
	"slices"

	"kakusan/torch"
)

func init() { register("ddpm", checkNothing, newDDPM) }

// ddpm is ancestral sampling over every timestep T..1; it reads no options.
type ddpm struct {
	s  *Schedule
	ts []int
}

func newDDPM(s *Schedule, _ Options) Sampler {
	ts := make([]int, s.T)
	for i := range ts {
		ts[i] = s.T - i
	}
	return &ddpm{s, ts}
}

func (d *ddpm) Timesteps() []int { return slices.Clone(d.ts) }

// Step is DDPMStep at t = T - i; its noise is that of step i+1 = T - t + 1.
func (d *ddpm) Step(x, eps *torch.Tensor, i int, noise func() *torch.Tensor) *torch.Tensor {
	return d.s.DDPMStep(x, eps, d.ts[i], noise)
}

// DDPMStep is one ancestral step from x_t given ε̂; z draws the noise:
// x_{t-1} = (x_t - β_t/√(1-ᾱ_t) ε̂)/√α_t + √β̃_t z, with no noise at t = 1.
func (s *Schedule) DDPMStep(x, eps *torch.Tensor, t int, z func() *torch.Tensor) *torch.Tensor {
	beta, ab := s.Betas[t-1], s.AlphaBar(t)
	mean := x.Sub(eps.MulScalar(beta / math.Sqrt(1-ab))).DivScalar(math.Sqrt(s.Alphas[t-1]))
	if t == 1 {
		return mean
	}
	return mean.Add(z().MulScalar(math.Sqrt(s.PosteriorVariance(t))))
}
