package diffusion

import (
	"math"
	"slices"
	"testing"

	"kakusan/torch"
)

// Karras spacings of the reference schedule, computed independently with
// PyTorch in float64 (argmin of |log σ_t - log σ_i|).
func TestKarrasSpacing(t *testing.T) {
	s := ref(t)
	for steps, want := range map[int][]int{5: {1000, 844, 594, 143, 1}, 10: {1000, 938, 865, 776, 664, 512, 302, 103, 19, 1}} {
		got, err := s.Timesteps(steps, "karras")
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("karras, %d steps: %v (%v), want %v", steps, got, err, want)
		}
	}
	// Near σ_min many σ_i round to t = 1: repeats are dropped.
	got, _ := s.Timesteps(1000, "karras")
	if len(got) >= 1000 || got[0] != 1000 || got[len(got)-1] != 1 || !slices.IsSortedFunc(got, func(a, b int) int { return b - a }) {
		t.Errorf("karras, 1000 steps: %d timesteps from %d to %d", len(got), got[0], got[len(got)-1])
	}
}

// The first DPM-Solver++ step is first order: DDIM's η = 0 step.
func TestDPMSolverFirstStepIsDDIM(t *testing.T) {
	s := ref(t)
	on(t, func() {
		x, eps := torch.Randn([]int64{3, 4}, torch.Float64), torch.Randn([]int64{3, 4}, torch.Float64)
		sm := newSampler(t, "dpm++2m", s, Options{Steps: 10})
		defer sm.(*dpmSolver).Free()
		ts := sm.Timesteps()
		got := sm.Step(x, eps, 0, nil)
		want := s.DDIMStep(x, eps, ts[0], ts[1], 0, nil)
		if d := got.Sub(want).Abs().Max().Item(); d > 1e-12 {
			t.Errorf("first step differs from DDIM by %g", d)
		}
	})
}

// A second-order step against the formula written out in float64 scalars.
func TestDPMSolverSecondOrderByHand(t *testing.T) {
	s := ref(t)
	on(t, func() {
		sm := newSampler(t, "dpm++2m", s, Options{Steps: 4, Spacing: "trailing"}) // 1000, 750, 500, 250
		defer sm.(*dpmSolver).Free()
		x0v, e0, e1 := 0.7, -0.3, 0.45
		x1 := sm.Step(torch.FromSlice([]float64{x0v}, nil), torch.FromSlice([]float64{e0}, nil), 0, nil)
		x2 := sm.Step(x1, torch.FromSlice([]float64{e1}, nil), 1, nil).Item()

		a := func(t int) float64 { return math.Sqrt(s.AlphaBar(t)) }
		sg := func(t int) float64 { return math.Sqrt(1 - s.AlphaBar(t)) }
		lam := func(t int) float64 { return math.Log(a(t) / sg(t)) }
		d0 := (x0v - sg(1000)*e0) / a(1000)
		h0 := lam(750) - lam(1000)
		y1 := sg(750)/sg(1000)*x0v - a(750)*(math.Exp(-h0)-1)*d0
		if got := x1.Item(); math.Abs(got-y1) > 1e-12 {
			t.Fatalf("first step %.15g, want %.15g", got, y1)
		}
		d1 := (y1 - sg(750)*e1) / a(750)
		h1 := lam(500) - lam(750)
		r := h0 / h1
		y2 := sg(500)/sg(750)*y1 - a(500)*(math.Exp(-h1)-1)*(d1+(d1-d0)/(2*r))
		if math.Abs(x2-y2) > 1e-12 {
			t.Errorf("second step %.15g, want %.15g", x2, y2)
		}
	})
}

// Over the same timesteps Euler in σ space is DDIM with η = 0.
func TestEulerIsDDIM(t *testing.T) {
	s := ref(t)
	on(t, func() {
		pred := func(x *torch.Tensor, tt int) *torch.Tensor {
			return x.MulScalar(0.8).AddScalar(float64(tt) * 1e-4).Sin()
		}
		noise := func(int) *torch.Tensor { return torch.Randn([]int64{2, 1, 3, 3}, torch.Float64) }
		torch.ManualSeed(3)
		euler := Run(newSampler(t, "euler", s, Options{Steps: 25}), pred, noise)
		torch.ManualSeed(3)
		ddim := Run(newSampler(t, "ddim", s, Options{Steps: 25}), pred, noise)
		if d := euler.Sub(ddim).Abs().Max().Item(); d > 1e-10 {
			t.Errorf("euler and ddim differ by %g", d)
		}
	})
}

