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

// After Restart a DPM-Solver++ step is first order, DDIM's, and Run
// restarts it exactly where the predictor's piece changes.
func TestDPMSolverRestartsWherePiecesChange(t *testing.T) {
	s := ref(t)
	on(t, func() {
		sm := newSampler(t, "dpm++2m", s, Options{Steps: 10})
		defer sm.(*dpmSolver).Free()
		ts := sm.Timesteps()
		x, e0, e1 := torch.Randn([]int64{3, 4}, torch.Float64), torch.Randn([]int64{3, 4}, torch.Float64), torch.Randn([]int64{3, 4}, torch.Float64)
		x1 := sm.Step(x, e0, 0, nil)
		second := sm.Step(x1, e1, 1, nil)
		sm.(restarter).Restart()
		sm.Step(x, e0, 0, nil)
		sm.(restarter).Restart()
		got := sm.Step(x1, e1, 1, nil)
		if d := got.Sub(s.DDIMStep(x1, e1, ts[1], ts[2], 0, nil)).Abs().Max().Item(); d > 1e-12 {
			t.Errorf("the step after Restart differs from DDIM's by %g", d)
		}
		if d := got.Sub(second).Abs().Max().Item(); d < 1e-6 {
			t.Errorf("the step after Restart is the second-order one (differs by %g)", d)
		}

		// Run with a predictor whose piece changes between ts[k-1] and ts[k].
		const k = 6
		pieces := func(tt int) int {
			if tt > ts[k] {
				return 1
			}
			return 0
		}
		eps := map[int]*torch.Tensor{}
		for _, tt := range ts {
			eps[tt] = torch.Randn([]int64{3, 4}, torch.Float64).Keep()
			defer eps[tt].Free()
		}
		pred := func(x *torch.Tensor, tt int) *torch.Tensor { return x.MulScalar(0.1).Add(eps[tt]) }
		xT := torch.Randn([]int64{3, 4}, torch.Float64).Keep()
		defer xT.Free()
		noise := func(int) *torch.Tensor { return xT.Clone() }
		run := Run(newSampler(t, "dpm++2m", s, Options{Steps: 10}), pred, pieces, noise)
		by := newSampler(t, "dpm++2m", s, Options{Steps: 10})
		defer by.(*dpmSolver).Free()
		want := xT.Clone()
		for i, tt := range ts {
			if i == k {
				by.(restarter).Restart()
			}
			want = by.Step(want, pred(want, tt), i, nil)
		}
		if d := run.Sub(want).Abs().Max().Item(); d > 1e-12 {
			t.Errorf("Run with pieces differs by %g from the steps restarted at step %d", d, k)
		}
		if d := run.Sub(Run(newSampler(t, "dpm++2m", s, Options{Steps: 10}), pred, nil, noise)).Abs().Max().Item(); d < 1e-6 {
			t.Errorf("Run with pieces is Run without them (differs by %g): no restart", d)
		}
	})
}

