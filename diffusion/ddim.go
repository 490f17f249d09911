package diffusion

import (
	"fmt"
	"math"
	"slices"

	"kakusan/torch"
)

func init() { register("ddim", checkDDIM, newDDIM) }

// ddim samples over Timesteps(Steps, Spacing): with the default leading
// spacing it starts at T-⌊T/N⌋+1, not at T. η 0 is deterministic (the
// probability-flow ODE's discretisation), η 1 matches DDPM's variance.
type ddim struct {
	s   *Schedule
	ts  []int
	eta float64
}

func checkDDIM(T int, o Options) error {
	if err := checkSpacing(T, o.Steps, o.Spacing); err != nil {
		return err
	}
	if !(o.Eta >= 0 && o.Eta <= 1) {
		return fmt.Errorf("eta must be between 0 and 1, got %g", o.Eta)
	}
	return nil
}

func newDDIM(s *Schedule, o Options) Sampler {
	ts, err := s.Timesteps(o.Steps, o.Spacing)
	if err != nil { // checkDDIM passed: unreachable
		panic(err)
	}
	return &ddim{s, ts, o.Eta}
}

func (d *ddim) Timesteps() []int { return slices.Clone(d.ts) }

// Step is DDIMStep from ts[i] to ts[i+1], or to 0 after the last.
func (d *ddim) Step(x, eps *torch.Tensor, i int, noise func() *torch.Tensor) *torch.Tensor {
	prev := 0
	if i+1 < len(d.ts) {
		prev = d.ts[i+1]
	}
	return d.s.DDIMStep(x, eps, d.ts[i], prev, d.eta, noise)
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
