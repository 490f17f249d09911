package diffusion

import (
	"math"
	"slices"
	"strings"
	"testing"

	"kakusan/torch"
)

// oldAdvance, oldDDPMStep, oldDDIMStep, oldDDPM and oldDDIM are
// sample/diffusion.go's loops and steps as they were.
func oldAdvance(x *torch.Tensor, step func() *torch.Tensor) *torch.Tensor {
	sc := torch.NewScope()
	next := sc.Escape(step())
	sc.Close()
	x.Free()
	return next
}

func oldDDPMStep(s *Schedule, x, eps *torch.Tensor, t int, z func() *torch.Tensor) *torch.Tensor {
	beta, ab := s.Betas[t-1], s.AlphaBar(t)
	mean := x.Sub(eps.MulScalar(beta / math.Sqrt(1-ab))).DivScalar(math.Sqrt(s.Alphas[t-1]))
	if t == 1 {
		return mean
	}
	return mean.Add(z().MulScalar(math.Sqrt(s.PosteriorVariance(t))))
}

func oldDDIMStep(s *Schedule, x, eps *torch.Tensor, t, prev int, eta float64, z func() *torch.Tensor) *torch.Tensor {
	ab, abPrev := s.AlphaBar(t), s.AlphaBar(prev)
	x0 := x.Sub(eps.MulScalar(math.Sqrt(1 - ab))).DivScalar(math.Sqrt(ab))
	sigma := eta * math.Sqrt((1-abPrev)/(1-ab)) * math.Sqrt(1-ab/abPrev)
	out := x0.MulScalar(math.Sqrt(abPrev)).Add(eps.MulScalar(math.Sqrt(math.Max(1-abPrev-sigma*sigma, 0))))
	if sigma > 0 {
		out = out.Add(z().MulScalar(sigma))
	}
	return out
}

func oldDDPM(s *Schedule, eps Predictor, noise Noise) *torch.Tensor {
	x := noise(0)
	for t := s.T; t >= 1; t-- {
		x = oldAdvance(x, func() *torch.Tensor {
			return oldDDPMStep(s, x, eps(x, t), t, func() *torch.Tensor { return noise(s.T - t + 1) })
		})
	}
	return x
}

func oldDDIM(s *Schedule, eps Predictor, noise Noise, steps int, eta float64) *torch.Tensor {
	ts := oldDDIMTimesteps(s.T, steps)
	x := noise(0)
	for i, t := range ts {
		prev := 0
		if i+1 < len(ts) {
			prev = ts[i+1]
		}
		x = oldAdvance(x, func() *torch.Tensor {
			return oldDDIMStep(s, x, eps(x, t), t, prev, eta, func() *torch.Tensor { return noise(i + 1) })
		})
	}
	return x
}

func newSampler(t *testing.T, name string, s *Schedule, o Options) Sampler {
	t.Helper()
	sm, err := NewSampler(name, s, o)
	if err != nil {
		t.Fatal(err)
	}
	return sm
}

func TestSamplers(t *testing.T) {
	if got := Samplers(); !slices.Equal(got, []string{"ddim", "ddpm", "dpm++2m", "euler", "heun"}) {
		t.Errorf("Samplers() = %v", got)
	}
}

