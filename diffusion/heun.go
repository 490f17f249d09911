package diffusion

import (
	"math"
	"slices"

	"kakusan/torch"
)

func init() {
	register("euler", checkSpaced, func(s *Schedule, o Options) Sampler { return newSigmaSampler(s, o, false) })
	register("heun", checkSpaced, func(s *Schedule, o Options) Sampler { return newSigmaSampler(s, o, true) })
}

// sigmaSampler is k-diffusion's Euler and Heun samplers (Karras et al.
// 2022, algorithm 1) on the discrete schedule, in its σ parameterisation:
// x = x_t/α_t = x₀ + σ ε with σ_t = √((1-ᾱ_t)/ᾱ_t), whose probability-flow
// ODE is dx/dσ = ε̂. Euler steps x' = x + (σ' - σ) ε̂, which over the same
// timesteps is DDIM with η = 0 (a test checks it). Heun corrects each
// step with a second evaluation at its end, x' = x + (σ' - σ)(ε̂ + ε̂')/2,
// except the last, to σ = 0, which stays an Euler step: its Timesteps list
// each timestep after the first twice (the corrector's evaluation of the
// step that ends there, then the next step's), as diffusers'
// HeunDiscreteScheduler does, so N steps cost 2N-1 network evaluations.
type sigmaSampler struct {
	s    *Schedule
	ts   []int // as visited: with heun, t_1, t_2, t_2, t_3, t_3, ...
	heun bool
	// The first half of a Heun step: where it started and its slope.
	x0, d0 *torch.Tensor
}

func newSigmaSampler(s *Schedule, o Options, heun bool) Sampler {
	ts, err := s.Timesteps(o.Steps, o.Spacing)
	if err != nil { // checkSpaced passed: unreachable
		panic(err)
	}
	if heun {
		var twice []int
		for i, t := range ts {
			twice = append(twice, t)
			if i > 0 { // the corrector of the step that ends here, then the next step's predictor
				twice = append(twice, t)
			}
		}
		ts = twice
	}
	return &sigmaSampler{s: s, ts: ts, heun: heun}
}

func (k *sigmaSampler) Timesteps() []int { return slices.Clone(k.ts) }

// sigma is σ_t = √((1-ᾱ_t)/ᾱ_t), 0 at t = 0.
func (s *Schedule) sigma(t int) float64 {
	ab := s.AlphaBar(t)
	return math.Sqrt((1 - ab) / ab)
}

// Step works on x_t = α_t x: it scales to the σ space and back.
func (k *sigmaSampler) Step(xt, eps *torch.Tensor, i int, _ func() *torch.Tensor) *torch.Tensor {
	t, next := k.ts[i], 0
	if i+1 < len(k.ts) {
		next = k.ts[i+1]
	}
	if k.x0 != nil { // the corrector of a Heun step that began at the previous visit
		begin := k.ts[i-1]
		x := k.x0
		out := x.Add(k.d0.Add(eps).MulScalar((k.s.sigma(t) - k.s.sigma(begin)) / 2)).MulScalar(math.Sqrt(k.s.AlphaBar(t)))
		k.Free()
		return out
	}
	x := xt.DivScalar(math.Sqrt(k.s.AlphaBar(t)))
	out := x.Add(eps.MulScalar(k.s.sigma(next) - k.s.sigma(t)))
	if k.heun && next != 0 {
		k.x0, k.d0 = x.Keep(), eps.Keep()
	}
	return out.MulScalar(math.Sqrt(k.s.AlphaBar(next)))
}

// Narrow keeps the rows idx of a half-done Heun step's state.
func (k *sigmaSampler) Narrow(idx *torch.Tensor) {
	k.x0, k.d0 = keepRows(k.x0, idx), keepRows(k.d0, idx)
}

// Pending reports whether a Heun step awaits its corrector.
func (k *sigmaSampler) Pending() bool { return k.x0 != nil }

// Free releases a half-done Heun step's state (Run calls it at the end).
func (k *sigmaSampler) Free() {
	k.x0.Free()
	k.d0.Free()
	k.x0, k.d0 = nil, nil
}
