package sample

import (
	"math"
	"testing"

	"kakusan/torch"
	"kakusan/torch/torchtest"
)

var on = torchtest.Run

func ref(t *testing.T) *Schedule {
	s, err := Linear(1000, 1e-4, 0.02)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSchedules(t *testing.T) {
	s := ref(t)
	if s.Betas[0] != 1e-4 || math.Abs(s.Betas[999]-0.02) > 1e-15 || math.Abs(s.Betas[1]-(1e-4+(0.02-1e-4)/999)) > 1e-15 {
		t.Errorf("linear betas %v %v %v", s.Betas[0], s.Betas[1], s.Betas[999])
	}
	prod := 1.0
	for i := range 1000 {
		prod *= 1 - s.Betas[i]
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
	for _, bad := range [][3]float64{{0, 1e-4, 0.02}, {10, 0, 0.02}, {10, 0.03, 0.02}, {10, 1e-4, 1}} {
		if _, err := Linear(int(bad[0]), bad[1], bad[2]); err == nil {
			t.Errorf("Linear%v accepted", bad)
		}
	}
}

func TestForwardProcessMoments(t *testing.T) {
	s := ref(t)
	on(t, func() {
		torch.ManualSeed(0)
		const n = 200000
		x0 := torch.Full([]int64{n, 1, 1, 1}, 0.7, torch.Float64)
		for _, tt := range []int{1, 100, 500, 1000} {
			ts := torch.Full([]int64{n}, float64(tt), torch.Int64)
			xt := s.QSample(x0, ts, torch.RandnLike(x0))
			ab := s.AlphaBar(tt)
			mean, std := xt.Mean().Item(), xt.Std(true, false).Item()
			if want := math.Sqrt(ab) * 0.7; math.Abs(mean-want) > 5*math.Sqrt(1-ab)/math.Sqrt(n)+1e-12 {
				t.Errorf("t=%d: mean %v, want %v", tt, mean, want)
			}
			if want := math.Sqrt(1 - ab); math.Abs(std-want) > 0.01*want+1e-9 {
				t.Errorf("t=%d: std %v, want %v", tt, std, want)
			}
		}
	})
}

func TestDDPMPosteriorClosedForm(t *testing.T) {
	s := ref(t)
	on(t, func() {
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
	})
}

func TestDDIMEtaZeroIsTheODEStep(t *testing.T) {
	s, _ := Linear(50, 1e-4, 0.2)
	on(t, func() {
		// A fixed "network": ε̂ = 0.3 x_t + 0.1.
		pred := func(x *torch.Tensor, _ int) *torch.Tensor { return x.MulScalar(0.3).AddScalar(0.1) }
		start := []float64{1.5, -0.2, 0.7}
		noise := func(step int) *torch.Tensor {
			if step != 0 {
				t.Fatal("eta 0 drew noise")
			}
			return torch.FromSlice(start, []int64{3, 1, 1, 1}, torch.Float64)
		}
		got, err := s.DDIM(pred, noise, s.T, 0)
		if err != nil {
			t.Fatal(err)
		}
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
		if _, err := s.DDIM(pred, noise, 0, 0); err == nil {
			t.Error("0 steps accepted")
		}
		if _, err := s.DDIM(pred, noise, 10, 2); err == nil {
			t.Error("eta 2 accepted")
		}
		ts, _ := s.DDIMTimesteps(5)
		if ts[0] != 41 || ts[4] != 1 {
			t.Errorf("timesteps %v", ts)
		}
	})
}

func TestGuidanceCombinesBothPasses(t *testing.T) {
	s := ref(t)
	on(t, func() {
		// A "network" whose output is 1 + 2·keep: conditional 3, unconditional 1.
		var batches []int64
		net := func(x, ts, y, keep *torch.Tensor) *torch.Tensor {
			batches = append(batches, x.Size(0))
			k := torch.OnesLike(x)
			if keep != nil {
				k = keep.To(x.DType()).View(-1, 1, 1, 1).Expand(x.Shape()...)
			}
			return k.MulScalar(2).AddScalar(1)
		}
		x := torch.Zeros([]int64{4, 1, 2, 2})
		y := torch.FromSlice([]int64{0, 1, 2, 3}, nil)
		got := s.Guided(net, y, 3, false)(x, 10)
		if v := got.Mean().Item(); math.Abs(v-(1+3*(3-1))) > 1e-6 {
			t.Errorf("guided eps %v, want 7", v)
		}
		if len(batches) != 1 || batches[0] != 8 {
			t.Errorf("forward batches %v: want one of 8 (both passes batched)", batches)
		}
		s.Guided(net, y, 1, false)(x, 10)
		if batches[1] != 4 {
			t.Error("gamma 1 should take one conditional pass")
		}
	})
}

func TestImageNoiseIsPerImage(t *testing.T) {
	on(t, func() {
		a := ImageNoise(5, []int{0, 1, 2, 3}, []int64{1, 2, 2}, torch.CPU)(7)
		b := ImageNoise(5, []int{3, 9}, []int64{1, 2, 2}, torch.CPU)(7)
		if !a.Index(torch.At(3)).AllClose(b.Index(torch.At(0)), 0, 0) {
			t.Error("image 3's noise depends on its batch")
		}
		c := ImageNoise(5, []int{3}, []int64{1, 2, 2}, torch.CPU)(8)
		if c.Index(torch.At(0)).AllClose(b.Index(torch.At(0)), 0, 0) {
			t.Error("steps share noise")
		}
	})
}