func TestSamplerOptionsAreChecked(t *testing.T) {
	s := ref(t)
	bad := []struct {
		name string
		o    Options
		msg  string
	}{
		{"lms", Options{Steps: 50}, "ddim, ddpm, dpm++2m, euler, heun"},
		{"", Options{Steps: 50}, "ddim, ddpm"},
		{"ddim", Options{Steps: 0}, "steps"},
		{"ddim", Options{Steps: 1001}, "steps"},
		{"ddim", Options{Steps: -5}, "steps"},
		{"ddim", Options{Steps: 50, Eta: math.NaN()}, "eta"},
		{"ddim", Options{Steps: 50, Eta: 2}, "eta"},
		{"ddim", Options{Steps: 50, Eta: -0.1}, "eta"},
		{"ddim", Options{Steps: 50, Eta: math.Inf(1)}, "eta"},
		{"ddim", Options{Steps: 50, Spacing: "cosine"}, "karras, leading, linspace, trailing"},
		{"dpm++2m", Options{Steps: 0}, "steps"},
		{"heun", Options{Steps: 50, Spacing: "x"}, "spacing"},
		{"euler", Options{Steps: 50, Eta: 0.5}, "eta is for ddim"},
	}
	for _, b := range bad {
		if sm, err := NewSampler(b.name, s, b.o); err == nil || sm != nil || !strings.Contains(err.Error(), b.msg) {
			t.Errorf("NewSampler(%q, %+v): %v, want an error about %s", b.name, b.o, err, b.msg)
		}
		if err := CheckSampler(b.name, 1000, b.o); err == nil || !strings.Contains(err.Error(), b.msg) {
			t.Errorf("CheckSampler(%q, %+v): %v, want an error about %s", b.name, b.o, err, b.msg)
		}
	}
	good := []struct {
		name string
		o    Options
	}{
		{"ddim", Options{Steps: 1}},
		{"ddim", Options{Steps: 1000, Eta: 1, Spacing: "trailing"}},
		{"ddim", Options{Steps: 50, Eta: 0.5, Spacing: "linspace"}},
		{"ddpm", Options{}}, // ddpm reads no options
		{"ddpm", Options{Steps: 5000, Eta: math.NaN(), Spacing: "x"}},
		{"dpm++2m", Options{Steps: 15, Spacing: "karras"}},
		{"euler", Options{Steps: 1}},
		{"heun", Options{Steps: 1000, Spacing: "trailing"}},
	}
	for _, g := range good {
		if _, err := NewSampler(g.name, s, g.o); err != nil {
			t.Errorf("NewSampler(%q, %+v): %v", g.name, g.o, err)
		}
		if err := CheckSampler(g.name, 1000, g.o); err != nil {
			t.Errorf("CheckSampler(%q, %+v): %v", g.name, g.o, err)
		}
	}
	for _, T := range []int{0, MaxTimesteps + 1} {
		if err := CheckSampler("ddpm", T, Options{}); err == nil {
			t.Errorf("T=%d accepted", T)
		}
	}
}

func TestSamplerTimesteps(t *testing.T) {
	s := ref(t)
	ts := newSampler(t, "ddpm", s, Options{Steps: 10}).Timesteps()
	if len(ts) != 1000 || ts[0] != 1000 || ts[999] != 1 {
		t.Errorf("ddpm visits %d timesteps from %d to %d", len(ts), ts[0], ts[len(ts)-1])
	}
	sm := newSampler(t, "ddim", s, Options{Steps: 4, Spacing: "trailing"})
	ts = sm.Timesteps()
	if !slices.Equal(ts, []int{1000, 750, 500, 250}) {
		t.Errorf("ddim trailing visits %v", ts)
	}
	ts[0] = 3
	if sm.Timesteps()[0] != 1000 {
		t.Error("Timesteps exposes the sampler's own slice")
	}
}

func TestDDIMEtaZeroIsTheODEStep(t *testing.T) {
	s, _ := Linear(50, 1e-4, 0.2)
	on(t, func() {
		// A fixed "network": ε̂ = 0.3 x_t + 0.1.
		pred := func(x *torch.Tensor, _ int) *torch.Tensor { return x.MulScalar(0.3).AddScalar(0.1) }
		start := []float64{1.5, -0.2, 0.7}
		noise := func(step int) *torch.Tensor {
			if step != 0 {
				t.Error("eta 0 drew noise")
			}
			return torch.FromSlice(start, []int64{3, 1, 1, 1}, torch.Float64)
		}
		got := Run(newSampler(t, "ddim", s, Options{Steps: s.T}), pred, nil, noise)
		// The deterministic step in float64, element by element:
		// x_{t-1} = √ᾱ_{t-1} (x_t - √(1-ᾱ_t) ε̂)/√ᾱ_t + √(1-ᾱ_{t-1}) ε̂.
		want := append([]float64(nil), start...)
		for tt := s.T; tt >= 1; tt-- {
			ab, abPrev := s.AlphaBar(tt), s.AlphaBar(tt-1)
			for i, x := range want {
				e := 0.3*x + 0.1
				want[i] = math.Sqrt(abPrev)*(x-math.Sqrt(1-ab)*e)/math.Sqrt(ab) + math.Sqrt(1-abPrev)*e
			}
		}
		g := got.Float64s()
		for i := range want {
			if math.Abs(g[i]-want[i]) > 1e-10*(1+math.Abs(want[i])) {
				t.Errorf("element %d: %v, want %v", i, g[i], want[i])
			}
		}
		ts := newSampler(t, "ddim", s, Options{Steps: 5}).Timesteps()
		if ts[0] != 41 || ts[4] != 1 {
			t.Errorf("timesteps %v", ts)
		}
	})
}

