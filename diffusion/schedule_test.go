package diffusion

import (
	"math"
	"slices"
	"strings"
	"testing"

	"kakusan/torch"
)

func TestSchedules(t *testing.T) {
	s := ref(t)
	if s.Betas[0] != 1e-4 || math.Abs(s.Betas[999]-0.02) > 1e-15 || math.Abs(s.Betas[1]-(1e-4+(0.02-1e-4)/999)) > 1e-15 {
		t.Errorf("linear betas %v %v %v", s.Betas[0], s.Betas[1], s.Betas[999])
	}
	prod := 1.0
	for i := range 1000 {
		prod *= 1 - s.Betas[i]
		if s.Alphas[i] != 1-s.Betas[i] {
			t.Fatalf("alpha %d = %v, want 1 - beta", i+1, s.Alphas[i])
		}
	}
	if math.Abs(s.AlphaBar(1000)-prod) > 1e-15 || s.AlphaBar(0) != 1 {
		t.Errorf("alpha bar %v vs %v", s.AlphaBar(1000), prod)
	}
	c, _ := Cosine(1000)
	f := func(t float64) float64 { x := math.Cos((t/1000 + 0.008) / 1.008 * math.Pi / 2); return x * x }
	for _, tt := range []int{1, 10, 500, 900} {
		if want := f(float64(tt)) / f(0); math.Abs(c.AlphaBar(tt)-want) > 1e-12 {
			t.Errorf("cosine alpha bar(%d) = %v, want %v", tt, c.AlphaBar(tt), want)
		}
	}
	if c.Betas[999] != 0.999 {
		t.Errorf("cosine beta_T = %v, want the clip 0.999", c.Betas[999])
	}
	for _, bad := range [][3]float64{{0, 1e-4, 0.02}, {10, 0, 0.02}, {10, 0.03, 0.02}, {10, 1e-4, 1}} {
		if _, err := Linear(int(bad[0]), bad[1], bad[2]); err == nil {
			t.Errorf("Linear%v accepted", bad)
		}
	}
}

func TestScheduleBound(t *testing.T) {
	for _, T := range []int{0, -1, MaxTimesteps + 1} {
		if _, err := Linear(T, 1e-4, 0.02); err == nil {
			t.Errorf("Linear(%d) accepted", T)
		}
		if _, err := Cosine(T); err == nil {
			t.Errorf("Cosine(%d) accepted", T)
		}
		if _, err := NewSchedule("linear", T, 1e-4, 0.02); err == nil {
			t.Errorf("NewSchedule(linear, %d) accepted", T)
		}
	}
	if s, err := Linear(MaxTimesteps, 1e-6, 1e-3); err != nil || s.T != MaxTimesteps {
		t.Errorf("Linear(%d): %v", MaxTimesteps, err)
	}
	if s, err := Linear(1, 0.3, 0.3); err != nil || s.Betas[0] != 0.3 {
		t.Errorf("Linear(1): %v", err)
	}
}

func TestNewSchedule(t *testing.T) {
	l, err := NewSchedule("linear", 100, 1e-4, 0.02)
	want, _ := Linear(100, 1e-4, 0.02)
	if err != nil || !slices.Equal(l.Betas, want.Betas) || !slices.Equal(l.AlphaBars, want.AlphaBars) {
		t.Errorf("linear: %v", err)
	}
	c, err := NewSchedule("cosine", 100, 0, 0)
	want, _ = Cosine(100)
	if err != nil || !slices.Equal(c.Betas, want.Betas) || !slices.Equal(c.AlphaBars, want.AlphaBars) {
		t.Errorf("cosine: %v", err)
	}
	if _, err := NewSchedule("sigmoid", 100, 1e-4, 0.02); err == nil || !strings.Contains(err.Error(), "cosine, linear") {
		t.Errorf("unknown kind: %v", err)
	}
	if _, err := NewSchedule("linear", 100, 0.03, 0.02); err == nil {
		t.Error("linear betas not checked")
	}
}

func TestDDPMPosteriorClosedForm(t *testing.T) {
	s := ref(t)
	on(t, func() {
		defer s.Free()
		torch.ManualSeed(1)
		x0 := torch.Rand([]int64{4, 1, 3, 3}, torch.Float64)
		eps := torch.Randn([]int64{4, 1, 3, 3}, torch.Float64)
		for _, tt := range []int{2, 10, 300, 1000} {
			ab, abPrev, beta := s.AlphaBar(tt), s.AlphaBar(tt-1), s.Betas[tt-1]
			// Closed forms of q(x_{t-1} | x_t, x_0).
			wantVar := (1 - abPrev) / (1 - ab) * beta
			if v := s.PosteriorVariance(tt); math.Abs(v-wantVar) > 1e-15 {
				t.Errorf("t=%d: posterior variance %v, want %v", tt, v, wantVar)
			}
			ts := torch.Full([]int64{4}, float64(tt), torch.Int64)
			xt := s.QSample(x0, ts, eps)
			c0, ct := math.Sqrt(abPrev)*beta/(1-ab), math.Sqrt(1-beta)*(1-abPrev)/(1-ab)
			want := x0.MulScalar(c0).Add(xt.MulScalar(ct))
			// With the true noise and z = 0 the ancestral step lands on the posterior mean.
			got := s.DDPMStep(xt, eps, tt, func() *torch.Tensor { return torch.ZerosLike(xt) })
			if !got.AllClose(want, 1e-10, 1e-12) {
				t.Errorf("t=%d: DDPM step mean differs from the posterior mean", tt)
			}
			g0, gt := s.PosteriorMeanCoefs(tt)
			if math.Abs(g0-c0) > 1e-15 || math.Abs(gt-ct) > 1e-15 {
				t.Errorf("t=%d: coefficients %v %v, want %v %v", tt, g0, gt, c0, ct)
			}
		}
		// At t = 1 the step is the mean alone: no noise is drawn.
		ts := torch.Full([]int64{4}, 1, torch.Int64)
		xt := s.QSample(x0, ts, eps)
		s.DDPMStep(xt, eps, 1, func() *torch.Tensor { t.Error("t=1 drew noise"); return torch.ZerosLike(xt) })
	})
}
