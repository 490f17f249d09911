package diffusion

import (
	"errors"
	"math"
	"strings"
	"testing"

	"kakusan/torch"
)

var kinds = []Prediction{Eps, V, X0}

// triple is x_0, ε, v and x_t at timestep t of s, in float64 computed in Go.
func triple(s *Schedule, t int, x0, eps []float64) (xt, v []float64) {
	a, b := math.Sqrt(s.AlphaBar(t)), math.Sqrt(1-s.AlphaBar(t))
	for i := range x0 {
		xt = append(xt, a*x0[i]+b*eps[i])
		v = append(v, a*eps[i]-b*x0[i])
	}
	return xt, v
}

func TestConvertClosedForms(t *testing.T) {
	// ᾱ = 0.64: √ᾱ = 0.8, √(1-ᾱ) = 0.6, so the values are written out by hand.
	hand := &Schedule{T: 1, Betas: []float64{0.36}, Alphas: []float64{0.64}, AlphaBars: []float64{0.64}}
	x0 := []float64{1, -2, 0.5}
	eps := []float64{0.5, 1, -1.5}
	xt := []float64{1.1, -1.0, -0.5} // 0.8 x_0 + 0.6 ε
	v := []float64{-0.2, 2.0, -1.5}  // 0.8 ε - 0.6 x_0
	s := ref(t)
	x0r := []float64{0.3, -0.9, 1.7, 0.01}
	epsr := []float64{-1.2, 0.4, 0.8, 2.5}
	xtr, vr := triple(s, 300, x0r, epsr)
	cases := []struct {
		s   *Schedule
		t   int
		tol float64
		xt  []float64
		val map[Prediction][]float64
	}{
		{hand, 1, 1e-15, xt, map[Prediction][]float64{Eps: eps, V: v, X0: x0}},
		{s, 300, 1e-13, xtr, map[Prediction][]float64{Eps: epsr, V: vr, X0: x0r}},
	}
	on(t, func() {
		for _, c := range cases {
			x := torch.FromSlice(c.xt, nil)
			for _, from := range kinds {
				for _, to := range kinds {
					got := c.s.Convert(torch.FromSlice(c.val[from], nil), x, c.t, from, to).Float64s()
					for i, w := range c.val[to] {
						if math.Abs(got[i]-w) > c.tol*(1+math.Abs(w)) {
							t.Errorf("t=%d %s→%s: element %d = %v, want %v", c.t, from, to, i, got[i], w)
						}
					}
				}
			}
		}
	})
}

func TestConvertRoundTrips(t *testing.T) {
	s := ref(t)
	on(t, func() {
		torch.ManualSeed(3)
		x := torch.Randn([]int64{8, 1, 5, 5})
		out := torch.Randn([]int64{8, 1, 5, 5})
		for _, tt := range []int{50, 300, 600} {
			for _, from := range kinds {
				for _, to := range kinds {
					back := s.Convert(s.Convert(out, x, tt, from, to), x, tt, to, from)
					if !back.AllClose(out, 0, 1e-5) {
						t.Errorf("t=%d: %s→%s→%s is off by %v", tt, from, to, from, back.Sub(out).Abs().Max().Item())
					}
				}
			}
		}
	})
}

func TestConvertKeepsTheOldOps(t *testing.T) {
	s := ref(t)
	on(t, func() {
		torch.ManualSeed(4)
		x := torch.Randn([]int64{4, 1, 3, 3})
		out := torch.Randn([]int64{4, 1, 3, 3})
		if s.Convert(out, x, 10, Eps, Eps) != out {
			t.Error("eps→eps is not the output itself")
		}
		// sample.Guided's v→ε.
		ab := s.AlphaBar(700)
		want := out.MulScalar(math.Sqrt(ab)).Add(x.MulScalar(math.Sqrt(1 - ab)))
		if !identical(s.Convert(out, x, 700, V, Eps), want) {
			t.Error("v→ε differs from sample.Guided's")
		}
		// DDIMStep's x̂_0.
		want = x.Sub(out.MulScalar(math.Sqrt(1 - ab))).DivScalar(math.Sqrt(ab))
		if !identical(s.Convert(out, x, 700, Eps, X0), want) {
			t.Error("ε→x_0 differs from DDIMStep's")
		}
		var te *torch.Error
		err := torch.Try(func() error { s.Convert(out, x, 1, "score", Eps); return nil })
		if !errors.As(err, &te) || !strings.Contains(err.Error(), "score") {
			t.Errorf("unknown kind: %v", err)
		}
	})
}

func TestTarget(t *testing.T) {
	s := ref(t)
	on(t, func() {
		defer s.Free()
		torch.ManualSeed(5)
		x0 := torch.Rand([]int64{4, 1, 3, 3})
		eps := torch.Randn([]int64{4, 1, 3, 3})
		ts := torch.FromSlice([]int64{1, 10, 500, 1000}, nil)
		if s.Target(Eps, x0, ts, eps) != eps || s.Target(X0, x0, ts, eps) != x0 {
			t.Error("eps and x0 targets are not the inputs")
		}
		if !identical(s.Target(V, x0, ts, eps), s.VTarget(x0, ts, eps)) {
			t.Error("v target is not VTarget")
		}
		// The v target converts to ε and x_0 at each image's timestep.
		xt := s.QSample(x0, ts, eps)
		v := s.Target(V, x0, ts, eps)
		for i, tt := range []int{1, 10, 500, 1000} {
			xi, vi := xt.Narrow(0, int64(i), 1), v.Narrow(0, int64(i), 1)
			if !s.Convert(vi, xi, tt, V, Eps).AllClose(eps.Narrow(0, int64(i), 1), 1e-4, 1e-5) {
				t.Errorf("t=%d: v target does not give back ε", tt)
			}
		}
		err := torch.Try(func() error { s.Target("score", x0, ts, eps); return nil })
		if err == nil {
			t.Error("unknown target accepted")
		}
	})
}