func TestDDIMEtaOneHasDDPMVariance(t *testing.T) {
	// Over every timestep, η = 1 gives σ² = β̃_t, and the DDIM step is the
	// DDPM step: both are the posterior mean at x̂_0 plus √β̃_t z.
	s := ref(t)
	on(t, func() {
		torch.ManualSeed(7)
		x := torch.Randn([]int64{4, 1, 3, 3}, torch.Float64)
		eps := torch.Randn([]int64{4, 1, 3, 3}, torch.Float64)
		z := torch.Randn([]int64{4, 1, 3, 3}, torch.Float64)
		for _, tt := range []int{1, 2, 50, 999, 1000} {
			a := s.DDIMStep(x, eps, tt, tt-1, 1, func() *torch.Tensor { return z })
			b := s.DDPMStep(x, eps, tt, func() *torch.Tensor { return z })
			if !a.AllClose(b, 1e-9, 1e-9) {
				t.Errorf("t=%d: DDIM η=1 differs from DDPM by %v", tt, a.Sub(b).Abs().Max().Item())
			}
		}
	})
}

func TestRunIsBitIdenticalToTheOldLoops(t *testing.T) {
	s := ref(t)
	on(t, func() {
		y := torch.FromSlice([]int64{2, 5}, nil)
		images := []int{3, 8}
		shape := []int64{1, 4, 4}
		noise := func() Noise { return ImageNoise(SameSeed(11, len(images)), images, shape, torch.CPU) }
		for _, kind := range []Prediction{Eps, V} {
			pred := s.AsEps(Guided(fakeNet, y, 3, 0), kind)
			old := oldGuided(s, fakeNet, y, 3, kind == V)
			for _, c := range []struct {
				steps int
				eta   float64
			}{{50, 0}, {50, 0.5}, {4, 1}, {5, 0.3}, {3, 0}} {
				got := Run(newSampler(t, "ddim", s, Options{Steps: c.steps, Eta: c.eta}), pred, nil, noise())
				want := oldDDIM(s, old, noise(), c.steps, c.eta)
				if !identical(got, want) {
					t.Errorf("%s: ddim %d steps η %g differs from the old loop", kind, c.steps, c.eta)
				}
			}
			got := Run(newSampler(t, "ddpm", s, Options{}), pred, nil, noise())
			if want := oldDDPM(s, old, noise()); !identical(got, want) {
				t.Errorf("%s: ddpm differs from the old loop", kind)
			}
		}
	})
}

func TestRunFreesEachStep(t *testing.T) {
	s := ref(t)
	on(t, func() {
		// Multistep samplers keep state between steps: Run frees it.
		for _, name := range []string{"dpm++2m", "heun"} {
			before := torch.LiveTensors()
			Run(newSampler(t, name, s, Options{Steps: 7}), func(x *torch.Tensor, _ int) *torch.Tensor { return x.MulScalar(0.1) },
				nil, func(int) *torch.Tensor { return torch.Randn([]int64{2, 3}) }).Free()
			if got := torch.LiveTensors() - before; got != 0 {
				t.Errorf("%s: %d tensors left after Run", name, got)
			}
		}
		sm := newSampler(t, "ddim", s, Options{Steps: 20, Eta: 1})
		var drawn []int
		noise := func(step int) *torch.Tensor {
			drawn = append(drawn, step)
			return torch.Randn([]int64{2, 1, 3, 3})
		}
		var seen []int
		pred := func(x *torch.Tensor, tt int) *torch.Tensor {
			seen = append(seen, tt)
			return x.MulScalar(0.5).Sin().AddScalar(0.1)
		}
		before := torch.LiveTensors()
		x := Run(sm, pred, nil, noise)
		if got := torch.LiveTensors() - before; got != 1 {
			t.Errorf("%d tensors live after Run, want the result alone", got)
		}
		if x.Freed() || !slices.Equal(seen, sm.Timesteps()) {
			t.Errorf("visited %v, want %v", seen, sm.Timesteps())
		}
		// η = 1 draws at every step but the last (σ = 0 going to x_0).
		want := []int{0}
		for i := 1; i < 20; i++ {
			want = append(want, i)
		}
		if !slices.Equal(drawn, want) {
			t.Errorf("noise drawn for steps %v, want %v", drawn, want)
		}
	})
}