// Gaussian data x₀ ~ N(μ, s²) has the exact noise predictor
// ε*(x_t) = σ_t (x_t - α_t μ)/(α_t² s² + σ_t²), and the probability-flow
// ODE keeps z = (x_t - α_t μ)/√(α_t² s² + σ_t²) constant. Every sampler
// ends with the jump x̂₀ = E[x₀ | x_t] from its last visited timestep t_L,
// so a perfect solver returns μ + α s² z/√(α² s² + σ²) at t_L, z taken
// from x at the first visited timestep. Each solver's error against that
// must shrink as its order says.
func TestSolversOnGaussianData(t *testing.T) {
	errOf := gaussianError(t, ref(t))
	// With Karras spacing (DPM-Solver++'s usual pairing): at 10 steps the
	// second-order solvers land far closer, and from 40 to 80 steps their
	// error falls about 4x, DDIM's 2x.
	ddim10, dpm10 := errOf("ddim", 10, "karras"), errOf("dpm++2m", 10, "karras")
	t.Logf("karras, 10 steps: ddim %.2e, dpm++2m %.2e", ddim10, dpm10)
	if !(dpm10 < ddim10/4) {
		t.Errorf("dpm++2m, 10 steps: error %.2e, not a quarter of ddim's %.2e", dpm10, ddim10)
	}
	for _, c := range []struct {
		name     string
		min, max float64
	}{{"ddim", 1.5, 2.5}, {"dpm++2m", 3, 6}, {"heun", 3, 6}} {
		e40, e80 := errOf(c.name, 40, "karras"), errOf(c.name, 80, "karras")
		t.Logf("%s: %.2e at 40 steps, %.2e at 80", c.name, e40, e80)
		if r := e40 / e80; !(r >= c.min && r <= c.max) {
			t.Errorf("%s: doubling the steps divided the error by %.2f, want %g-%g", c.name, r, c.min, c.max)
		}
	}
}

// TestSolversFromZeroTerminalSNR starts every deterministic sampler at
// t = T of a zero-terminal-SNR schedule (trailing spacing), where x_T is
// noise alone and √ᾱ_T is about 5e-5: they stay finite and land on the
// Gaussian data's exact endpoint.
func TestSolversFromZeroTerminalSNR(t *testing.T) {
	s := ZeroTerminalSNR(ref(t))
	errOf := gaussianError(t, s)
	// First-order samplers land about 0.12 off at 30 steps (as with any
	// schedule), the second-order ones 4x closer or better.
	for name, bound := range map[string]float64{"ddim": 0.2, "euler": 0.2, "dpm++2m": 0.05, "heun": 0.05} {
		if ts := newSampler(t, name, s, Options{Steps: 30, Spacing: "trailing"}).Timesteps(); ts[0] != s.T {
			t.Fatalf("%s, trailing: starts at %d", name, ts[0])
		}
		e := errOf(name, 30, "trailing")
		t.Logf("%s, 30 trailing steps: %.2e", name, e)
		if !(e < bound) {
			t.Errorf("%s from SNR 0: error %.3g", name, e)
		}
	}
}

// gaussianError returns the max error against the exact endpoint for a
// sampler, steps and spacing on s (see TestSolversOnGaussianData).
func gaussianError(t *testing.T, s *Schedule) func(name string, steps int, spacing string) float64 {
	const mu, sd = 0.3, 0.5
	exact := func(x *torch.Tensor, tt int) *torch.Tensor {
		ab := s.AlphaBar(tt)
		return x.SubScalar(math.Sqrt(ab) * mu).MulScalar(math.Sqrt(1-ab) / (ab*sd*sd + 1 - ab))
	}
	return func(name string, steps int, spacing string) float64 {
		var e float64
		on(t, func() {
			sm := newSampler(t, name, s, Options{Steps: steps, Spacing: spacing})
			ts := sm.Timesteps()
			torch.ManualSeed(1)
			xT := torch.Randn([]int64{256, 1, 1, 1}, torch.Float64).Keep()
			defer xT.Free()
			got := Run(sm, exact, func(int) *torch.Tensor { return xT.Clone() })
			ab := s.AlphaBar(ts[0])
			z := xT.SubScalar(math.Sqrt(ab) * mu).DivScalar(math.Sqrt(ab*sd*sd + 1 - ab))
			ab = s.AlphaBar(ts[len(ts)-1])
			want := z.MulScalar(math.Sqrt(ab) * sd * sd / math.Sqrt(ab*sd*sd+1-ab)).AddScalar(mu)
			e = got.Sub(want).Abs().Max().Item()
		})
		return e
	}
}

func TestHeunVisitsEachTimestepAfterTheFirstTwice(t *testing.T) {
	s := ref(t)
	if got := newSampler(t, "heun", s, Options{Steps: 3}).Timesteps(); !slices.Equal(got, []int{667, 334, 334, 1, 1}) {
		t.Errorf("heun, 3 steps, visits %v", got)
	}
}