// Guidance in an interval makes the predictor piecewise. With two pieces
// that are the exact predictors of two Gaussians, N(μ_A, s²) above a
// visited timestep t_b and N(μ_B, s²) from t_b down, the piecewise ODE's
// endpoint is known: z = (x_t - α_t μ)/√(α_t² s² + σ_t²) is kept within
// each piece and x is continuous at t_b. Restarted at t_b, DPM-Solver++
// stays a better solver than DDIM. Extrapolating μ_B - μ_A as if it were a
// slope throws it off where the pieces meet late: at 50 leading steps the
// default's guidance interval ends between t = 101 and 81.
func TestDPMSolverAcrossPieces(t *testing.T) {
	s := ref(t)
	A, B := gaussian{s, 0.3, 0.5}, gaussian{s, -0.2, 0.5}
	on(t, func() {
		for _, c := range []struct {
			steps, b  int
			jumpHurts bool // extrapolating across t_b costs accuracy
		}{
			{50, 45, true},  // t_b = 81
			{20, 10, false}, // t_b = 451: mid-run the ODE forgets most of the jump
			{20, 18, false}, // t_b = 51: the step after it, into t = 1, is first order anyway (r < 1/2)
		} {
			ts := newSampler(t, "ddim", s, Options{Steps: c.steps}).Timesteps()
			tb := ts[c.b]
			pieces := func(tt int) int {
				if tt > tb {
					return 1
				}
				return 0
			}
			pred := func(x *torch.Tensor, tt int) *torch.Tensor {
				if pieces(tt) == 1 {
					return A.eps(x, tt)
				}
				return B.eps(x, tt)
			}
			torch.ManualSeed(1)
			xT := torch.Randn([]int64{256, 1, 1, 1}, torch.Float64).Keep()
			noise := func(int) *torch.Tensor { return xT.Clone() }
			// The exact endpoint: A's flow from ts[0] to t_b, then B's to the last
			// visited timestep, whose x̂₀ every sampler returns.
			xb := A.at(A.z(xT, ts[0]), tb)
			want := B.x0(B.z(xb, tb), ts[len(ts)-1])
			errOf := func(name string, p Pieces) float64 {
				return Run(newSampler(t, name, s, Options{Steps: c.steps}), pred, p, noise).Sub(want).Abs().Max().Item()
			}
			ddim, restarted, across := errOf("ddim", pieces), errOf("dpm++2m", pieces), errOf("dpm++2m", nil)
			t.Logf("%d steps, pieces meet at t = %d: ddim %.2e, dpm++2m restarted %.2e, extrapolated across %.2e", c.steps, tb, ddim, restarted, across)
			if !(restarted < ddim) {
				t.Errorf("%d steps, t_b = %d: dpm++2m restarted is off by %.2e, no better than ddim's %.2e", c.steps, tb, restarted, ddim)
			}
			switch {
			case c.jumpHurts && !(across > 2*restarted):
				t.Errorf("%d steps, t_b = %d: extrapolating across the pieces (%.2e) is not twice restarting's error (%.2e)", c.steps, tb, across, restarted)
			case !c.jumpHurts && !(restarted < 1.1*across):
				t.Errorf("%d steps, t_b = %d: restarting (%.2e) costs accuracy against extrapolating across (%.2e)", c.steps, tb, restarted, across)
			}
			xT.Free()
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
		euler := Run(newSampler(t, "euler", s, Options{Steps: 25}), pred, nil, noise)
		torch.ManualSeed(3)
		ddim := Run(newSampler(t, "ddim", s, Options{Steps: 25}), pred, nil, noise)
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
	// With leading spacing, the default, whose last step (into t = 1) is
	// over twice as long in λ as the one before it, DPM-Solver++ takes that
	// step at first order and lands closer than DDIM at every count, and
	// from 15 steps within half its error; at second order it overshot,
	// 1.4-1.8x DDIM's error at 15, 20 and 30 steps.
	for _, n := range []int{10, 15, 20, 30, 50, 80} {
		ddim, dpm := errOf("ddim", n, "leading"), errOf("dpm++2m", n, "leading")
		t.Logf("leading, %d steps: ddim %.2e, dpm++2m %.2e", n, ddim, dpm)
		if bound := map[bool]float64{true: 1, false: 0.5}[n < 15]; !(dpm < ddim*bound) {
			t.Errorf("leading, %d steps: dpm++2m's error %.2e is not under %g of ddim's %.2e", n, dpm, bound, ddim)
		}
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
	g := gaussian{s, 0.3, 0.5}
	return func(name string, steps int, spacing string) float64 {
		var e float64
		on(t, func() {
			sm := newSampler(t, name, s, Options{Steps: steps, Spacing: Spacing(spacing)})
			ts := sm.Timesteps()
			torch.ManualSeed(1)
			xT := torch.Randn([]int64{256, 1, 1, 1}, torch.Float64).Keep()
			defer xT.Free()
			got := Run(sm, g.eps, nil, func(int) *torch.Tensor { return xT.Clone() })
			e = got.Sub(g.x0(g.z(xT, ts[0]), ts[len(ts)-1])).Abs().Max().Item()
		})
		return e
	}
}

// gaussian is data x₀ ~ N(mu, sd²) under schedule s, whose exact noise
// predictor and probability-flow ODE are known (TestSolversOnGaussianData).
type gaussian struct {
	s      *Schedule
	mu, sd float64
}

// spread is √(α_t² s² + σ_t²), the standard deviation of x_t.
func (g gaussian) spread(t int) float64 {
	ab := g.s.AlphaBar(t)
	return math.Sqrt(ab*g.sd*g.sd + 1 - ab)
}

// eps is the exact noise predictor ε*(x_t) = σ_t (x_t - α_t μ)/(α_t² s² + σ_t²).
func (g gaussian) eps(x *torch.Tensor, t int) *torch.Tensor {
	ab, d := g.s.AlphaBar(t), g.spread(t)
	return x.SubScalar(math.Sqrt(ab) * g.mu).MulScalar(math.Sqrt(1-ab) / (d * d))
}

// z is (x_t - α_t μ)/√(α_t² s² + σ_t²), which the ODE keeps constant.
func (g gaussian) z(x *torch.Tensor, t int) *torch.Tensor {
	return x.SubScalar(math.Sqrt(g.s.AlphaBar(t)) * g.mu).DivScalar(g.spread(t))
}

// at is the x_t whose z is z.
func (g gaussian) at(z *torch.Tensor, t int) *torch.Tensor {
	return z.MulScalar(g.spread(t)).AddScalar(math.Sqrt(g.s.AlphaBar(t)) * g.mu)
}

// x0 is E[x₀ | x_t] at the x_t whose z is z: μ + α_t s² z/√(α_t² s² + σ_t²),
// what every sampler returns from its last visited timestep t.
func (g gaussian) x0(z *torch.Tensor, t int) *torch.Tensor {
	return z.MulScalar(math.Sqrt(g.s.AlphaBar(t)) * g.sd * g.sd / g.spread(t)).AddScalar(g.mu)
}

func TestHeunVisitsEachTimestepAfterTheFirstTwice(t *testing.T) {
	s := ref(t)
	if got := newSampler(t, "heun", s, Options{Steps: 3}).Timesteps(); !slices.Equal(got, []int{667, 334, 334, 1, 1}) {
		t.Errorf("heun, 3 steps, visits %v", got)
	}
}
