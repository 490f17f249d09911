package diffusion

import (
	"fmt"
	"math"
	"slices"

	"kakusan/torch"
)

func init() { register("dpm++2m", checkSpaced, newDPMSolver) }

// dpmSolver is DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver
// for Guided Sampling of Diffusion Probabilistic Models", algorithm 2), the
// multistep second-order solver of the probability-flow ODE in its data
// (x̂₀) parameterisation, over Timesteps(Steps, Spacing). With α_t = √ᾱ_t,
// σ_t = √(1-ᾱ_t), λ_t = log(α_t/σ_t) and h = λ_t - λ_s for a step from s
// to t:
//
//	first order (the first step): x_t = (σ_t/σ_s) x_s - α_t (e^{-h} - 1) D₀
//	second order:                 x_t = (σ_t/σ_s) x_s - α_t (e^{-h} - 1) (D₀ + D₁/2)
//
// with D₀ = x̂₀(x_s), r = h_prev/h and D₁ = (D₀ - x̂₀ of the step before)/r.
// The first-order step is DDIM's (η = 0). The last step, to t = 0 where
// σ = 0 and λ = ∞, returns D₀. A step is first order too where r < 1/2,
// and below 15 steps so is the step into the last visited timestep
// (diffusers' lower_order_final), and the step after Restart (the
// predictor changed: guidance switching on or off at an interval's edge).
//
// Second order follows the line through the two latest x̂₀ in λ; a step
// more than twice as long as the one before (r < 1/2) follows it far past
// the points that drew it, and overshoots. Leading and linspace spacings
// end so: the λ of the last visited timesteps, …, 51, 1 at 20 steps, grows
// fast near t = 1 (a jump of 2.9 after one of 0.67). On Gaussian data
// (TestSolversOnGaussianData) leading spacing's endpoint error at 15, 20,
// 30 and 50 steps falls from 0.56, 0.42, 0.24 and 0.100 to 0.15, 0.073,
// 0.015 and 0.005 (DDIM: 0.32, 0.25, 0.17, 0.10). Trailing spacing does
// not step so; Karras spacing does where its σ crowd near σ_min and round
// to few timesteps (4 → 2 at 80 steps of the linear schedule).
type dpmSolver struct {
	s      *Schedule
	ts     []int
	prevX0 *torch.Tensor // x̂₀ of the previous step, kept between steps
	prevH  float64
}

// checkSpaced accepts the options of a deterministic sampler over
// Timesteps(Steps, Spacing).
func checkSpaced(T int, o Options) error {
	if o.Eta != 0 {
		return fmt.Errorf("eta is for ddim: this sampler is deterministic, got %g", o.Eta)
	}
	return checkSpacing(T, o.Steps, o.Spacing)
}

func newDPMSolver(s *Schedule, o Options) Sampler {
	ts, err := s.Timesteps(o.Steps, o.Spacing)
	if err != nil { // checkSpaced passed: unreachable
		panic(err)
	}
	return &dpmSolver{s: s, ts: ts}
}

func (d *dpmSolver) Timesteps() []int { return slices.Clone(d.ts) }

// lambda is λ_t = log(α_t/σ_t) = ½ log(ᾱ_t/(1-ᾱ_t)).
func (s *Schedule) lambda(t int) float64 {
	ab := s.AlphaBar(t)
	return 0.5 * math.Log(ab/(1-ab))
}

func (d *dpmSolver) Step(x, eps *torch.Tensor, i int, _ func() *torch.Tensor) *torch.Tensor {
	sT := d.ts[i]
	ab := d.s.AlphaBar(sT)
	x0 := x.Sub(eps.MulScalar(math.Sqrt(1 - ab))).DivScalar(math.Sqrt(ab))
	if i+1 == len(d.ts) {
		d.Free()
		return x0
	}
	t := d.ts[i+1]
	abT := d.s.AlphaBar(t)
	h := d.s.lambda(t) - d.s.lambda(sT)
	alphaT, ratio := math.Sqrt(abT), math.Sqrt((1-abT)/(1-ab))
	D := x0
	lowerOrderFinal := len(d.ts) < 15 && i+2 == len(d.ts)
	if d.prevX0 != nil && !lowerOrderFinal && d.prevH >= h/2 {
		r := d.prevH / h
		D = x0.Add(x0.Sub(d.prevX0).MulScalar(0.5 / r))
	}
	out := x.MulScalar(ratio).Sub(D.MulScalar(alphaT * math.Expm1(-h)))
	d.prevX0.Free()
	d.prevX0, d.prevH = x0.Keep(), h
	return out
}

// Restart makes the next step first order: the predictor changed, and the
// previous step's x̂₀ is no earlier value of the new one (Run calls it).
func (d *dpmSolver) Restart() { d.Free() }

// Narrow keeps the rows idx of the previous step's x̂₀.
func (d *dpmSolver) Narrow(idx *torch.Tensor) { d.prevX0 = keepRows(d.prevX0, idx) }

// Free releases the state kept between steps (Run calls it at the end).
func (d *dpmSolver) Free() {
	d.prevX0.Free()
	d.prevX0 = nil
}
